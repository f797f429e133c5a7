//! The deployment files, checked without a Docker engine: promtool on the Prometheus
//! config and rules (and the rules' unit tests), the dashboard's and the alerts' metric
//! names against the ones the daemon exports, the compose file's services and files, and
//! the Dockerfile's essentials.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{metric_names_in, root};

fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs ({e}); scripts/test.sh installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    text
}

#[test]
fn promtool_accepts_the_prometheus_config_and_rules() {
    let dir = root().join("deploy/prometheus");
    run("promtool", &["check", "config", "prometheus.yml"], &dir);
    let rules = run("promtool", &["check", "rules", "alerts.yml"], &dir);
    assert!(rules.contains("11 rules found"), "{rules}");
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    run(
        "promtool",
        &["test", "rules", "alerts_test.yml"],
        &root().join("deploy/prometheus"),
    );
}

#[test]
fn the_dashboard_and_alerts_name_only_exported_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dashboards/cache-layer.json"))
            .unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<_> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for wanted in [
        "throughput",
        "batch size",
        "pipeline",
        "end-to-end",
        "lag",
        "reason",
        "keys per category",
        "memory",
        "hit ratio",
        "sweep",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted}: {titles:?}"
        );
    }
    // A datasource and an instance chosen on the dashboard, not a fixed uid.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name).cloned();
    assert_eq!(variable("datasource").unwrap()["type"], "datasource");
    assert!(variable("instance").is_some());
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains(r#"instance=~"$instance""#), "{expr}");
        }
    }
    // Every instance reports the same Redis: a sum would count its keys once per instance.
    let keys = panels
        .iter()
        .find(|p| p["title"] == "Keys per category")
        .unwrap();
    assert!(keys["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .starts_with("max"));
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned())
        })
        .collect();
    let alerts = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    let known: BTreeSet<&str> = cache_layer::metrics::ALL.iter().map(|m| m.name).collect();
    for name in exprs
        .iter()
        .flat_map(|e| metric_names_in(e))
        .chain(metric_names_in(&alerts))
    {
        assert!(
            known.contains(name.as_str()),
            "{name} is not a metric of cache-layer"
        );
    }
}

#[test]
fn every_metric_is_documented_and_the_documents_name_only_real_ones() {
    let operations = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let known: BTreeSet<&str> = cache_layer::metrics::ALL.iter().map(|m| m.name).collect();
    for name in &known {
        assert!(
            operations.contains(&format!("`{name}`")),
            "docs/operations.md does not document {name}"
        );
    }
    let mut documents = vec![root().join("README.md")];
    documents.extend(
        std::fs::read_dir(root().join("docs"))
            .unwrap()
            .map(|entry| entry.unwrap().path()),
    );
    for path in documents {
        let text = std::fs::read_to_string(&path).unwrap();
        // The prefix alone, where the conventions are told, names no metric.
        for name in metric_names_in(&text)
            .into_iter()
            .filter(|n| n != "cache_layer_")
        {
            assert!(
                known.contains(name.as_str()),
                "{} names {name}, which is not a metric of cache-layer",
                path.display()
            );
        }
    }
}

/// The compose file, as JSON, through PyYAML.
fn compose() -> serde_json::Value {
    let script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    let json = run("python3", &["-c", script, "docker-compose.yml"], &root());
    serde_json::from_str(&json).unwrap()
}

