//! The commands of the documentation's code blocks (README.md and docs/), run exactly
//! as written (with the environment pointing them at this test's Kafka and Redis). The
//! README's first block, its two scripts, is run by `.ci/run`; the Python package's
//! commands by `scripts/python.sh`, which `scripts/test.sh` runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cache_layer_testkit::kafka::TestKafka;
use cache_layer_testkit::process::DaemonProcess;
use cache_layer_testkit::{connect, sibling_binary, wait_until, window_json, RedisServer};
use redis::Commands;

const DEADLINE: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and every document under docs/, by path.
fn documents() -> Vec<(PathBuf, String)> {
    let mut paths = vec![workspace().join("README.md")];
    for entry in std::fs::read_dir(workspace().join("docs")).unwrap() {
        paths.push(entry.unwrap().path());
    }
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect()
}

/// The command lines of the documentation's `sh` code blocks, comments removed.
fn documented_commands() -> Vec<String> {
    documents()
        .iter()
        .flat_map(|(_, text)| text.split("```sh\n").skip(1))
        .skip(1)
        .flat_map(|block| block.split("```").next().unwrap_or_default().lines())
        .map(|line| {
            line.split(" #")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .filter(|line| !line.is_empty())
        .collect()
}

/// Splits a README command line into its program and arguments.
fn words(command: &str) -> Vec<&str> {
    command.split_whitespace().collect()
}

#[test]
fn every_command_in_the_documentation_is_run_by_this_file_or_by_ci() {
    let here = include_str!("readme.rs");
    let ci = std::fs::read_to_string(workspace().join(".ci/run")).unwrap();
    let test = std::fs::read_to_string(workspace().join("scripts/test.sh")).unwrap();
    let python = std::fs::read_to_string(workspace().join("scripts/python.sh")).unwrap();
    for command in documented_commands() {
        let program = words(&command)[0];
        let covered = match program {
            "scripts/demo.sh" | "scripts/test.sh" => ci.contains(program),
            "scripts/python.sh" => test.contains(program),
            // The Python package's commands, as scripts/python.sh runs them.
            _ if python.contains(&command) => true,
            _ => here.contains(&format!("{command:?}")),
        };
        assert!(
            covered,
            "the documentation shows `{command}`, which nothing runs"
        );
    }
}

#[test]
fn the_readme_is_a_short_front_door_whose_links_lead_somewhere() {
    let (_, readme) = &documents()[0];
    let lines = readme.lines().count();
    assert!(
        lines <= 200,
        "README.md has {lines} lines; the rest belongs in docs/"
    );
    for (path, text) in documents() {
        let dir = path.parent().unwrap();
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or_default();
            let target = target.split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") {
                continue;
            }
            assert!(
                dir.join(target).exists(),
                "{} links to {target}, which does not exist",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_command_starts_the_daemon_on_the_shipped_configuration() {
    let command = "cache-layer run --config config/cache-layer.toml";
    assert!(documented_commands().contains(&command.to_owned()));
    let kafka = TestKafka::start(1).await;
    let redis = RedisServer::start().await.unwrap();
    // The test's own topics and group on the shared broker, through the environment.
    let mut env = kafka.daemon_env();
    env.push(("REDIS_HOST".to_owned(), "127.0.0.1".to_owned()));
    env.push(("REDIS_PORT".to_owned(), redis.port().to_string()));
    let args = &words(command)[1..];
    let daemon =
        DaemonProcess::spawn_with(&sibling_binary("cache-layer"), args, &workspace(), env).unwrap();
    kafka
        .produce(&kafka.windows, &[("readme", window_json("readme", 1, 0))])
        .await;
    wait_until(DEADLINE, "the message in Redis", || async {
        connect(&redis)
            .hexists("windows:window_2024_01_01_12_00", "readme")
            .unwrap()
    })
    .await;
    assert!(daemon.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_tools_generate_a_stream_and_produce_it() {
    let generate = "cache-layer-dev generate --out generated --messages 100000 --malformed 0.001";
    let produce = "cache-layer produce --topic trend-alerts --file generated/trend-alerts.jsonl";
    let commands = documented_commands();
    assert!(commands.contains(&generate.to_owned()) && commands.contains(&produce.to_owned()));
    let dir = tempfile::tempdir().unwrap();
    // A broker of its own: the command names the shipped topic, which the broker creates.
    let kafka = TestKafka::own(1).await;

    let generated = Command::new(env!("CARGO_BIN_EXE_cache-layer-dev"))
        .args(&words(generate)[1..])
        .current_dir(dir.path())
        .env_remove("CACHE_LAYER_CONFIG")
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let lines = std::fs::read_to_string(dir.path().join("generated/trend-alerts.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(lines > 10_000, "about a fifth of 100,000: {lines}");

    let produced = Command::new(sibling_binary("cache-layer"))
        .args(&words(produce)[1..])
        .current_dir(dir.path())
        .env_remove("CACHE_LAYER_CONFIG")
        .env("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap())
        .output()
        .unwrap();
    assert!(produced.status.success(), "{produced:?}");
    assert_eq!(kafka.high_watermark("trend-alerts", 0).await, lines as i64);
}
