//! Configuration loading: the file, the environment over it, and errors that name the key.
//! Each test runs in a figment `Jail`, which serialises environment changes.

// figment::Jail closures must return figment::Result, whose error is large by design.
#![allow(clippy::result_large_err)]

use std::path::Path;
use std::time::Duration;

use cache_layer::config::{AutoOffsetReset, Config, LogFormat};
use figment::Jail;
use secrecy::ExposeSecret;

fn load(jail: &Jail) -> Result<Config, cache_layer::config::ConfigError> {
    Config::load(&jail.directory().join("cache-layer.toml"), true)
}

#[test]
fn the_shipped_file_is_valid_and_holds_the_documented_defaults() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cache-layer.toml");
        let config = Config::load(&path, true).expect("shipped config loads");
        assert_eq!(config.topics.trends, "trend-alerts");
        assert_eq!(config.topics.user_metrics, "user-metrics");
        assert_eq!(config.topics.windows, "keyword-windows");
        assert_eq!(config.cache.default_ttl, Duration::from_secs(300));
        assert_eq!(config.cache.ttls().windows, Duration::from_secs(300));
        assert_eq!(config.kafka.auto_offset_reset, AutoOffsetReset::Earliest);
        assert_eq!(
            config.redis.connection_url().unwrap().as_str(),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(config.http.listen, "0.0.0.0:9464");
        Ok(())
    });
}

#[test]
fn the_file_sets_every_section() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "cache-layer.toml",
            r#"
            [kafka]
            bootstrap_servers = "k1:9092,k2:9092"
            group_id = "g"
            [kafka.properties]
            "security.protocol" = "SASL_SSL"
            [topics]
            dead_letter = "cache-layer-dlq"
            [redis]
            host = "cache.internal"
            port = 6380
            db = 3
            key_prefix = "bsky:"
            [cache]
            default_ttl = 60
            trends_ttl = 30
            [batch]
            max_messages = 10
            max_wait_ms = 5
            [log]
            format = "json"
            "#,
        )?;
        let config = load(jail).unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "k1:9092,k2:9092");
        assert_eq!(config.kafka.properties.0["security.protocol"], "SASL_SSL");
        assert_eq!(config.topics.dead_letter, "cache-layer-dlq");
        assert_eq!(
            config.redis.connection_url().unwrap().as_str(),
            "redis://cache.internal:6380/3"
        );
        assert_eq!(config.redis.key_prefix, "bsky:");
        assert_eq!(config.cache.ttls().trends, Duration::from_secs(30));
        assert_eq!(config.cache.ttls().users, Duration::from_secs(60));
        assert_eq!(
            (config.batch.max_messages, config.batch.max_wait),
            (10, Duration::from_millis(5))
        );
        assert_eq!(config.log.format, LogFormat::Json);
        Ok(())
    });
}

#[test]
fn the_old_services_variables_and_the_generic_form_override_the_file() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "cache-layer.toml",
            "[redis]\nhost = \"file-host\"\nport = 1\n[cache]\ndefault_ttl = 10\n",
        )?;
        jail.set_env("REDIS_HOST", "env-host");
        jail.set_env("REDIS_PORT", "6390");
        jail.set_env("REDIS_DB", "4");
        jail.set_env("REDIS_PASSWORD", "pa:ss");
        jail.set_env("CACHE_DEFAULT_TTL", "120");
        jail.set_env("KAFKA_BOOTSTRAP_SERVERS", "broker:9093");
        jail.set_env("CACHE_LAYER__BATCH__MAX_MESSAGES", "77");
        jail.set_env("CACHE_LAYER__REDIS__KEY_PREFIX", "p:");
        jail.set_env(
            "CACHE_LAYER__KAFKA__PROPERTIES__SASL_PASSWORD",
            "kafka-secret",
        );
        let config = load(jail).unwrap();
        let url = config.redis.connection_url().unwrap();
        assert_eq!(url.host_str(), Some("env-host"));
        assert_eq!(url.port(), Some(6390));
        assert_eq!(url.path(), "/4");
        assert_eq!(url.password(), Some("pa%3Ass"));
        assert_eq!(config.cache.default_ttl, Duration::from_secs(120));
        assert_eq!(config.kafka.bootstrap_servers, "broker:9093");
        assert_eq!(config.batch.max_messages, 77);
        assert_eq!(config.redis.key_prefix, "p:");
        assert_eq!(config.kafka.properties.0["sasl.password"], "kafka-secret");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("kafka-secret") && !debug.contains("pa:ss"),
            "{debug}"
        );
        Ok(())
    });
}

#[test]
fn the_group_instance_id_takes_the_host_name() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("cache-layer.toml", "[kafka]\ngroup_instance_id = \"x\"\n")?;
        jail.set_env("CACHE_LAYER__KAFKA__GROUP_INSTANCE_ID", "cache-${HOSTNAME}");
        let config = load(jail).expect("loads");
        let hostname = nix::unistd::gethostname().unwrap();
        let id = config.kafka.group_instance_id.expect("set");
        assert_eq!(id, format!("cache-{}", hostname.to_str().unwrap()));
        assert!(!id.contains('$'));
        Ok(())
    });
}

