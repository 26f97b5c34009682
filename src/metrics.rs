//! Every Prometheus metric touchstream exports, declared in one place.
//!
//! Names are `touchstream_<name>_<unit>[_total]`; labels come only from
//! bounded sets (reject reason, derived type, topic, partition, error
//! kind), never a customer id. The engine returns counts; the edges add
//! them here per batch.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Label name for the reject reason.
pub const REASON: &str = "reason";
/// Label name for the derived event type.
pub const TYPE: &str = "type";
/// Label name for the input topic.
pub const TOPIC: &str = "topic";
/// Label name for the partition.
pub const PARTITION: &str = "partition";
/// Label name for the Kafka error kind.
pub const KIND: &str = "kind";

/// The metrics of one process.
#[derive(Clone)]
pub struct Metrics {
    /// The registry behind `/metrics`.
    pub registry: Registry,
    /// Records consumed, by topic.
    pub records_consumed: IntCounterVec,
    /// Records rejected, by SPEC reason.
    pub records_rejected: IntCounterVec,
    /// Duplicates dropped.
    pub duplicates: IntCounter,
    /// Accepted records older than the watermark.
    pub late_events: IntCounter,
    /// Derived events emitted, by type.
    pub derived_events: IntCounterVec,
    /// Records written to the dead-letter topic.
    pub dlq_records: IntCounter,
    /// Seconds from consuming a record to its outputs being acknowledged.
    pub processing_latency: Histogram,
    /// Consumer lag (high watermark − position), per topic and partition.
    pub consumer_lag: IntGaugeVec,
    /// Event-time watermark (epoch seconds), per topic and partition.
    pub watermark: GaugeVec,
    /// Wall clock − watermark (seconds), per topic and partition.
    pub watermark_lag: GaugeVec,
    /// Customers held in memory.
    pub customers: IntGauge,
    /// Estimated bytes of customer state.
    pub state_bytes: IntGauge,
    /// Pending event-time timers.
    pub pending_timers: IntGauge,
    /// Seconds to restore a partition from the changelog.
    pub restore_duration: Histogram,
    /// Customers restored from the changelog.
    pub restored_customers: IntCounter,
    /// Seconds per checkpoint (changelog + offsets [+ transaction]).
    pub commit_duration: Histogram,
    /// Kafka client errors, by kind.
    pub kafka_errors: IntCounterVec,
    /// 1 when every assigned partition is restored.
    pub ready: IntGauge,
    /// Partitions assigned to this instance.
    pub assigned_partitions: IntGauge,
    /// Timers fired.
    pub timers_fired: IntCounter,
    /// Customers evicted by state_ttl.
    pub evicted: IntCounter,
    /// Changelog records written per checkpoint, per partition.
    pub checkpoint_records: HistogramVec,
    /// Build information.
    pub build_info: Gauge,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(h.clone()));
    h
}

impl Metrics {
    /// Creates and registers every metric. (Metric definitions are static;
    /// a failure here is a programming error caught by the unit test.)
    pub fn new() -> Self {
        let r = Registry::new();
        let secs = vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        let m = Metrics {
            records_consumed: counter_vec(&r, "touchstream_records_consumed_total", "Input records consumed.", &[TOPIC]),
            records_rejected: counter_vec(
                &r,
                "touchstream_records_rejected_total",
                "Input records rejected, by SPEC reason (sent to the dead-letter topic).",
                &[REASON],
            ),
            duplicates: counter(&r, "touchstream_duplicates_total", "Duplicate touchpoints dropped (event_id among the customer's last 32)."),
            late_events: counter(&r, "touchstream_late_events_total", "Accepted touchpoints older than the watermark."),
            derived_events: counter_vec(&r, "touchstream_derived_events_total", "Derived events emitted, by type.", &[TYPE]),
            dlq_records: counter(&r, "touchstream_dlq_records_total", "Records written to the dead-letter topic."),
            processing_latency: histogram(
                &r,
                "touchstream_processing_latency_seconds",
                "Seconds from consuming a record to its outputs being acknowledged.",
                secs.clone(),
            ),
            consumer_lag: {
                let g = IntGaugeVec::new(
                    Opts::new("touchstream_consumer_lag_records", "Records between the partition's high watermark and the consumer position."),
                    &[TOPIC, PARTITION],
                )
                .unwrap_or_else(|e| panic!("{e}"));
                let _ = r.register(Box::new(g.clone()));
                g
            },
            watermark: gauge_vec(&r, "touchstream_watermark_seconds", "Event-time watermark (epoch seconds).", &[TOPIC, PARTITION]),
            watermark_lag: gauge_vec(
                &r,
                "touchstream_watermark_lag_seconds",
                "Wall clock minus the event-time watermark, in seconds.",
                &[TOPIC, PARTITION],
            ),
            customers: gauge(&r, "touchstream_customers", "Customers held in memory."),
            state_bytes: gauge(&r, "touchstream_state_bytes", "Estimated bytes of customer state in memory."),
            pending_timers: gauge(&r, "touchstream_pending_timers", "Pending event-time timers."),
            restore_duration: histogram(
                &r,
                "touchstream_restore_duration_seconds",
                "Seconds to restore a partition's state from the changelog.",
                vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0],
            ),
            restored_customers: counter(&r, "touchstream_restored_customers_total", "Customers restored from the changelog."),
            commit_duration: histogram(
                &r,
                "touchstream_commit_duration_seconds",
                "Seconds per checkpoint: outputs acknowledged, changelog and marker written, offsets committed.",
                secs,
            ),
            kafka_errors: counter_vec(&r, "touchstream_kafka_errors_total", "Kafka client errors, by kind.", &[KIND]),
            ready: gauge(&r, "touchstream_ready", "1 when every assigned partition is restored and consuming."),
            assigned_partitions: gauge(&r, "touchstream_assigned_partitions", "Input partitions assigned to this instance."),
            timers_fired: counter(&r, "touchstream_timers_fired_total", "Event-time timers fired."),
            evicted: counter(&r, "touchstream_evicted_customers_total", "Customers evicted after state_ttl of event-time inactivity."),
            checkpoint_records: {
                let h = HistogramVec::new(
                    HistogramOpts::new("touchstream_checkpoint_records", "Changelog records written per checkpoint.")
                        .buckets(vec![0.0, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0]),
                    &[PARTITION],
                )
                .unwrap_or_else(|e| panic!("{e}"));
                let _ = r.register(Box::new(h.clone()));
                h
            },
            build_info: {
                let g = Gauge::with_opts(
                    Opts::new("touchstream_build_info", "Build information.").const_label("version", env!("CARGO_PKG_VERSION")),
                )
                .unwrap_or_else(|e| panic!("{e}"));
                let _ = r.register(Box::new(g.clone()));
                g.set(1.0);
                g
            },
            registry: r,
        };
        for reason in crate::validate::RejectReason::ALL {
            m.records_rejected.with_label_values(&[reason.as_str()]);
        }
        for t in crate::model::DerivedType::ALL {
            m.derived_events.with_label_values(&[t.as_str()]);
        }
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_metrics_register_and_render() {
        let m = Metrics::new();
        m.records_rejected.with_label_values(&["too_late"]).inc();
        let text = m.render();
        assert!(text.contains("touchstream_records_rejected_total{reason=\"too_late\"} 1"));
        assert!(text.contains("touchstream_derived_events_total{type=\"cart_abandoned\"} 0"));
    }
}
