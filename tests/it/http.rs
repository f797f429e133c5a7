//! The HTTP API against a real redis-server: health, readiness through an outage, every
//! read endpoint, bad parameters, and the admin endpoints' authorisation.

use std::time::Duration;

use cache_layer::config::Config;
use cache_layer_testkit::http::serve;
use cache_layer_testkit::{connect, user_metrics, wait_until, window_count, TestRedis};
use redis::Commands;
use reqwest::StatusCode;
use serde_json::Value;

const TTL: Duration = Duration::from_secs(300);

fn config(admin_token: &str) -> Config {
    Config::from_toml(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{admin_token}\"\n"
    ))
    .unwrap()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (StatusCode, Value) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// GETs `path`, which must answer 200, and returns its JSON body.
async fn get_ok(addr: std::net::SocketAddr, path: &str) -> Value {
    let (code, body) = get(addr, path).await;
    assert_eq!(code, StatusCode::OK, "{path}: {body}");
    body
}

/// The text of `field` in each element of a JSON array.
fn texts<'a>(array: &'a Value, field: &str) -> Vec<&'a str> {
    let elements = array.as_array().expect("an array");
    elements.iter().filter_map(|e| e[field].as_str()).collect()
}

async fn post(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().post(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn seeded() -> TestRedis {
    let redis = TestRedis::start().await;
    let alerts = [
        ("Rust", "2024-01-01T12:01:00Z", 1),
        ("Go", "2024-01-01T12:01:00Z", 2),
        ("K8s*", "2024-01-01T12:00:00Z", 1),
    ];
    redis.cache_trends(&alerts, TTL).await;
    let now = chrono::Utc::now().to_rfc3339();
    redis
        .cache
        .cache_user_metrics(&user_metrics(&["did:plc:a"], &now, 77), TTL)
        .await
        .unwrap();
    let counts = [
        window_count("rust", 9, "2024-01-01T12:00:00Z"),
        window_count("go", 4, "2024-01-01T12:00:00Z"),
    ];
    redis
        .cache
        .cache_windowed_data(&counts, "window_2024_01_01_12_00", TTL)
        .await
        .unwrap();
    redis
}

#[tokio::test]
async fn read_endpoints_return_what_is_in_redis() {
    let redis = seeded().await;
    let served = serve(redis.cache.clone(), config("")).await;
    let addr = served.api;

    assert_eq!(get_ok(served.operator, "/healthz").await["status"], "ok");

    let body = get_ok(addr, "/v1/trends?limit=2").await;
    assert_eq!(texts(&body, "keyword"), ["rust", "go"]);
    assert_eq!(body[0]["alert"]["rank"], 1);

    assert_eq!(get_ok(addr, "/v1/trends/RUST").await["keyword"], "Rust");
    assert_eq!(get_ok(addr, "/v1/trends/k8s%2A").await["keyword"], "K8s*");
    let (code, body) = get(addr, "/v1/trends/absent").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("absent"));

    let body = get_ok(addr, "/v1/users/metrics").await;
    assert_eq!(body["total_active_users"], 77);
    let body = get_ok(addr, "/v1/users/active?limit=10").await;
    let users = texts(&body, "user_id");
    assert_eq!(users.len(), 2, "{users:?}");

    let body = get_ok(addr, "/v1/windows").await;
    assert_eq!(body[0]["window_id"], "window_2024_01_01_12_00");
    let (code, body) = get(addr, "/v1/windows/window_2024_01_01_12_00").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["keywords"][0]["keyword"], "rust");
    assert_eq!(body["keywords"][0]["count"], 9);
    let (code, _) = get(addr, "/v1/windows/window_1999_01_01_00_00").await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let (code, body) = get(addr, "/v1/stats").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["trends_keys"], 3 + 2);
    assert_eq!(body["windows_keys"], 2);
}