#[test]
fn sentinels_are_configured_through_the_environment_as_the_compose_file_does() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("cache-layer.toml", "")?;
        jail.set_env("REDIS_HOST", "ignored-with-sentinel");
        jail.set_env("CACHE_LAYER__REDIS__SENTINEL_MASTER", "cache");
        jail.set_env(
            "CACHE_LAYER__REDIS__SENTINEL_NODES",
            r#"["redis://s1:26379", "redis://s2:26379"]"#,
        );
        jail.set_env("CACHE_LAYER__REDIS__SENTINEL_PASSWORD", "sentinel-secret");
        let config = load(jail).unwrap();
        assert_eq!(config.redis.sentinel_master, "cache");
        assert_eq!(
            config.redis.sentinel_nodes,
            ["redis://s1:26379", "redis://s2:26379"]
        );
        assert_eq!(
            config.redis.endpoint(),
            "master cache of sentinels s1:26379,s2:26379/0"
        );
        assert!(!format!("{config:?}").contains("sentinel-secret"));
        Ok(())
    });
}

#[test]
fn the_environment_changes_the_parts_of_a_url_from_the_file() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "cache-layer.toml",
            "[redis]\nurl = \"rediss://user:pw@redis.example:6379/2\"\nhost = \"ignored\"\n",
        )?;
        let config = load(jail).unwrap();
        assert_eq!(
            config.redis.connection_url().unwrap().as_str(),
            "rediss://user:pw@redis.example:6379/2"
        );

        jail.set_env("REDIS_PORT", "6380");
        let config = load(jail).unwrap();
        assert_eq!(
            config.redis.connection_url().unwrap().as_str(),
            "rediss://user:pw@redis.example:6380/2"
        );

        jail.set_env("CACHE_LAYER__REDIS__URL", "redis://other:7000/0");
        let config = load(jail).unwrap();
        assert_eq!(
            config.redis.connection_url().unwrap().as_str(),
            "redis://other:6380/0"
        );
        assert!(!format!("{config:?}").contains("pw@"));
        Ok(())
    });
}

#[test]
fn an_unknown_key_is_an_error_that_names_it() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("cache-layer.toml", "[cache]\ndefault_tll = 30\n")?;
        let err = load(jail).unwrap_err().to_string();
        assert!(err.contains("default_tll"), "{err}");

        jail.create_file("cache-layer.toml", "[cahce]\ndefault_ttl = 30\n")?;
        let err = load(jail).unwrap_err().to_string();
        assert!(err.contains("cahce"), "{err}");

        jail.create_file("cache-layer.toml", "")?;
        jail.set_env("CACHE_LAYER__BATCH__MAX_MESAGES", "3");
        let err = load(jail).unwrap_err().to_string();
        assert!(err.contains("max_mesages"), "{err}");
        Ok(())
    });
}