#[test]
fn the_compose_file_has_the_stack_and_its_files_exist() {
    if Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        run("docker", &["compose", "config", "--quiet"], &root());
    }
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    for name in [
        "redis",
        "kafka",
        "kafka-init",
        "cache-layer",
        "prometheus",
        "grafana",
        "producer",
    ] {
        assert!(services.contains_key(name), "no {name} service");
    }
    assert_eq!(
        services["kafka"]["image"]
            .as_str()
            .map(|i| i.starts_with("apache/kafka")),
        Some(true)
    );
    assert_eq!(services["producer"]["profiles"][0], "producer");
    // The Sentinel variant: a replica of the Redis, three sentinels watching it, and a
    // daemon configured to find the master through them.
    for name in ["redis-replica", "redis-sentinel", "cache-layer-sentinel"] {
        assert_eq!(services[name]["profiles"][0], "sentinel", "{name}");
    }
    let replica = services["redis-replica"]["command"].as_array().unwrap();
    assert!(replica
        .windows(3)
        .any(|w| w[0] == "--replicaof" && w[1] == "redis" && w[2] == "6379"));
    assert_eq!(services["redis-sentinel"]["deploy"]["replicas"], 3);
    let sentinel = services["redis-sentinel"]["command"][0].as_str().unwrap();
    assert!(
        sentinel.contains("sentinel monitor cache redis 6379 2"),
        "{sentinel}"
    );
    let env = &services["cache-layer-sentinel"]["environment"];
    assert_eq!(env["CACHE_LAYER__REDIS__SENTINEL_MASTER"], "cache");
    assert_eq!(
        env["CACHE_LAYER__REDIS__SENTINEL_NODES"],
        r#"["redis://redis-sentinel:26379"]"#
    );
    let depends = &services["cache-layer"]["depends_on"];
    assert_eq!(depends["redis"]["condition"], "service_healthy");
    assert_eq!(
        depends["kafka-init"]["condition"],
        "service_completed_successfully"
    );
    let init = services["kafka-init"]["command"][0].as_str().unwrap();
    let created = [
        "trend-alerts",
        "user-metrics",
        "keyword-windows",
        "cache-layer-dead-letters",
    ];
    for topic in created {
        assert!(init.contains(topic), "kafka-init does not create {topic}");
    }
    let env = services["cache-layer"]["environment"].as_object().unwrap();
    assert_eq!(
        env["CACHE_LAYER__TOPICS__DEAD_LETTER"],
        "cache-layer-dead-letters"
    );
    // Every bind-mounted file or folder is in the repository.
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            let path: PathBuf = root().join(source);
            assert!(
                path.exists(),
                "{name} mounts {source}, which does not exist"
            );
        }
    }
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_unprivileged_with_a_healthcheck() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("FROM "))
        .collect();
    assert_eq!(
        stages.last().and_then(|s| s.split_whitespace().last()),
        Some("runtime"),
        "the runtime image is the last stage, so the default target: {stages:?}"
    );
    // Base images are pinned to exact versions; a stage builds on an earlier stage.
    let stage_names: Vec<&str> = stages
        .iter()
        .filter_map(|s| s.split(" AS ").nth(1))
        .collect();
    for image in stages.iter().map(|s| s.split_whitespace().next().unwrap()) {
        let pinned = image
            .split_once(':')
            .is_some_and(|(_, tag)| tag.split('-').next().unwrap().matches('.').count() >= 1);
        assert!(
            pinned || stage_names.contains(&image),
            "FROM {image} is not pinned to an exact version"
        );
    }
    let runtime = &dockerfile[dockerfile.find("FROM base AS runtime").unwrap()..];
    assert!(
        !runtime.contains("cache-layer-dev"),
        "the runtime image carries the daemon alone"
    );
    assert!(
        dockerfile.contains("COPY Cargo.toml Cargo.lock ./"),
        "dependencies cached apart from sources"
    );
    assert!(dockerfile.contains("USER cache-layer"));
    assert!(dockerfile.contains("/etc/cache-layer/cache-layer.toml"));
    assert!(dockerfile.contains("EXPOSE 9464 9465"));
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("/healthz"));
    let config = cache_layer::Config::load(&root().join("config/cache-layer.toml"), true).unwrap();
    assert!(
        config.http.listen.ends_with(":9464") && config.http.api_listen.ends_with(":9465"),
        "EXPOSE matches http.listen and http.api_listen"
    );
}

/// The documents of a YAML file under deploy/kubernetes, as JSON, through PyYAML.
fn kubernetes(file: &str) -> Vec<serde_json::Value> {
    let script =
        "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let dir = root().join("deploy/kubernetes");
    serde_json::from_str(&run("python3", &["-c", script, file], &dir)).unwrap()
}

#[test]
fn the_kubernetes_manifests_pass_the_schemas_and_keep_the_sidecar_promises() {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    // The PodMonitor is a custom resource of the Prometheus Operator: no schema here.
    for file in files.iter().filter(|f| *f != "podmonitor.yaml") {
        let out = run("kubernetes-validate", &["--strict", file], &dir);
        assert!(out.contains("passed"), "{file}: {out}");
    }

    let configmap = &kubernetes("configmap.yaml")[0];
    let toml = configmap["data"]["cache-layer.toml"].as_str().unwrap();
    let config =
        cache_layer::Config::from_toml(toml).expect("the ConfigMap's configuration is valid");
    for (file, kind) in [
        ("sidecar.yaml", "sidecar"),
        ("standalone.yaml", "standalone"),
    ] {
        let pod = &kubernetes(file)[0]["spec"]["template"]["spec"];
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace * 1000 > config.kafka.shutdown_timeout.as_millis() as u64,
            "{kind}"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let daemon = if kind == "sidecar" {
            let sidecar = &pod["initContainers"][0];
            assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
            sidecar.clone()
        } else {
            pod["containers"][0].clone()
        };
        let security = &daemon["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{kind}");
        assert_eq!(security["runAsNonRoot"], true, "{kind}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{kind}");
        assert_eq!(security["capabilities"]["drop"][0], "ALL", "{kind}");
        assert_eq!(daemon["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(daemon["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(daemon["startupProbe"]["httpGet"]["path"], "/healthz");
        assert!(
            daemon["resources"]["limits"]["memory"].is_string(),
            "{kind}"
        );
        assert_eq!(
            daemon["envFrom"][0]["secretRef"]["name"],
            "cache-layer-secrets"
        );
    }
    let secret = &kubernetes("secret.yaml")[0];
    for name in [
        "REDIS_PASSWORD",
        "CACHE_LAYER__HTTP__ADMIN_TOKEN",
        "CACHE_LAYER__KAFKA__PROPERTIES__SASL_PASSWORD",
    ] {
        assert!(secret["stringData"][name].is_string(), "{name}");
    }
    assert_eq!(
        kubernetes("standalone.yaml")[1]["kind"],
        "PodDisruptionBudget"
    );
    assert_eq!(kubernetes("podmonitor.yaml")[0]["kind"], "PodMonitor");
}