#[tokio::test]
async fn bad_parameters_get_a_400_with_a_message() {
    let redis = seeded().await;
    let served = serve(redis.cache.clone(), config("")).await;
    let addr = served.api;
    for path in [
        "/v1/trends?limit=0",
        "/v1/trends?limit=-1",
        "/v1/trends?limit=abc",
        "/v1/trends?limit=1001",
        "/v1/users/active?limit=x",
        "/v1/windows?limit=99999999999999999999999",
        "/v1/windows/a*b",
        "/v1/windows/a%20b",
        "/v1/windows/index",
        "/v1/trends/a%0D%0Ab",
    ] {
        let (code, body) = get(addr, path).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn readiness_follows_redis_through_an_outage() {
    let mut redis = seeded().await;
    let served = serve(redis.cache.clone(), config("")).await;
    let (addr, status) = (served.api, served.status);
    let (code, body) = get(served.operator, "/readyz").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["redis"]["ok"], true);
    assert_eq!(body["checks"]["kafka"]["ok"], true);

    redis.server.stop();
    let (code, body) = get(served.operator, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["redis"]["ok"], false);
    let (code, _) = get(addr, "/v1/trends").await;
    assert_eq!(
        code,
        StatusCode::SERVICE_UNAVAILABLE,
        "a read during the outage is a 503"
    );
    assert_eq!(
        get(served.operator, "/healthz").await.0,
        StatusCode::OK,
        "alive all the same"
    );

    redis.server.restart().await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "readiness to come back",
        || async { get(served.operator, "/readyz").await.0 == StatusCode::OK },
    )
    .await;
    assert!(status.kafka_connected());
}

