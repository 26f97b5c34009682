//! The operations artefacts in `k8s/` against the service itself.
//!
//! - `check_manifests_script_passes`: `scripts/check-manifests` (strict
//!   Kubernetes schema validation, `promtool check rules`, `promtool test
//!   rules`, the dashboard) passes, and its list of metric names agrees with
//!   this file's. Skipped loudly with `TOUCHSTREAM_SKIP_OPS_CHECKS=1` (it
//!   installs kubernetes-validate and promtool on first use).
//! - `k8s_config_loads_as_a_touchstream_config`: `k8s/touchstream.toml`, with
//!   the StatefulSet's `TOUCHSTREAM_*` overrides applied, is a valid service
//!   configuration (unknown keys are errors there), and so is its commented
//!   `exactly_once` alternative.
//! - `dockerfile_agrees_with_the_manifests`: user, port, entrypoint, config
//!   path.
//! - `live_scrape_has_every_dashboard_and_rule_metric`: `touchstream run`
//!   against the broker at `KAFKA_BOOTSTRAP` (`#[ignore]`d: `scripts/test`
//!   runs it with a broker), fed generated JSON touchpoints on a
//!   fresh topic; its `/metrics` scrape passes `promtool check metrics`, and
//!   every `touchstream_*` name used by `k8s/grafana-dashboard.json` and
//!   `k8s/prometheusrule.yaml` is in it.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use touchstream::config::{Config, Delivery};

const BIN: &str = env!("CARGO_BIN_EXE_touchstream");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The KPI scorecard metrics (issue 5); reported separately when missing.
const KPI_METRICS: &[&str] = &[
    "touchstream_touchpoints_total",
    "touchstream_orders_total",
    "touchstream_revenue_total",
    "touchstream_carts_started_total",
    "touchstream_carts_abandoned_total",
    "touchstream_carts_recovered_total",
    "touchstream_campaign_clicks_total",
    "touchstream_campaign_conversions_total",
    "touchstream_survey_score",
    "touchstream_support_resolution_seconds",
    "touchstream_channel_switches_total",
    "touchstream_customers_by_churn_level",
    "touchstream_customers_by_stage",
];

fn loud(test: &str, why: &str) {
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! {test}: SKIPPED: {why}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!();
}

fn skip_ops(test: &str) -> bool {
    if std::env::var("TOUCHSTREAM_SKIP_OPS_CHECKS").is_ok_and(|v| v == "1") {
        loud(
            test,
            "TOUCHSTREAM_SKIP_OPS_CHECKS=1 (manifest, rule and metric checks not run)",
        );
        return true;
    }
    false
}

fn repo(p: &str) -> PathBuf {
    Path::new(REPO).join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(repo(p)).unwrap_or_else(|e| panic!("read {p}: {e}"))
}

/// Every `touchstream_<name>` in `text` that is not part of a longer word
/// or of a recording rule name (`touchstream:...`). The same rule as
/// scripts/check-manifests.
fn scan_metric_names(text: &str, out: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut from = 0;
    while let Some(i) = text[from..].find("touchstream_") {
        let start = from + i;
        let mut end = start + "touchstream_".len();
        while end < bytes.len() && word(bytes[end]) {
            end += 1;
        }
        let preceded = start > 0 && (word(bytes[start - 1]) || bytes[start - 1] == b':');
        if !preceded && end > start + "touchstream_".len() {
            out.insert(text[start..end].to_string());
        }
        from = end;
    }
}

/// The metric names the dashboard and the alert/recording rules use.
fn used_metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let dash: serde_json::Value = serde_json::from_str(&read("k8s/grafana-dashboard.json"))
        .expect("k8s/grafana-dashboard.json is JSON");
    scan_metric_names(&dash.to_string(), &mut names);
    // The rules file: only its `spec` counts, which is everything after the
    // `spec:` line (comments above it may mention names in prose).
    let rules = read("k8s/prometheusrule.yaml");
    let spec = rules
        .split_once("\nspec:")
        .map(|(_, s)| s)
        .expect("prometheusrule.yaml has a spec");
    let spec: String = spec
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    scan_metric_names(&spec, &mut names);
    names
}

