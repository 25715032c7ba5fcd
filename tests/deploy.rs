//! The deployment files are code too (issue 7): compose, Kubernetes
//! manifests, Prometheus rules, the Grafana dashboard and the Nix lock are
//! checked offline here, against the configuration keys and metric names
//! the binaries really have.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use jq_config::{ServerConfig, WorkerConfig};
use serde_yaml_ng::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn docs(rel: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(&read(rel))
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn s<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

/// The metric names of SPEC FR-040.
const FR_040: [&str; 11] = [
    "jq_job_queue_depth",
    "jq_job_processing_duration_seconds",
    "jq_job_total",
    "jq_worker_active_count",
    "jq_worker_job_concurrency",
    "jq_grpc_request_duration_seconds",
    "jq_scheduler_cycle_duration_seconds",
    "jq_scheduler_jobs_assigned_total",
    "jq_kafka_publish_errors_total",
    "jq_db_query_duration_seconds",
    "jq_redis_operation_duration_seconds",
];

/// Every metric the server exposes (FR-040 plus jq's own).
fn server_metric_names() -> BTreeSet<String> {
    let mut v: BTreeSet<String> = FR_040.iter().map(|s| s.to_string()).collect();
    v.extend(
        [
            "jq_outbox_backlog",
            "jq_outbox_lag_seconds",
            "jq_db_oldest_transaction_seconds",
            "jq_job_submit_to_start_seconds",
            "jq_redis_degraded",
            "jq_schedule_fires_total",
            "jq_schedule_lag_seconds",
        ]
        .map(String::from),
    );
    v
}

/// Load a config with `env` (and optionally a file) and fail on any
/// warning: an env var that is not a configuration key is a typo.
fn accepts<T: jq_config::Config>(what: &str, file: Option<&str>, env: Vec<(String, String)>) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    if let Some(text) = file {
        std::fs::write(tmp.path(), text).unwrap();
    }
    let loaded =
        jq_config::load::<T>(file.map(|_| tmp.path()), env).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(loaded.warnings.is_empty(), "{what}: {:?}", loaded.warnings);
}

fn env_of(service: &Value) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
                    };
                    (k.as_str().unwrap().to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn nfr_019_compose_brings_up_everything_with_health_checks_and_ordering() {
    let c = yaml("compose.yaml");
    let services: BTreeSet<&str> = c["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        BTreeSet::from([
            "postgres",
            "redis",
            "kafka",
            "jq-server",
            "jq-worker",
            "prometheus",
            "grafana"
        ])
    );
    let svc = |n: &str| &c["services"][n];
    for n in ["postgres", "redis", "kafka", "jq-server"] {
        assert!(
            svc(n)["healthcheck"]["test"].is_sequence(),
            "{n} has a health check"
        );
    }
    for dep in ["postgres", "redis", "kafka"] {
        assert_eq!(
            s(svc("jq-server"), &format!("depends_on.{dep}.condition")).as_str(),
            Some("service_healthy")
        );
    }
    assert_eq!(
        s(svc("jq-worker"), "depends_on.jq-server.condition").as_str(),
        Some("service_healthy")
    );
    assert_eq!(svc("postgres")["image"].as_str(), Some("postgres:15"));
    assert_eq!(svc("redis")["image"].as_str(), Some("redis:7"));
    assert!(
        svc("kafka")["environment"]["KAFKA_PROCESS_ROLES"]
            .as_str()
            .unwrap()
            .contains("controller"),
        "KRaft"
    );
    // The images come from the Dockerfile's stages.
    let dockerfile = read("Dockerfile");
    for (n, target) in [("jq-server", "server"), ("jq-worker", "worker")] {
        let t = svc(n)["build"]["target"].as_str().unwrap();
        assert_eq!(t, target);
        assert!(dockerfile.contains(&format!(" AS {t}\n")), "Dockerfile stage {t}");
    }
    assert!(dockerfile.contains("USER 65532"), "never root (FR-049)");
    // Every JQ_* variable is a real configuration key.
    accepts::<ServerConfig>("compose jq-server", None, env_of(svc("jq-server")));
    accepts::<WorkerConfig>("compose jq-worker", None, env_of(svc("jq-worker")));
    // Mounted files exist.
    for n in ["prometheus", "grafana"] {
        for v in svc(n)["volumes"].as_sequence().unwrap() {
            let src = v.as_str().unwrap().split(':').next().unwrap();
            assert!(root().join(src).exists(), "{n} mounts {src}");
        }
    }
}

