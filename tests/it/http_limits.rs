//! What bounds the readers of the API: the shared `/v1/trends` snapshot, the cap on an
//! answer's size, the header-read timeout and the cap on connections, and the operator
//! listener apart from all of it.

use std::time::{Duration, Instant};

use cache_layer::config::Config;
use cache_layer_testkit::http::{get, serve};
use cache_layer_testkit::process::DaemonProcess;
use cache_layer_testkit::{wait_until, TestRedis};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TTL: Duration = Duration::from_secs(300);

async fn seeded() -> TestRedis {
    let redis = TestRedis::start().await;
    let alerts = [
        ("rust", "2024-01-01T12:01:00Z", 1),
        ("go", "2024-01-01T12:01:00Z", 2),
        ("zig", "2024-01-01T12:01:00Z", 3),
    ];
    redis.cache_trends(&alerts, TTL).await;
    redis
}

/// How many times Redis has run `command`, from `INFO commandstats`.
async fn calls(redis: &TestRedis, command: &str) -> u64 {
    let client = redis::Client::open(redis.server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_trend_readers_share_one_redis_read() {
    let redis = seeded().await;
    let mut config = Config::default();
    config.http.trends_snapshot = Duration::from_secs(3_600);
    config.http.max_concurrent_requests = 1_000;
    let served = serve(redis.cache.clone(), config).await;

    let before = calls(&redis, "zrange").await;
    let (code, whole) = get(served.api, "/v1/trends?limit=1000").await.unwrap();
    assert_eq!(code, 200, "{whole}");
    let one_read = calls(&redis, "zrange").await - before;
    assert!(one_read > 0, "the first reader reads Redis");

    // 200 readers, each with its own limit, within the snapshot's period: no Redis read,
    // and every answer is the prefix of the same ranking.
    let whole: serde_json::Value = serde_json::from_str(&whole).unwrap();
    let readers = (0..200).map(|i| {
        let limit = i % 4 + 1;
        tokio::spawn(async move {
            let (code, body) = get(served.api, &format!("/v1/trends?limit={limit}"))
                .await
                .unwrap();
            (limit, code, body)
        })
    });
    for reader in futures::future::join_all(readers).await {
        let (limit, code, body) = reader.unwrap();
        assert_eq!(code, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let expected = &whole.as_array().unwrap()[..limit.min(3)];
        assert_eq!(body.as_array().unwrap(), expected, "limit={limit}");
    }
    assert_eq!(calls(&redis, "zrange").await - before, one_read);
}

#[tokio::test]
async fn the_snapshot_follows_redis_within_its_period() {
    let redis = seeded().await;
    let mut config = Config::default();
    config.http.trends_snapshot = Duration::from_millis(100);
    let served = serve(redis.cache.clone(), config).await;
    let (_, body) = get(served.api, "/v1/trends?limit=10").await.unwrap();
    assert!(!body.contains("\"elixir\""), "{body}");

    redis
        .cache_trends(&[("elixir", "2024-01-01T12:02:00Z", 1)], TTL)
        .await;
    wait_until(Duration::from_secs(10), "the new trend", || async {
        let (_, body) = get(served.api, "/v1/trends?limit=10").await.unwrap();
        body.contains("\"elixir\"")
    })
    .await;
}

#[tokio::test]
async fn an_answer_over_max_response_bytes_is_refused_naming_the_key() {
    let redis = seeded().await;
    redis
        .cache
        .cache_windowed_data(
            &[
                cache_layer_testkit::window_count("rust", 9, "2024-01-01T12:00:00Z"),
                cache_layer_testkit::window_count("go", 4, "2024-01-01T12:00:00Z"),
            ],
            "window_2024_01_01_12_00",
            TTL,
        )
        .await
        .unwrap();
    let unbounded = serve(redis.cache.clone(), Config::default()).await;
    let (_, two) = get(unbounded.api, "/v1/trends?limit=2").await.unwrap();
    let window_path = "/v1/windows/window_2024_01_01_12_00";
    let (_, window) = get(unbounded.api, window_path).await.unwrap();

    // Exactly two trends fit: a third is refused rather than cut short.
    let mut config = Config::default();
    config.http.max_response_bytes = two.len();
    let capped = serve(redis.cache.clone(), config).await;
    assert_eq!(
        get(capped.api, "/v1/trends?limit=2").await.unwrap(),
        (200, two)
    );
    let (code, body) = get(capped.api, "/v1/trends?limit=3").await.unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("http.max_response_bytes"), "{body}");

    // Any other answer too.
    let mut config = Config::default();
    config.http.max_response_bytes = window.len() - 1;
    let capped = serve(redis.cache.clone(), config).await;
    let (code, body) = get(capped.api, window_path).await.unwrap();
    assert_eq!(code, 400, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(error["error"]
        .as_str()
        .unwrap()
        .contains("max_response_bytes"));
}

/// Opens a connection that sends part of a request head and no more.
async fn slow_client(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_and_cannot_take_more_than_max_connections() {
    let redis = seeded().await;
    let mut config = Config::default();
    config.http.header_read_timeout = Duration::from_millis(500);
    config.http.max_connections = 4;
    let served = serve(redis.cache.clone(), config).await;

    // Four slow clients take every slot; a fifth client waits for one.
    let slow = futures::future::join_all((0..4).map(|_| slow_client(served.api))).await;
    let fifth = tokio::spawn(async move {
        let answer = get(served.api, "/v1/stats").await;
        (answer, Instant::now())
    });
    // The operator's listener answers all the while.
    let (code, _) = get(served.operator, "/healthz").await.unwrap();
    assert_eq!(code, 200);

    // Each slow client is closed once its header-read timeout passes, with no answer.
    let mut closed_at = Vec::new();
    for mut stream in slow {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest));
        read.await.expect("the slow client is closed").ok();
        assert!(
            !String::from_utf8_lossy(&rest).contains("200 OK"),
            "{rest:?}"
        );
        closed_at.push(Instant::now());
    }
    // The fifth client was served, and only once a slot was free.
    let (answer, answered_at) = fifth.await.unwrap();
    assert_eq!(answer.unwrap().0, 200);
    let first_closed = closed_at.iter().min().unwrap();
    assert!(answered_at >= *first_closed);
}

#[tokio::test]
async fn the_daemon_raises_its_open_files_limit() {
    // Started by a shell that lowers the soft limit first (it may already equal the hard
    // one here), then becomes the daemon: the same process, as `exec` keeps the pid.
    let daemon = DaemonProcess::spawn_with(
        "/bin/sh".as_ref(),
        &[
            "-c",
            "ulimit -Sn 256 && exec \"$0\" run",
            env!("CARGO_BIN_EXE_cache-layer"),
        ],
        &std::env::temp_dir(),
        [
            ("CACHE_LAYER__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1"),
            ("CACHE_LAYER__REDIS__URL", "redis://127.0.0.1:1"),
        ],
    )
    .unwrap();
    wait_until(Duration::from_secs(30), "/healthz", || async {
        daemon
            .get("/healthz")
            .await
            .is_some_and(|(code, _)| code == 200)
    })
    .await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid().unwrap()));
    let line = limits
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(str::to_owned)
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files <soft> <hard> files"
    assert_ne!(fields[3], "256", "{line}");
    assert_eq!(fields[3], fields[4], "{line}");
}
