//! The benchmark's smoke run: about 20,000 messages through the Apache Kafka broker it
//! starts, as a full run does. It checks that the benchmark works end to end and that
//! every message arrived (the benchmark itself refuses to report otherwise); no timing is
//! asserted. The daemon it measures is
//! the workspace's `cache-layer` binary, built beside this test by
//! `cargo nextest run --workspace`.

use std::process::Command;

use cache_layer_testkit::sibling_binary;

#[test]
fn the_benchmark_runs_end_to_end_and_every_message_arrives() {
    let out = tempfile::tempdir().unwrap();
    let results = out.path().join("results.json");
    let output = Command::new(env!("CARGO_BIN_EXE_cache-layer-bench"))
        .args([
            "--messages",
            "20000",
            "--partitions",
            "12",
            "--naive-messages",
            "1000",
        ])
        .args(["--rates", "2000", "--latency-secs", "2"])
        .args(["--http-readers", "200", "--http-slow-clients", "100"])
        .args(["--http-rate", "2000", "--http-settle-secs", "1"])
        .args(["--large-messages", "20"])
        .arg("--daemon")
        .arg(sibling_binary("cache-layer"))
        .arg("--out")
        .arg(&results)
        .output()
        .expect("the benchmark runs");
    assert!(
        output.status.success(),
        "the benchmark failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    assert_eq!(report["messages"], 20_000);
    for measure in [
        "kafka_ceiling_msgs_per_sec",
        "kafka_ceiling_cpu_us_per_msg",
        "redis_ceiling_msgs_per_sec",
        "redis_ceiling_cpu_secs_per_million",
        "daemon_msgs_per_sec",
        "naive_msgs_per_sec",
        "rebuild_msgs_per_sec",
    ] {
        assert!(
            report[measure].as_f64().is_some_and(|v| v > 0.0),
            "{measure}: {report}"
        );
    }
    // The same stream in transactions of 1,000: 20 commits, each leaving a marker in every
    // partition it wrote, all stepped over and committed past.
    let transactional = &report["transactional"];
    assert_eq!(transactional["transactions"], 20, "{transactional}");
    assert!(
        transactional["markers"].as_i64().is_some_and(|m| m >= 20),
        "{transactional}"
    );
    assert!(
        transactional["daemon"]["daemon_msgs_per_sec"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{transactional}"
    );
    // The daemon's own CPU beside the raw consumer's: a number, whatever its sign in a
    // run this small.
    assert!(report["daemon_added_cpu_us_per_msg"].is_f64(), "{report}");
    assert!(report["ratio_to_kafka_ceiling"].is_f64(), "{report}");
    // Messages of about 1 MiB, every one written.
    let large = &report["large"];
    assert_eq!(large["messages"], 20, "{large}");
    assert!(
        large["daemon_peak_rss_mib"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{large}"
    );
    assert!(report["daemon_peak_rss_mib"]
        .as_f64()
        .is_some_and(|v| v > 0.0));
    // Every probe is counted once both the daemon and the control beside it saw it.
    let latency = &report["latency"][0];
    assert!(
        latency["probes"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
    assert_eq!(latency["control"]["probes"], latency["probes"], "{report}");
    // Under the crowd, every reader got an answer (200 or shed with 503), every slow
    // client was closed by the daemon, and /healthz answered throughout.
    let http = &report["http"];
    let answered = http["answered_200"].as_u64().unwrap() + http["shed_503"].as_u64().unwrap();
    assert_eq!(answered, 200, "{http}");
    assert_eq!(http["slow_clients_closed"], 100, "{http}");
    assert_eq!(http["healthz_failed"], 0, "{http}");
    assert!(http["healthz_probes"].as_u64().is_some_and(|n| n > 0));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("| daemon / naive |"), "{table}");
    assert!(table.contains("slow clients"), "{table}");
}