// ---------------------------------------------------------------------------
// Static checks

#[test]
fn check_manifests_script_passes() {
    if skip_ops("check_manifests_script_passes") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("metrics.txt");
    let out = Command::new(repo("scripts/check-manifests"))
        .arg(&list)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/check-manifests");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "scripts/check-manifests failed ({}):\n{stderr}",
        out.status
    );
    let listed: BTreeSet<String> = std::fs::read_to_string(&list)
        .expect("metric list written")
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        listed,
        used_metric_names(),
        "scripts/check-manifests and this test disagree on the metric names used"
    );
    assert!(
        listed.len() > 20,
        "suspiciously few metric names: {listed:?}"
    );
}

/// `TOUCHSTREAM_*` variables of the StatefulSet with a usable value: the
/// literal `value:` (with `$(POD_NAME)` expanded) or a placeholder for a
/// `valueFrom`.
fn statefulset_env() -> Vec<(String, String)> {
    let text = read("k8s/statefulset.yaml");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut vars = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l.strip_prefix("- name: ") else {
            continue;
        };
        let name = name.trim().trim_matches('"');
        if !name.starts_with("TOUCHSTREAM_") {
            continue;
        }
        let value = match lines.get(i + 1).and_then(|n| n.strip_prefix("value:")) {
            Some(v) => v
                .trim()
                .trim_matches('"')
                .replace("$(POD_NAME)", "touchstream-0"),
            None => "placeholder-from-secret".to_string(),
        };
        vars.push((name.to_string(), value));
    }
    vars
}

#[test]
fn k8s_config_loads_as_a_touchstream_config() {
    let text = read("k8s/touchstream.toml");
    let vars = statefulset_env();
    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    for must in [
        "TOUCHSTREAM_KAFKA__INSTANCE_ID",
        "TOUCHSTREAM_KAFKA__CLIENT__SASL_USERNAME",
        "TOUCHSTREAM_KAFKA__CLIENT__SASL_PASSWORD",
    ] {
        assert!(
            names.contains(&must),
            "statefulset.yaml sets {must}: {names:?}"
        );
    }
    let cfg = Config::from_parts("k8s/touchstream.toml", &text, &vars)
        .unwrap_or_else(|e| panic!("k8s/touchstream.toml with the StatefulSet's environment: {e}"));
    assert_eq!(cfg.kafka.delivery, Delivery::AtLeastOnce);
    assert_eq!(
        cfg.http.listen, "0.0.0.0:9464",
        "the port the probes, Services and NetworkPolicy use"
    );
    assert_eq!(cfg.kafka.instance_id.as_deref(), Some("touchstream-0"));
    assert_eq!(
        cfg.kafka.client.get("sasl.username").map(String::as_str),
        Some("placeholder-from-secret")
    );
    assert_eq!(
        cfg.kafka.client.get("sasl.password").map(String::as_str),
        Some("placeholder-from-secret")
    );
    assert_eq!(
        cfg.kafka.client.get("client.id").map(String::as_str),
        Some("touchstream-touchstream-0")
    );
    // Static membership for the group consumer only (not the producer).
    assert_eq!(
        cfg.kafka
            .consumer
            .get("group.instance.id")
            .map(String::as_str),
        Some("touchstream-0")
    );
    assert_eq!(cfg.kafka.client.get("group.instance.id"), None);
    // Every SPEC 6 key is written out (not only defaulted).
    for key in [
        "brokers",
        "group_id",
        "input_topics",
        "input_format",
        "output_topic_prefix",
        "dlq_topic",
        "changelog_topic",
        "delivery",
        "listen",
        "max_out_of_orderness",
        "allowed_lateness",
        "idle_timeout",
        "cart_timeout",
        "recovery_window",
        "conversion_window",
        "contact_cap",
        "min_delta",
        "state_ttl",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{key} ="))),
            "k8s/touchstream.toml does not set `{key}`"
        );
    }
    // The documented alternative works as written.
    let eos = text
        .replace("delivery = \"at_least_once\"", "# was at_least_once")
        .replace(
            "# delivery = \"exactly_once\"",
            "delivery = \"exactly_once\"",
        );
    let cfg = Config::from_parts("k8s/touchstream.toml (exactly_once)", &eos, &vars)
        .expect("exactly_once variant loads");
    assert_eq!(cfg.kafka.delivery, Delivery::ExactlyOnce);
}

