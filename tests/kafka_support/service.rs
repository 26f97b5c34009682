//! The service under test: its config file ([`ServiceConfig`]) and a
//! running `touchstream run` ([`Service`]: start, readiness, logs, HTTP,
//! `/metrics`, SIGTERM, kill -9). Parsing a scrape is `metrics.rs`'s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::basics::{free_port, BIN};
use super::metrics::metric_value;

/// Settings of one service config file.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub brokers: String,
    pub group: String,
    pub input_topics: Vec<String>,
    pub input_format: String,
    pub prefix: String,
    pub dlq: String,
    pub changelog: String,
    pub delivery: String,
    pub commit_interval: String,
    pub idle_timeout: String,
    pub registry: Option<String>,
    /// Extra TOML appended verbatim (e.g. a `[signals]` section).
    pub extra: String,
}

impl ServiceConfig {
    pub fn toml(&self) -> String {
        let topics: Vec<String> = self.input_topics.iter().map(|t| format!("{t:?}")).collect();
        let mut s = format!(
            r#"[kafka]
brokers = {brokers:?}
group_id = {group:?}
input_topics = [{topics}]
input_format = {format:?}
output_topic_prefix = {prefix:?}
dlq_topic = {dlq:?}
changelog_topic = {changelog:?}
delivery = {delivery:?}
commit_interval = {ci:?}

[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"

[time]
idle_timeout = {idle:?}
"#,
            brokers = self.brokers,
            group = self.group,
            topics = topics.join(", "),
            format = self.input_format,
            prefix = self.prefix,
            dlq = self.dlq,
            changelog = self.changelog,
            delivery = self.delivery,
            ci = self.commit_interval,
            idle = self.idle_timeout,
        );
        if let Some(url) = &self.registry {
            s.push_str(&format!("\n[schema_registry]\nurl = {url:?}\n"));
        }
        s.push('\n');
        s.push_str(&self.extra);
        s
    }
}

/// Environment without `TOUCHSTREAM_<SECTION>__<KEY>` overrides from the
/// caller (they would change the config under test).
pub(super) fn clean_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| !(k.starts_with("TOUCHSTREAM_") && k.contains("__")))
        .collect()
}

/// A running `touchstream run`.
pub struct Service {
    pub name: String,
    child: Child,
    pub http: SocketAddr,
    pub log: PathBuf,
    status: Option<ExitStatus>,
}

impl Service {
    /// Starts `touchstream run --config cfg` with its own HTTP port; the
    /// instance id (transactional id suffix) is `instance`.
    pub fn start(cfg: &Path, instance: &str, log: &Path) -> Service {
        Self::start_with_env(cfg, instance, log, &[])
    }

    /// Like [`Service::start`], with extra environment variables (e.g.
    /// `TOUCHSTREAM_KAFKA__CONSUMER__GROUP_INSTANCE_ID` for static membership).
    pub fn start_with_env(cfg: &Path, instance: &str, log: &Path, env: &[(&str, &str)]) -> Service {
        Self::spawn(cfg, Some(instance), log, env)
    }

    /// Like [`Service::start`], leaving the instance id to the product's
    /// default (host name and HTTP port), as a user who sets none would.
    pub fn start_default_id(cfg: &Path, log: &Path) -> Service {
        Self::spawn(cfg, None, log, &[])
    }

    fn spawn(cfg: &Path, instance: Option<&str>, log: &Path, env: &[(&str, &str)]) -> Service {
        let port = free_port();
        let http: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let logf = std::fs::File::create(log).expect("create service log");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(cfg)
            .arg("--log-format")
            .arg("text")
            .env_clear()
            .envs(clean_env())
            .env("TOUCHSTREAM_HTTP__LISTEN", http.to_string())
            .envs(instance.map(|i| ("TOUCHSTREAM_KAFKA__INSTANCE_ID", i)))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn touchstream run");
        Service {
            name: instance.unwrap_or("(default id)").to_string(),
            child,
            http,
            log: log.to_path_buf(),
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://{}{path}", self.http);
        match ureq::get(&url).timeout(Duration::from_secs(2)).call() {
            Ok(r) => {
                let code = r.status();
                Some((code, r.into_string().unwrap_or_default()))
            }
            Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap_or_default())),
            Err(_) => None,
        }
    }

    /// Waits until `/readyz` answers 200; panics (with the log) if the
    /// process exits or the timeout passes.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                panic!(
                    "service {} exited ({s}) before it was ready:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            if matches!(self.get("/readyz"), Some((200, _))) {
                return;
            }
            assert!(
                Instant::now() < end,
                "service {} not ready after {timeout:?}:\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Some(s) = self.exited() {
                panic!(
                    "service {} exited ({s}) before logging {needle:?}:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            assert!(
                Instant::now() < end,
                "service {} did not log {needle:?} within {timeout:?}:\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// HTTP status of a path (None: no answer).
    pub fn status(&self, path: &str) -> Option<u16> {
        self.get(path).map(|(code, _)| code)
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        match self.get("/metrics") {
            Some((200, body)) => body,
            other => panic!("GET /metrics of {}: {other:?}", self.name),
        }
    }

    /// Value of one sample line of `/metrics` (`name{labels}`), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("wait after kill"));
        }
    }

    /// SIGTERM; waits up to `timeout` for the exit and returns its status
    /// and how long it took (panics on timeout).
    pub fn sigterm(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM {} failed", self.pid());
        self.wait_exit(timeout)
            .map(|s| (s, started.elapsed()))
            .unwrap_or_else(|| {
                let tail = self.log_tail(40);
                self.kill9();
                panic!(
                    "service {} did not exit within {timeout:?} of SIGTERM:\n{tail}",
                    self.name
                )
            })
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of service {} ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.log_tail(30)
            );
        }
    }
}