#[test]
fn invalid_values_are_errors_that_name_the_key_and_the_rule() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        for (toml, key, rule) in [
            (
                "[cache]\ndefault_ttl = 0\n",
                "cache.default_ttl",
                "greater than 0",
            ),
            (
                "[cache]\nwindows_ttl = 0\n",
                "cache.windows_ttl",
                "greater than 0",
            ),
            ("[cache]\ndefault_ttl = -5\n", "default_ttl", "-5"),
            (
                "[kafka]\ngroup_instance_id = \"cache ${HOSTNAME}\"\n",
                "kafka.group_instance_id",
                "not ' '",
            ),
            (
                "[kafka]\ngroup_instance_id = \"cache-${POD_NAME}\"\n",
                "kafka.group_instance_id",
                "only ${HOSTNAME} is replaced",
            ),
            (
                "[kafka.properties]\n\"group.instance.id\" = \"a\"\n",
                "kafka.properties.group.instance.id",
                "use kafka.group_instance_id",
            ),
            (
                "[batch]\nmax_messages = 0\n",
                "batch.max_messages",
                "greater than 0",
            ),
            (
                "[batch]\nmax_message_bytes = 0\n",
                "batch.max_message_bytes",
                "greater than 0",
            ),
            (
                "[batch]\nmax_bytes = 1000\n",
                "batch.max_bytes",
                "below batch.max_message_bytes = 1048576",
            ),
            (
                "[http]\nrequest_timeout_ms = 0\n",
                "http.request_timeout_ms",
                "greater than 0",
            ),
            (
                "[http]\nmax_body_bytes = 0\n",
                "http.max_body_bytes",
                "greater than 0",
            ),
            ("[redis]\nurl = \"http://h:1\"\n", "redis.url", "redis://"),
            (
                "[redis]\nurl = \"not a url\"\n",
                "redis.url",
                "does not parse",
            ),
            ("[http]\nlisten = \"nowhere\"\n", "http.listen", "address"),
            (
                "[http]\napi_listen = \"0.0.0.0:9464\"\n",
                "http.api_listen",
                "own port",
            ),
            (
                "[http]\nheader_read_timeout_ms = 0\n",
                "http.header_read_timeout_ms",
                "greater than 0",
            ),
            (
                "[http]\nmax_connections = 0\n",
                "http.max_connections",
                "greater than 0",
            ),
            (
                "[http]\nmax_connections = 9000000\n",
                "http.max_connections",
                "at most",
            ),
            (
                "[http]\nmax_response_bytes = 0\n",
                "http.max_response_bytes",
                "greater than 0",
            ),
            (
                "[http]\ntrends_snapshot_ms = 0\n",
                "http.trends_snapshot_ms",
                "greater than 0",
            ),
            (
                "[topics]\ndead_letter = \"trend-alerts\"\n",
                "topics.dead_letter",
                "source",
            ),
            (
                "[kafka]\nauto_offset_reset = \"newest\"\n",
                "auto_offset_reset",
                "newest",
            ),
            ("[log]\nformat = \"xml\"\n", "format", "xml"),
            (
                "[redis]\nsentinel_master = \"m\"\nsentinel_nodes = [\"redis://127.0.0.1:26379\"]\ncluster = true\n",
                "redis.sentinel_master",
                "redis.cluster",
            ),
            (
                "[redis]\nsentinel_master = \"m\"\nsentinel_nodes = [\"redis://127.0.0.1:26379\"]\nurl = \"redis://h:1\"\n",
                "redis.sentinel_master",
                "redis.url",
            ),
            (
                "[redis]\nsentinel_master = \"m\"\n",
                "redis.sentinel_nodes",
                "at least one",
            ),
            (
                "[redis]\nsentinel_master = \"m\"\nsentinel_nodes = [\"127.0.0.1:26379\"]\n",
                "redis.sentinel_nodes",
                "redis://host:port",
            ),
            (
                "[redis]\nsentinel_nodes = [\"redis://127.0.0.1:26379\"]\n",
                "redis.sentinel_nodes",
                "redis.sentinel_master",
            ),
            (
                "[redis]\npause_above_memory_ratio = 1.5\n",
                "redis.pause_above_memory_ratio",
                "at most 1",
            ),
            (
                "[redis]\npause_above_memory_ratio = 0\n",
                "redis.pause_above_memory_ratio",
                "above 0",
            ),
        ] {
            jail.create_file("cache-layer.toml", toml)?;
            let err = load(jail).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains(rule),
                "{toml:?} gave: {err}"
            );
        }
        jail.create_file("cache-layer.toml", "")?;
        jail.set_env("CACHE_DEFAULT_TTL", "0");
        let err = load(jail).unwrap_err().to_string();
        assert!(err.contains("cache.default_ttl"), "{err}");
        Ok(())
    });
}

#[test]
fn a_missing_required_file_is_an_error_but_a_missing_default_is_not() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let missing = jail.directory().join("nope.toml");
        let err = Config::load(&missing, true).unwrap_err().to_string();
        assert!(err.contains("nope.toml"), "{err}");
        let config = Config::load(&missing, false).unwrap();
        assert_eq!(config.kafka.group_id, "cache-layer");
        assert_eq!(
            config
                .redis
                .password
                .as_ref()
                .map(|p| p.expose_secret().len()),
            None
        );
        Ok(())
    });
}

#[test]
fn every_key_of_the_shipped_file_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let shipped = std::fs::read_to_string(root.join("config/cache-layer.toml")).unwrap();
    let mut section = String::new();
    for line in shipped.lines() {
        // Commented-out keys (`# key = value`) are documented keys too.
        let line = line.trim().trim_start_matches("# ");
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, _)) = line.split_once(" = ") {
            if section == "kafka.properties" || key.contains(' ') || key.starts_with('"') {
                continue;
            }
            let full = format!("{section}.{key}");
            assert!(
                readme.contains(&full),
                "docs/configuration.md does not document {full}"
            );
        }
    }
}

#[test]
fn a_secret_is_a_string_whatever_it_looks_like_and_no_error_shows_it() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("cache-layer.toml", "[redis]\npassword = 12345678\n")?;
        let config = load(jail).expect("a numeric password in the file");
        let password = config.redis.password.as_ref().unwrap();
        assert_eq!(password.expose_secret(), "12345678");

        jail.create_file("cache-layer.toml", "")?;
        for (name, value) in [("REDIS_PASSWORD", "87654321"), ("REDIS_PASSWORD", "true")] {
            jail.set_env(name, value);
            let config = load(jail).expect("a password that looks like a number or a boolean");
            let password = config.redis.password.as_ref().unwrap();
            assert_eq!(password.expose_secret(), value);
        }
        jail.set_env("CACHE_LAYER__HTTP__ADMIN_TOKEN", "987654321");
        let config = load(jail).expect("a numeric admin token");
        assert_eq!(config.http.admin_token.expose_secret(), "987654321");

        // A secret of the wrong shape is an error that names the key, not the value.
        jail.clear_env();
        jail.create_file(
            "cache-layer.toml",
            "[redis]\npassword = { nested = \"s3cr3t-in-a-table\" }\n",
        )?;
        let err = load(jail).unwrap_err().to_string();
        assert!(err.contains("password"), "{err}");
        assert!(
            !err.contains("s3cr3t-in-a-table"),
            "the secret in the error: {err}"
        );
        Ok(())
    });
}