#[test]
fn dockerfile_agrees_with_the_manifests() {
    let docker = read("Dockerfile");
    let sts = read("k8s/statefulset.yaml");
    for needle in [
        "FROM ${RUST_IMAGE} AS build",
        "ARG RUST_IMAGE=rust:1-bookworm",
        "ARG RUNTIME_IMAGE=debian:bookworm-slim",
        "cargo build --release --locked",
        "USER 10001:10001",
        "EXPOSE 9464",
        "ENTRYPOINT [\"/usr/local/bin/touchstream\"]",
        "CMD [\"run\", \"--config\", \"/etc/touchstream/touchstream.toml\"]",
    ] {
        assert!(docker.contains(needle), "Dockerfile lacks {needle:?}");
    }
    for needle in [
        "runAsUser: 10001",
        "containerPort: 9464",
        "mountPath: /etc/touchstream",
        "/etc/touchstream/touchstream.toml",
    ] {
        assert!(sts.contains(needle), "statefulset.yaml lacks {needle:?}");
    }
    // Everything the build reads is in the build context.
    let ignore = read(".dockerignore");
    for dir in [
        "src/",
        "schemas/",
        "examples/",
        "benches/",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        assert!(
            ignore.lines().any(|l| l.trim() == format!("!{dir}")),
            ".dockerignore does not admit {dir}"
        );
        assert!(
            docker.contains(&format!("COPY {}", dir.trim_end_matches('/')))
                || dir.starts_with("Cargo"),
            "Dockerfile does not copy {dir}"
        );
    }
}

// ---------------------------------------------------------------------------
// Live scrape