#[test]
fn nfr_019_kubernetes_manifests_are_consistent() {
    let kust = yaml("deploy/k8s/kustomization.yaml");
    let mut all = vec![];
    for r in kust["resources"].as_sequence().unwrap() {
        all.extend(docs(&format!("deploy/k8s/{}", r.as_str().unwrap())));
    }
    let by_kind = |kind: &str| -> HashMap<String, &Value> {
        all.iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .map(|d| (d["metadata"]["name"].as_str().unwrap().to_string(), d))
            .collect()
    };
    let deployments = by_kind("Deployment");
    assert_eq!(deployments.len(), 2);
    let secret = docs("deploy/k8s/secret.example.yaml").remove(0);
    for (name, d) in &deployments {
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        for (k, v) in d["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
            assert_eq!(
                &labels[k.as_str().unwrap()],
                v,
                "{name}: selector matches its pods"
            );
        }
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{name} runs as non-root"
        );
        let c = &pod["containers"][0];
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz"),
            "{name}"
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz"),
            "{name}"
        );
        let env: Vec<(String, String)> = c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| {
                let key = s(e, "valueFrom.secretKeyRef.key");
                if let Some(k) = key.as_str() {
                    assert!(
                        !secret["stringData"][k].is_null(),
                        "{name}: secret key {k} is documented"
                    );
                }
                // Secret values are unknown here; a placeholder checks the name.
                (e["name"].as_str().unwrap().to_string(), "x".to_string())
            })
            .collect();
        if name == "jq-worker" {
            assert_eq!(c["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
            accepts::<WorkerConfig>("k8s worker env", None, env);
        } else {
            accepts::<ServerConfig>("k8s server env", None, env);
        }
    }
    // The ConfigMap's files are valid configurations.
    let cm = by_kind("ConfigMap")["jq-config"];
    accepts::<ServerConfig>("server.yaml", cm["data"]["server.yaml"].as_str(), vec![]);
    accepts::<WorkerConfig>("worker.yaml", cm["data"]["worker.yaml"].as_str(), vec![]);
    // Service, PDBs and HPA point at what exists.
    let svc = by_kind("Service")["jq-server"];
    let server_labels = &deployments["jq-server"]["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&server_labels[k.as_str().unwrap()], v);
    }
    for (name, pdb) in by_kind("PodDisruptionBudget") {
        let labels = &deployments[&name]["spec"]["template"]["metadata"]["labels"];
        for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
            assert_eq!(&labels[k.as_str().unwrap()], v, "PDB {name}");
        }
    }
    let hpa = by_kind("HorizontalPodAutoscaler")["jq-worker"];
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"].as_str(), Some("jq-worker"));
    assert_eq!(
        s(hpa, "spec.metrics.0.external.metric.name").as_str(),
        Some("jq_job_queue_depth")
    );
}

fn promtool() -> std::process::Command {
    std::process::Command::new("promtool")
}

