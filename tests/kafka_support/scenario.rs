//! One test's topics, group and scratch directory ([`Scenario`]): unique
//! names so tests share a broker in parallel, its configs and instances,
//! and the clean-up (or, after a failure, the logs kept).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use touchstream::model::DerivedType;

use super::basics::unique;
use super::broker::{create_topic, delete_topics};
use super::collect::Collector;
use super::service::{Service, ServiceConfig};

/// One test's names and scratch directory.
pub struct Scenario {
    pub b: String,
    pub id: String,
    pub input: String,
    pub group: String,
    pub prefix: String,
    pub dlq: String,
    pub changelog: String,
    pub dir: tempfile::TempDir,
    starts: AtomicU64,
    extra_topics: Mutex<Vec<String>>,
}

impl Scenario {
    pub fn new(b: &str, name: &str) -> Scenario {
        let id = unique(name);
        Scenario {
            b: b.to_string(),
            input: format!("{id}.touchpoints"),
            group: format!("{id}.group"),
            prefix: format!("{id}.cx."),
            dlq: format!("{id}.dlq"),
            changelog: format!("{id}.changelog"),
            dir: tempfile::Builder::new()
                .prefix(&format!("{name}-"))
                .tempdir()
                .expect("tempdir"),
            id,
            starts: AtomicU64::new(0),
            extra_topics: Mutex::new(Vec::new()),
        }
    }

    /// The per-type output topics.
    pub fn output_topics(&self) -> Vec<String> {
        DerivedType::ALL
            .iter()
            .map(|t| format!("{}{}", self.prefix, t.as_str()))
            .collect()
    }

    pub fn output_topic(&self, t: DerivedType) -> String {
        format!("{}{}", self.prefix, t.as_str())
    }

    /// A config with this scenario's names; JSON input, at-least-once,
    /// `idle_timeout = "1h"`.
    pub fn config(&self) -> ServiceConfig {
        ServiceConfig {
            brokers: self.b.clone(),
            group: self.group.clone(),
            input_topics: vec![self.input.clone()],
            input_format: "json".into(),
            prefix: self.prefix.clone(),
            dlq: self.dlq.clone(),
            changelog: self.changelog.clone(),
            delivery: "at_least_once".into(),
            commit_interval: "1s".into(),
            idle_timeout: "1h".into(),
            registry: None,
            extra: String::new(),
        }
    }

    /// Writes a config file; returns its path.
    pub fn write_config(&self, name: &str, cfg: &ServiceConfig) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, cfg.toml()).expect("write config");
        p
    }

    /// Creates the input topic, and the changelog the way the service would
    /// (compacted, same partition count), so that a first start does not
    /// hit the changelog-leader race that
    /// `kafka_state::first_start_creates_topics_and_becomes_ready` exposes.
    /// Output and dead-letter topics are still created by the service.
    pub fn create_input(&self, partitions: i32) {
        create_topic(&self.b, &self.input, partitions, &[]);
        create_topic(
            &self.b,
            &self.changelog,
            partitions,
            &[("cleanup.policy", "compact")],
        );
    }

    /// Creates only the input topic (the service creates the changelog).
    pub fn create_input_only(&self, partitions: i32) {
        create_topic(&self.b, &self.input, partitions, &[]);
    }

    /// Starts an instance; its log goes to the scratch directory.
    pub fn start(&self, cfg: &Path, instance: &str) -> Service {
        self.start_with_env(cfg, instance, &[])
    }

    /// Starts an instance with extra environment variables.
    pub fn start_with_env(&self, cfg: &Path, instance: &str, env: &[(&str, &str)]) -> Service {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.path().join(format!("{instance}-{n}.log"));
        Service::start_with_env(cfg, instance, &log, env)
    }

    /// Starts an instance with the default instance id; `name` names its log.
    pub fn start_default_id(&self, cfg: &Path, name: &str) -> Service {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.path().join(format!("{name}-{n}.log"));
        Service::start_default_id(cfg, &log)
    }

    /// A collector over every output topic (waits until they exist).
    pub fn outputs(&self, read_committed: bool) -> Collector {
        Collector::new(&self.b, &self.output_topics(), read_committed)
    }

    /// Remembers another topic to delete at the end.
    pub fn track(&self, topic: &str) {
        self.extra_topics.lock().unwrap().push(topic.to_string());
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep everything for a post-mortem.
            let kept =
                std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")).keep();
            eprintln!(
                "scenario {}: logs and configs kept in {}",
                self.id,
                kept.display()
            );
            return;
        }
        let mut topics = self.output_topics();
        topics.extend([self.input.clone(), self.dlq.clone(), self.changelog.clone()]);
        topics.extend(self.extra_topics.lock().unwrap().iter().cloned());
        delete_topics(&self.b, &topics);
    }
}