#[tokio::test]
async fn admin_endpoints_need_the_token_and_keep_to_the_namespaces() {
    let redis = seeded().await;
    let _: () = connect(&redis.server)
        .set("other-app:key", "theirs")
        .unwrap();
    let served = serve(redis.cache.clone(), config("s3cret-token")).await;
    let addr = served.api;

    for token in [
        None,
        Some("wrong"),
        Some("s3cret-token-but-longer"),
        Some(""),
    ] {
        let (code, _) = post(addr, "/v1/admin/sweep", token).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{token:?}");
        let (code, _) = post(addr, "/v1/admin/clear?pattern=trends:*", token).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    let (code, body) = post(addr, "/v1/admin/clear?pattern=*", Some("s3cret-token")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("outside the cache namespaces"),
        "{body}"
    );
    let (code, _) = post(addr, "/v1/admin/clear", Some("s3cret-token")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    let (code, body) = post(
        addr,
        "/v1/admin/clear?pattern=trends:keyword:*",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!((code, body["deleted"].as_u64()), (StatusCode::OK, Some(3)));
    let mut conn = connect(&redis.server);
    assert!(conn.exists::<_, bool>("other-app:key").unwrap());
    assert!(conn.exists::<_, bool>("trends:current").unwrap());

    // Every ranking member lost its details just now: the sweep removes them.
    let (code, body) = post(addr, "/v1/admin/sweep", Some("s3cret-token")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        (body["outcome"].as_str(), body["trends_removed"].as_u64()),
        (Some("swept"), Some(3))
    );
}

#[tokio::test]
async fn admin_endpoints_are_disabled_without_a_token() {
    let redis = seeded().await;
    let served = serve(redis.cache.clone(), config("")).await;
    let addr = served.api;
    for token in [None, Some(""), Some("anything")] {
        let (code, body) = post(addr, "/v1/admin/sweep", token).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{token:?}");
        assert!(body["error"].as_str().unwrap().contains("http.admin_token"));
        assert_eq!(
            post(addr, "/v1/admin/clear?pattern=trends:*", token)
                .await
                .0,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        connect(&redis.server)
            .zcard::<_, usize>("trends:current")
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn requests_are_bounded_in_size_and_time() {
    let redis = seeded().await;
    let mut config = config("s3cret-token");
    config.http.request_timeout = Duration::from_millis(300);
    config.http.max_body_bytes = 1_024;
    let served = serve(redis.cache.clone(), config).await;
    let addr = served.api;

    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/admin/sweep"))
        .bearer_auth("s3cret-token")
        .body(vec![b'x'; 100_000])
        .send()
        .await
        .unwrap();
    assert_json_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Redis is paused for two seconds: the request is cut at 300 ms with a 408, where it
    // would be answered 200 once the pause ends.
    pause_redis(&redis, 2_000).await;
    let (code, body) = get(addr, "/v1/stats").await;
    assert_eq!(code, StatusCode::REQUEST_TIMEOUT);
    assert!(body["error"].is_string(), "a JSON error: {body}");
}

#[tokio::test]
async fn glob_and_traversal_in_paths_are_data_or_refused() {
    let redis = seeded().await;
    let served = serve(redis.cache.clone(), config("")).await;
    let addr = served.api;
    // `*` is a keyword like any other: no pattern is ever built from it.
    assert_eq!(get(addr, "/v1/trends/*").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(addr, "/v1/trends/go%2A").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(addr, "/v1/windows/window_*").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(addr, "/v1/windows/a%2F..%2Fb").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(addr, "/v1/trends/x%0Ay").await.0,
        StatusCode::BAD_REQUEST
    );
    let long = "k".repeat(300);
    assert_eq!(
        get(addr, &format!("/v1/trends/{long}")).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn every_error_answer_is_the_documented_json() {
    let redis = seeded().await;
    let served = serve(redis.cache.clone(), config("")).await;
    let addr = served.api;
    // A path that is not UTF-8, an unknown route, a wrong method.
    for (path, expected) in [
        ("/v1/trends/%FF%FE", StatusCode::BAD_REQUEST),
        ("/v1/nothing-here", StatusCode::NOT_FOUND),
    ] {
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        assert_json_error(response, expected).await;
    }
    let client = reqwest::Client::new();
    let response = client.delete(format!("http://{addr}/v1/trends")).send();
    assert_json_error(response.await.unwrap(), StatusCode::METHOD_NOT_ALLOWED).await;
}

/// Pauses every client of Redis for `ms`: once this returns, the daemon's commands wait
/// out the pause.
async fn pause_redis(redis: &TestRedis, ms: u64) {
    let client = redis::Client::open(redis.server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("ALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

/// Asserts the status, and that the body is `{"error": "..."}` with a message.
async fn assert_json_error(response: reqwest::Response, status: StatusCode) {
    assert_eq!(response.status(), status, "{}", response.url());
    let body: Value = response.json().await.expect("a JSON error");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_readers_is_shed_with_503_and_health_stays_reachable() {
    let redis = seeded().await;
    let mut config = config("");
    config.http.max_concurrent_requests = 1;
    let served = serve(redis.cache.clone(), config).await;
    let addr = served.api;

    // Redis is paused, so whichever of three readers is let in holds the one slot until
    // the pause ends, and the other two are shed.
    pause_redis(&redis, 2_000).await;
    let readers = ["/v1/stats", "/v1/trends", "/v1/windows"]
        .map(|path| tokio::spawn(reqwest::get(format!("http://{addr}{path}"))));
    let shed = wait_until(Duration::from_secs(5), "two readers shed", || async {
        readers.iter().filter(|r| r.is_finished()).count() >= 2
    });
    shed.await;
    // The operator listener is apart from the API's and its limit.
    assert_eq!(get_ok(served.operator, "/healthz").await["status"], "ok");
    let metrics = reqwest::get(format!("http://{}/metrics", served.operator))
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);

    let mut codes = Vec::new();
    for reader in readers {
        let response = reader.await.unwrap().unwrap();
        codes.push(response.status());
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(response.headers()["retry-after"], "1");
            assert_json_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
        }
    }
    codes.sort();
    assert_eq!(
        codes,
        [
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE
        ]
    );
}