fn broker(test: &str) -> Option<String> {
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => Some(b.trim().to_string()),
        _ => panic!(
            "{test}: needs a Kafka broker: run scripts/test (it starts one), or set KAFKA_BOOTSTRAP"
        ),
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{:x}",
        std::process::id(),
        (nanos as u64) & 0xffff_ffff_ffff
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn client(b: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b).set("log_level", "3");
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn create_topic(b: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client(b).create().expect("admin client");
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let res = runtime()
        .block_on(admin.create_topics(
            [&t],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create_topics");
    for r in res {
        if let Err((n, code)) = r {
            panic!("create topic {n}: {code}");
        }
    }
}

fn delete_topics(b: &str, names: &[String]) {
    let Ok(admin) = client(b).create::<AdminClient<DefaultClientContext>>() else {
        return;
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let _ = runtime().block_on(admin.delete_topics(&refs, &AdminOptions::new()));
}

/// `touchstream run`, killed when dropped (also when the test panics).
struct Running {
    child: Child,
    log: PathBuf,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn get(&self, path: &str) -> Option<(u16, String)> {
        match ureq::get(&format!("{}{path}", self.base))
            .timeout(Duration::from_secs(3))
            .call()
        {
            Ok(r) => Some((r.status(), r.into_string().unwrap_or_default())),
            Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap_or_default())),
            Err(_) => None,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn check_alive(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "touchstream exited ({status}) while {what}:\n{}",
                self.log_tail()
            );
        }
    }

    /// Polls until `done(scrape)` holds; returns the last scrape.
    fn wait_metrics(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let end = Instant::now() + timeout;
        loop {
            self.check_alive(what);
            let text = self.get("/metrics").map(|(_, t)| t).unwrap_or_default();
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < end,
                "timed out {what}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Sum of the samples of series `name` whose line contains `label`.
fn sample_sum(scrape: &str, name: &str, label: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(['{', ' ']))
                && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Series names in an exposition, plus the family name of every histogram
/// and summary (whose series are `_bucket`, `_sum`, `_count`).
fn exposed_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in scrape.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                if kind == "histogram" || kind == "summary" {
                    names.insert(name.to_string());
                }
            }
        } else if !l.starts_with('#') && !l.trim().is_empty() {
            let end = l.find(['{', ' ']).unwrap_or(l.len());
            names.insert(l[..end].to_string());
        }
    }
    names
}

fn promtool() -> PathBuf {
    let find = || {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("promtool"))
                .find(|f| f.is_file())
        })
    };
    if let Some(p) = find() {
        return p;
    }
    let out = Command::new(repo("scripts/check-manifests"))
        .arg("--install-only")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/check-manifests --install-only");
    find().unwrap_or_else(|| {
        panic!(
            "promtool is not installed and scripts/check-manifests --install-only could not install it:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn live_scrape_has_every_dashboard_and_rule_metric() {
    const TEST: &str = "live_scrape_has_every_dashboard_and_rule_metric";
    if skip_ops(TEST) {
        return;
    }
    let Some(b) = broker(TEST) else { return };
    let promtool = promtool();
    let used = used_metric_names();

    // Input: generated omnichannel traffic as JSON, keyed by customer, on a
    // fresh 2-partition topic, plus two records that must be rejected.
    let id = unique("ops");
    let input = format!("{id}-touchpoints");
    create_topic(&b, &input, 2);
    let gen = Command::new(BIN)
        .args([
            "generate",
            "--seed",
            "11",
            "--customers",
            "60",
            "--days",
            "21",
        ])
        .output()
        .expect("run touchstream generate");
    assert!(
        gen.status.success(),
        "generate: {}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let lines: Vec<String> = String::from_utf8(gen.stdout)
        .expect("utf-8")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    assert!(
        lines.len() > 1000,
        "generator gave only {} lines",
        lines.len()
    );
    let producer: BaseProducer = client(&b).create().expect("producer");
    let mut sent = 0usize;
    let bad = [
        "this is not json".to_string(),
        r#"{"event_id":"x","channel":"web"}"#.to_string(),
    ];
    for line in lines.iter().chain(bad.iter()) {
        let key = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["customer_id"].as_str().map(str::to_string))
            .unwrap_or_else(|| "bad".to_string());
        let mut rec = BaseRecord::to(&input)
            .key(key.as_bytes())
            .payload(line.as_bytes());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
        sent += 1;
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("flush input");

    // The service.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg_path = dir.path().join("touchstream.toml");
    let cfg = format!(
        r#"[kafka]
brokers = "{b}"
group_id = "{id}-group"
input_topics = ["{input}"]
input_format = "json"
output_topic_prefix = "{id}.cx."
dlq_topic = "{id}.dlq"
changelog_topic = "{id}.changelog"
commit_interval = "500ms"

[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"

[http]
listen = "127.0.0.1:{port}"

[time]
idle_timeout = "1h"
"#
    );
    std::fs::write(&cfg_path, cfg).expect("write config");
    let log = dir.path().join("touchstream.log");
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .args(["--log-format", "text"])
        .env_clear()
        .envs(
            std::env::vars().filter(|(k, _)| !(k.starts_with("TOUCHSTREAM_") && k.contains("__"))),
        )
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn touchstream run");
    let mut svc = Running {
        child,
        log,
        base: format!("http://127.0.0.1:{port}"),
    };
    let topics: Vec<String> = {
        let mut t: Vec<String> = touchstream::model::DerivedType::ALL
            .iter()
            .map(|d| format!("{id}.cx.{}", d.as_str()))
            .collect();
        t.extend([
            input.clone(),
            format!("{id}.dlq"),
            format!("{id}.changelog"),
        ]);
        t
    };

    let end = Instant::now() + Duration::from_secs(90);
    loop {
        svc.check_alive("waiting for /readyz");
        if matches!(svc.get("/readyz"), Some((200, _))) {
            break;
        }
        assert!(
            Instant::now() < end,
            "not ready after 90 s:\n{}",
            svc.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let consumed_label = format!("topic=\"{input}\"");
    svc.wait_metrics("consuming the input", Duration::from_secs(120), |m| {
        sample_sum(m, "touchstream_records_consumed_total", &consumed_label) >= sent as f64
    });
    // Consumer lag comes from librdkafka statistics (every 5 s) and the
    // processing latency from the next checkpoint.
    let scrape = svc.wait_metrics(
        "waiting for consumer lag and a checkpoint",
        Duration::from_secs(30),
        |m| {
            m.contains("touchstream_consumer_lag_records{")
                && sample_sum(m, "touchstream_processing_latency_seconds_count", "") > 0.0
        },
    );
    let (status, _) = svc.get("/healthz").expect("/healthz answers");
    assert_eq!(status, 200, "/healthz");
    drop(svc); // killed: everything below works on the scrape
    delete_topics(&b, &topics);
    // Kept for a look after a failure.
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ops_manifests-scrape.txt");
    std::fs::write(&kept, &scrape).expect("keep the scrape");

    // promtool check metrics (stdin): exposition syntax and naming lint.
    let mut p = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("write scrape to promtool");
    let out = p.wait_with_output().expect("promtool output");
    let lint = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every metric the dashboard and the rules use is exposed.
    let exposed = exposed_names(&scrape);
    let missing: Vec<&String> = used.iter().filter(|n| !exposed.contains(*n)).collect();
    let (kpi, pipeline): (Vec<&String>, Vec<&String>) = missing.iter().partition(|n| {
        KPI_METRICS.iter().any(|k| {
            n.as_str() == *k
                || n.strip_prefix(k)
                    .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
        })
    });
    let mut problems = Vec::new();
    if !out.status.success() {
        problems.push(format!(
            "`promtool check metrics` failed on the live scrape:\n{lint}"
        ));
    } else if !lint.trim().is_empty() {
        eprintln!("promtool check metrics:\n{lint}");
    }
    if !pipeline.is_empty() {
        problems.push(format!(
            "PIPELINE metrics used by k8s/grafana-dashboard.json or k8s/prometheusrule.yaml but absent from a live scrape \
             (a labelled metric only appears once a label value is used: pre-initialise its label values in src/metrics.rs):\n  {}",
            pipeline.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  ")
        ));
    }
    if !kpi.is_empty() {
        problems.push(format!(
            "KPI SCORECARD metrics (issue 5) used by the dashboard or the rules but absent from a live scrape:\n  {}",
            kpi.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  ")
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n\n({} names used, {} exposed; the scrape, fed {sent} records, is in {})",
        problems.join("\n\n"),
        used.len(),
        exposed.len(),
        kept.display()
    );
}

#[test]
fn metric_name_scanner() {
    let mut n = BTreeSet::new();
    scan_metric_names(
        r#"sum(rate(touchstream_a_total[5m])) / touchstream:b:sum + xtouchstream_c + histogram_quantile(0.9, touchstream_d_bucket) touchstream_"#,
        &mut n,
    );
    assert_eq!(
        n.into_iter().collect::<Vec<_>>(),
        vec!["touchstream_a_total", "touchstream_d_bucket"]
    );
    let e = exposed_names(
        "# TYPE touchstream_h histogram\ntouchstream_h_bucket{le=\"1\"} 0\ntouchstream_g 1\n",
    );
    assert!(
        e.contains("touchstream_h")
            && e.contains("touchstream_h_bucket")
            && e.contains("touchstream_g")
    );
}
