//! TLS + SASL against the local broker's SASL_SSL listener: PLAIN and
//! SCRAM-SHA-512 connect and become ready; wrong credentials give a clear
//! error and a live but not-ready instance, never the secret in the log.
//!
//! Needs `KAFKA_SASL_BOOTSTRAP` and `KAFKA_CA` (set by `scripts/test` when it
//! starts the local broker). Skipped otherwise, unless
//! `TOUCHSTREAM_REQUIRE_KAFKA=1`, which makes a missing broker a failure.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn sasl_broker() -> Option<(String, String)> {
    match (
        std::env::var("KAFKA_SASL_BOOTSTRAP"),
        std::env::var("KAFKA_CA"),
    ) {
        (Ok(b), Ok(ca)) => Some((b, ca)),
        _ => {
            assert!(
                std::env::var("TOUCHSTREAM_REQUIRE_KAFKA").as_deref() != Ok("1"),
                "KAFKA_SASL_BOOTSTRAP/KAFKA_CA not set but TOUCHSTREAM_REQUIRE_KAFKA=1"
            );
            eprintln!("SKIPPED: KAFKA_SASL_BOOTSTRAP / KAFKA_CA not set (run scripts/test)");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let resp = ureq::get(&format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(2))
        .call();
    match resp {
        Ok(r) => Some((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap_or_default())),
        Err(_) => None,
    }
}

fn start(
    dir: &std::path::Path,
    bootstrap: &str,
    ca: &str,
    mechanism: &str,
    user: &str,
    password: &str,
    port: u16,
) -> Child {
    let suffix = format!("{}-{}", std::process::id(), port);
    let topic = format!("sec-in-{suffix}");
    // Create the input topic over the plaintext listener when there is one,
    // else over SASL with the good credentials.
    let plain = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| bootstrap.to_string());
    let status = Command::new(env!("CARGO_BIN_EXE_touchstream"))
        .args([
            "generate",
            "--customers",
            "3",
            "--days",
            "1",
            "--topic",
            &topic,
            "--brokers",
            &plain,
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let cfg = format!(
        r#"
[kafka]
brokers = "{bootstrap}"
group_id = "sec-{suffix}"
input_topics = ["{topic}"]
input_format = "json"
output_topic_prefix = "sec-{suffix}.cx."
dlq_topic = "sec-{suffix}.dlq"
changelog_topic = "sec-{suffix}.changelog"
[kafka.client]
"security.protocol" = "SASL_SSL"
"sasl.mechanisms" = "{mechanism}"
"sasl.username" = "{user}"
"sasl.password" = "file:{dir}/password"
"ssl.ca.location" = "{ca}"
[http]
listen = "127.0.0.1:{port}"
[time]
idle_timeout = "1h"
"#,
        dir = dir.display()
    );
    std::fs::write(dir.join("password"), format!("{password}\n")).unwrap();
    let path = dir.join(format!("c{port}.toml"));
    std::fs::write(&path, cfg).unwrap();
    Command::new(env!("CARGO_BIN_EXE_touchstream"))
        .args([
            "run",
            "--config",
            path.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ready(port: u16, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if matches!(http_get(port, "/readyz"), Some((200, _))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

fn stop(mut child: Child) -> String {
    unsafe_free_sigterm(&child);
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    log
}

fn unsafe_free_sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn plain_and_scram_over_tls_become_ready() {
    let Some((bootstrap, ca)) = sasl_broker() else {
        return;
    };
    for (mechanism, user, password) in [
        ("PLAIN", "alice", "alice-secret"),
        ("SCRAM-SHA-512", "scram-user", "scram-secret"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = start(dir.path(), &bootstrap, &ca, mechanism, user, password, port);
        let ready = wait_ready(port, Duration::from_secs(60));
        let metrics = http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
        let log = stop(child);
        assert!(ready, "{mechanism}: not ready; log:\n{log}");
        assert!(
            metrics.contains("touchstream_ready 1"),
            "{mechanism}: {metrics}"
        );
        assert!(
            !log.contains(password),
            "{mechanism}: the secret leaked into the log"
        );
    }
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn wrong_credentials_are_a_clear_error_and_not_ready_without_crash_or_leak() {
    let Some((bootstrap, ca)) = sasl_broker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let secret = "definitely-Wrong-Secret-42";
    let mut child = start(
        dir.path(),
        &bootstrap,
        &ca,
        "SCRAM-SHA-512",
        "scram-user",
        secret,
        port,
    );
    std::thread::sleep(Duration::from_secs(15));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the instance must stay up (no crash loop)"
    );
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200), "alive");
    assert_eq!(
        http_get(port, "/readyz").map(|r| r.0),
        Some(503),
        "not ready"
    );
    let log = stop(child);
    assert!(
        log.contains("Authentication failed") || log.contains("Authentication"),
        "clear reason in the log:\n{log}"
    );
    assert!(log.contains("not ready"), "{log}");
    assert!(!log.contains(secret), "the secret leaked into the log");
}