#[test]
fn fr_040_alert_rules_pass_promtool_and_use_real_metrics() {
    let out = promtool()
        .args(["check", "rules"])
        .arg(root().join("deploy/prometheus/alerts.yml"))
        .output()
        .expect("promtool (Debian package prometheus) is needed to check the alert rules");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = promtool()
        .args(["check", "config"])
        .arg(root().join("deploy/prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = yaml("deploy/prometheus/alerts.yml");
    let known = server_metric_names();
    let mut names = BTreeSet::new();
    for r in rules["groups"][0]["rules"].as_sequence().unwrap() {
        names.insert(r["alert"].as_str().unwrap().to_string());
        let expr = r["expr"].as_str().unwrap();
        for word in expr.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if word.starts_with("jq_") {
                let base = word
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_count")
                    .trim_end_matches("_sum");
                assert!(
                    known.contains(word) || known.contains(base),
                    "alert {:?} uses unknown metric {word}",
                    r["alert"]
                );
            }
        }
    }
    for want in [
        "JqQueueDepthGrowing",
        "JqDeadLettersRising",
        "JqNoWorkers",
        "JqOutboxBacklog",
        "JqSchedulerCycleSlow",
        "JqScheduleBehind",
        "JqOutboxLagging",
        "JqLongTransaction",
    ] {
        assert!(names.contains(want), "{want}");
    }
}

#[test]
fn fr_040_grafana_dashboard_covers_every_metric() {
    let d: serde_json::Value = serde_json::from_str(&read("deploy/grafana/dashboards/jq.json")).unwrap();
    assert!(d["uid"].is_string() && d["title"].is_string() && d["schemaVersion"].as_u64().unwrap() >= 30);
    let ds_uid = yaml("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"][0]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let mut exprs = String::new();
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel ids are unique");
        assert!(p["title"].is_string() && p["type"].is_string() && p["gridPos"]["w"].is_u64());
        assert_eq!(
            p["datasource"]["uid"].as_str(),
            Some(ds_uid.as_str()),
            "{}",
            p["title"]
        );
        for t in p["targets"].as_array().unwrap() {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    for m in server_metric_names() {
        assert!(exprs.contains(&m), "the dashboard shows {m}");
    }
    // Provisioning loads the folder compose mounts the dashboards into.
    let prov = yaml("deploy/grafana/provisioning/dashboards/jq.yml");
    assert_eq!(
        prov["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );
}

#[test]
fn issue_7_flake_lock_is_version_7_with_every_input_pinned() {
    let lock: serde_json::Value = serde_json::from_str(&read("flake.lock")).unwrap();
    assert_eq!(lock["version"], 7);
    let nodes = lock["nodes"].as_object().unwrap();
    let inputs = lock["nodes"]["root"]["inputs"].as_object().unwrap();
    let names: BTreeSet<&str> = inputs.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "advisory-db",
            "crane",
            "flake-utils",
            "nixpkgs",
            "rust-overlay",
            "systems"
        ])
    );
    for n in &names {
        let l = &nodes[*n]["locked"];
        let rev = l["rev"].as_str().unwrap();
        assert!(
            rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()),
            "{n}: rev"
        );
        assert!(
            l["narHash"].as_str().unwrap().starts_with("sha256-"),
            "{n}: narHash"
        );
        assert_eq!(l["type"], "github");
    }
    assert_eq!(nodes["nixpkgs"]["original"]["ref"], "nixpkgs-unstable");
    assert_eq!(
        nodes["rust-overlay"]["inputs"]["nixpkgs"],
        serde_json::json!(["nixpkgs"])
    );
    assert_eq!(
        nodes["flake-utils"]["inputs"]["systems"],
        serde_json::json!(["systems"])
    );
    assert_eq!(nodes["advisory-db"]["flake"], false);
    // The published pins these were taken from, when this checkout has them.
    let pins = root().join("../shared/nix-pins.json");
    if let Ok(text) = std::fs::read_to_string(&pins) {
        let pins: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (name, p) in pins.as_object().unwrap() {
            assert_eq!(
                nodes[name]["locked"],
                p["locked"],
                "{name} matches {}",
                pins_path_note()
            );
            assert_eq!(nodes[name]["original"], p["original"], "{name}");
        }
    }
    // The flake inputs are the lock's (a cheap check without nix).
    let flake = read("flake.nix");
    for n in &names {
        assert!(
            flake.contains(&format!("{n}.url")) || flake.contains(&format!("{n} = {{")),
            "flake.nix declares {n}"
        );
    }
    // With nix-instantiate (Debian: nix-bin) every Nix file must parse.
    if let Ok(out) = std::process::Command::new("nix-instantiate")
        .arg("--version")
        .output()
        && out.status.success()
    {
        let mut files = vec![root().join("flake.nix")];
        for e in std::fs::read_dir(root().join("nix")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "nix") {
                files.push(p);
            }
        }
        for f in files {
            let out = std::process::Command::new("nix-instantiate")
                .arg("--parse")
                .arg(&f)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                f.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn pins_path_note() -> &'static str {
    "../shared/nix-pins.json"
}

/// Every leaf key of a configuration, dotted.
fn leaves(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let key = k.as_str().unwrap();
                let p = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(child, &p, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn fr_043_fr_044_readme_documents_every_configuration_key_and_its_variable() {
    let readme = read("README.md");
    let server = readme.split("### jq-worker configuration").next().unwrap();
    let worker = readme.split("### jq-worker configuration").nth(1).unwrap();
    for (what, text, value) in [
        (
            "jq-server",
            server,
            serde_yaml_ng::to_value(ServerConfig::default()).unwrap(),
        ),
        (
            "jq-worker",
            worker,
            serde_yaml_ng::to_value(WorkerConfig::default()).unwrap(),
        ),
    ] {
        let mut keys = vec![];
        leaves(&value, "", &mut keys);
        for k in keys {
            let row = format!("| `{k}` | `{}` |", jq_config::env_name(&k));
            assert!(text.contains(&row), "README's {what} table lacks {row}");
        }
    }
}

/// JQ-172: every build we ship links librdkafka with OpenSSL (TLS and SASL
/// SCRAM) and has the system's CA roots for rustls (ADR 0014).
#[test]
fn jq_172_every_build_we_ship_has_tls_to_the_backing_services() {
    let cargo = read("Cargo.toml");
    let line = |dep: &str| {
        cargo
            .lines()
            .find(|l| l.starts_with(&format!("{dep} = ")))
            .unwrap_or_else(|| panic!("{dep} in Cargo.toml"))
            .to_string()
    };
    assert!(line("rdkafka").contains("\"ssl\""), "{}", line("rdkafka"));
    assert!(
        line("sqlx").contains("\"tls-rustls-ring-native-roots\""),
        "{}",
        line("sqlx")
    );
    assert!(
        line("redis").contains("\"tokio-rustls-comp\""),
        "{}",
        line("redis")
    );
    let dockerfile = read("Dockerfile");
    let (build, runtime) = dockerfile.split_once("AS runtime").unwrap();
    assert!(
        build.contains("libssl-dev"),
        "the build stage has the OpenSSL headers"
    );
    assert!(
        runtime.contains("libssl3") && runtime.contains("ca-certificates"),
        "the runtime stage"
    );
    let nix = read("nix/packages.nix");
    let inputs = nix
        .lines()
        .find(|l| l.contains("buildInputs = with pkgs;"))
        .unwrap();
    assert!(inputs.contains("openssl"), "{inputs}");
    assert!(read("nix/images.nix").contains("cacert"));
    assert!(read(".ci/run").contains("libssl-dev"));
}

/// Every requirement id named in the code, tests and docs is defined in
/// `docs/requirements.md`, so a reader never needs a document outside the
/// repository to resolve one.
#[test]
fn every_requirement_id_in_the_repository_resolves_in_docs_requirements() {
    let defined = read("docs/requirements.md");
    let mut missing = BTreeSet::new();
    let mut seen = 0;
    let mut stack = vec![root()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if !name.starts_with('.') && !["target", "corpus", "artifacts"].contains(&name.as_str()) {
                    stack.push(p);
                }
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            for (i, _) in text.match_indices('-') {
                let pre = &text[..i];
                let kind = ["NFR", "FR", "JQ"].into_iter().find(|k| pre.ends_with(k));
                let digits = text[i + 1..].chars().take_while(char::is_ascii_digit).count();
                if let Some(kind) = kind
                    && digits == 3
                    && !pre[..pre.len() - kind.len()].ends_with(|c: char| c.is_ascii_alphanumeric())
                {
                    let id = format!("{kind}-{}", &text[i + 1..i + 4]);
                    seen += 1;
                    if !defined.contains(&format!("- {id} ")) {
                        missing.insert(format!("{id} ({})", p.strip_prefix(root()).unwrap().display()));
                    }
                }
            }
        }
    }
    assert!(seen > 200, "only {seen} ids found");
    assert!(
        missing.is_empty(),
        "ids not defined in docs/requirements.md: {missing:?}"
    );
}

/// docs/ARCHITECTURE.md is a map of the code: every file or folder it names
/// in backticks (`crates/…`, `tests/…`, `migrations/`…) exists, so a rename
/// that forgets the map fails here.
#[test]
fn architecture_map_names_only_paths_that_exist() {
    let doc = read("docs/ARCHITECTURE.md");
    let mut missing = vec![];
    let mut named = 0;
    for (k, chunk) in doc.split('`').enumerate() {
        // Odd chunks are inside backticks.
        if k % 2 == 0 || chunk.contains(' ') {
            continue;
        }
        let rooted = [
            "crates/",
            "tests/",
            "migrations/",
            "docs/",
            "nix/",
            "deploy/",
            "fuzz/",
            "benches/",
            "proto/",
        ];
        if !rooted.iter().any(|r| chunk.starts_with(r)) || chunk.contains('*') || chunk.contains('<') {
            continue;
        }
        named += 1;
        if !root().join(chunk).exists() {
            missing.push(chunk.to_string());
        }
    }
    assert!(named > 20, "the map names the code it maps ({named} paths)");
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}
