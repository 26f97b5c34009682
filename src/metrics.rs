//! Every Prometheus metric touchstream exports, declared in one place.
//!
//! Names are `touchstream_<name>_<unit>[_total]`; labels come only from
//! bounded sets (reject reason, derived type, topic, partition, error
//! kind), never a customer id. The engine returns counts; the edges add
//! them here per batch.

use crate::model::{Channel, TouchType};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
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

/// Every value of the `kind` label of `touchstream_kafka_errors_total`.
pub const KAFKA_ERROR_KINDS: [&str; 9] = [
    "transport",
    "authentication",
    "authorization",
    "ssl",
    "timeout",
    "delivery",
    "schema_registry",
    "transaction_aborted",
    "other",
];

/// Handles of the series touched for every record, resolved once: a label
/// lookup hashes the label values and takes a lock, which per record is a
/// measurable share of the service's CPU.
#[derive(Clone)]
struct Hot {
    /// `touchstream_derived_events_total` by [`crate::model::DerivedType`].
    derived: Vec<IntCounter>,
    /// `touchstream_touchpoints_total` by channel × type, created on first
    /// use (a series appears once it counts something, as before).
    touches: Vec<std::sync::OnceLock<IntCounter>>,
}

/// The metrics of one process.
#[derive(Clone)]
pub struct Metrics {
    hot: Hot,
    /// The registry behind `/metrics`.
    pub registry: Registry,
    /// Held for writing while the set of per-partition series changes (a
    /// rebalance, the gauges' update), and for reading while `/metrics`
    /// renders: a scrape never shows part of a task (SPEC 8).
    pub partitions: std::sync::Arc<std::sync::RwLock<()>>,
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
    /// Dead letters whose key or value was cut to fit the producer's
    /// message size limit.
    pub dlq_truncated: IntCounter,
    /// Seconds from consuming a record to its outputs being acknowledged.
    pub processing_latency: Histogram,
    /// Consumer lag (high watermark − position), per topic and partition.
    pub consumer_lag: IntGaugeVec,
    /// Event-time watermark (epoch seconds), per topic and partition.
    pub watermark: GaugeVec,
    /// Wall clock − watermark (seconds), per topic and partition.
    pub watermark_lag: GaugeVec,
    /// Seconds a checkpoint stops processing.
    pub checkpoint_pause: Histogram,
    /// The task's watermark (epoch seconds): the minimum over its inputs.
    pub task_watermark: GaugeVec,
    /// 1 while an input partition has received nothing for `idle_timeout`.
    pub input_idle: IntGaugeVec,
    /// Records whose customer id does not hash to the partition they came on.
    pub misrouted: IntCounterVec,
    /// Records the router wrote to a repartition topic, by input topic.
    pub repartitioned: IntCounterVec,
    /// Records a repartition topic's partition holds (high − low offset).
    pub repartition_retained: IntGaugeVec,
    /// 1 while the router holds a re-keyed topic back for another instance.
    pub router_aligning: IntGaugeVec,
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
    /// Assigned partitions waiting for the schema registry (all of them
    /// while it is unreachable: one service loop).
    pub partitions_waiting_on_registry: IntGauge,
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
    /// KPI: accepted touchpoints by channel and type.
    pub touchpoints: IntCounterVec,
    /// KPI: orders by channel.
    pub orders: IntCounterVec,
    /// KPI: order value by channel and currency.
    pub revenue: prometheus::CounterVec,
    /// KPI: carts started (became eligible) by channel.
    pub carts_started: IntCounterVec,
    /// KPI: carts abandoned by channel (of the last cart activity).
    pub carts_abandoned: IntCounterVec,
    /// KPI: carts recovered by channel (of the recovering order).
    pub carts_recovered: IntCounterVec,
    /// KPI: campaign clicks by channel.
    pub campaign_clicks: IntCounterVec,
    /// KPI: campaign clicks followed by an order within the conversion window.
    pub campaign_conversions: IntCounterVec,
    /// KPI: survey answers by survey and channel.
    pub survey_score: HistogramVec,
    /// KPI: support contact to resolution, by channel of the contact.
    pub support_resolution: HistogramVec,
    /// KPI: consecutive own touches on different channels.
    pub channel_switches: IntCounterVec,
    /// KPI: customers by churn level.
    pub customers_by_churn_level: IntGaugeVec,
    /// KPI: customers by journey stage.
    pub customers_by_stage: IntGaugeVec,
    /// KPI: predicted CLV at each order, by journey stage and churn level.
    pub predicted_clv: HistogramVec,
    /// KPI: predicted CLV of customers as their churn risk turns high, by
    /// currency.
    pub clv_turning_high_risk: prometheus::CounterVec,
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(h.clone()));
    h
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn float_counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::CounterVec {
    let c = prometheus::CounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
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
        let secs = vec![
            0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let m = Metrics {
            partitions: std::sync::Arc::new(std::sync::RwLock::new(())),
            hot: Hot {
                derived: Vec::new(),
                touches: Vec::new(),
            },
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
            dlq_truncated: counter(&r, "touchstream_dlq_truncated_total", "Dead letters cut to fit the message size limit (header error.truncated)."),
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
            checkpoint_pause: histogram(
                &r,
                "touchstream_checkpoint_pause_seconds",
                "Seconds a checkpoint stops processing (at_least_once: draining changed customers into the changelog; exactly_once: the whole transaction commit).",
                vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
            ),
            task_watermark: gauge_vec(&r, "touchstream_task_watermark_seconds", "A task's event-time watermark (epoch seconds): the minimum over its non-idle inputs.", &["task"]),
            input_idle: int_gauge_vec(&r, "touchstream_input_idle", "1 while the input partition has received nothing for time.idle_timeout (left out of its task's watermark).", &[TOPIC, PARTITION]),
            repartitioned: counter_vec(&r, "touchstream_repartitioned_records_total", "Records of a re-keyed input topic the router wrote to its repartition topic (SPEC 8).", &[TOPIC]),
            router_aligning: int_gauge_vec(&r, "touchstream_router_aligning", "1 while the router holds back a re-keyed topic's partitions because another instance routing the same topic is further behind than kafka.router_max_drift (watermark alignment).", &[TOPIC]),
            repartition_retained: int_gauge_vec(&r, "touchstream_repartition_retained_records", "Records a repartition topic's partition still holds (its end offset minus its start offset); records are deleted once the task has checkpointed past them.", &[TOPIC, PARTITION]),
            misrouted: counter_vec(&r, "touchstream_misrouted_records_total", "Records of a co-partitioned input whose customer id does not hash (murmur2) to the partition they came on; processed by the task that received them.", &[TOPIC]),
            customers: gauge(&r, "touchstream_customers", "Customers held in memory."),
            state_bytes: gauge(&r, "touchstream_state_bytes", "Estimated bytes of customer state in memory."),
            pending_timers: gauge(&r, "touchstream_pending_timers", "Pending event-time timers."),
            restore_duration: histogram(
                &r,
                "touchstream_restore_duration_seconds",
                "Seconds to restore a partition's state from the changelog.",
                vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0],
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
            partitions_waiting_on_registry: gauge(&r, "touchstream_partitions_waiting_on_registry", "Assigned partitions waiting for the schema registry to answer (every partition while it is unreachable; the instance is not ready meanwhile)."),
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
            touchpoints: counter_vec(&r, "touchstream_touchpoints_total", "Accepted touchpoints by channel and type.", &["channel", "type"]),
            orders: counter_vec(&r, "touchstream_orders_total", "Orders by channel.", &["channel"]),
            revenue: float_counter_vec(
                &r,
                "touchstream_revenue_total",
                "Order value by channel and currency (ISO 4217; `none`/`other` when absent or malformed).",
                &["channel", "currency"],
            ),
            carts_started: counter_vec(&r, "touchstream_carts_started_total", "Carts started (first add_to_cart or checkout_started) by channel.", &["channel"]),
            carts_abandoned: counter_vec(&r, "touchstream_carts_abandoned_total", "Carts abandoned by channel of the last cart activity.", &["channel"]),
            carts_recovered: counter_vec(&r, "touchstream_carts_recovered_total", "Abandoned carts recovered by channel of the order.", &["channel"]),
            campaign_clicks: counter_vec(&r, "touchstream_campaign_clicks_total", "Campaign clicks (message_clicked with a campaign_id) by channel.", &["channel"]),
            campaign_conversions: counter_vec(
                &r,
                "touchstream_campaign_conversions_total",
                "Campaign clicks followed by an order within the conversion window, by channel of the click.",
                &["channel"],
            ),
            survey_score: histogram_vec(
                &r,
                "touchstream_survey_score",
                "Survey answers by survey (nps, csat, ces) and channel.",
                &["survey", "channel"],
                (0..=10).map(f64::from).collect(),
            ),
            support_resolution: histogram_vec(
                &r,
                "touchstream_support_resolution_seconds",
                "Seconds from support_contact to support_resolved, by channel of the contact.",
                &["channel"],
                vec![60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 86400.0, 3.0 * 86400.0, 7.0 * 86400.0],
            ),
            channel_switches: counter_vec(
                &r,
                "touchstream_channel_switches_total",
                "Consecutive own touches of a customer on different channels.",
                &["from", "to"],
            ),
            customers_by_churn_level: int_gauge_vec(&r, "touchstream_customers_by_churn_level", "Customers in memory by churn level.", &["level"]),
            customers_by_stage: int_gauge_vec(&r, "touchstream_customers_by_stage", "Customers in memory by journey stage.", &["stage"]),
            predicted_clv: histogram_vec(
                &r,
                "touchstream_predicted_clv",
                "Predicted customer lifetime value (customer_value.predicted_clv, in the orders' currency) at each order, by journey stage and churn level.",
                &["stage", "churn_level"],
                vec![1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0],
            ),
            clv_turning_high_risk: float_counter_vec(
                &r,
                "touchstream_clv_turning_high_risk_total",
                "Sum of the predicted CLV of customers whose churn risk turned high (value at risk), by currency of their latest order.",
                &["currency"],
            ),
            registry: r,
        };
        for kind in KAFKA_ERROR_KINDS {
            m.kafka_errors.with_label_values(&[kind]);
        }
        for l in crate::model::ChurnLevel::ALL {
            m.customers_by_churn_level.with_label_values(&[l.as_str()]);
        }
        for st in crate::model::JourneyStage::ALL {
            m.customers_by_stage.with_label_values(&[st.as_str()]);
        }
        for reason in crate::validate::RejectReason::ALL {
            m.records_rejected.with_label_values(&[reason.as_str()]);
        }
        let mut m = m;
        m.hot.derived = crate::model::DerivedType::ALL
            .iter()
            .map(|t| m.derived_events.with_label_values(&[t.as_str()]))
            .collect();
        m.hot.touches = (0..Channel::ALL.len() * TouchType::ALL.len())
            .map(|_| std::sync::OnceLock::new())
            .collect();
        m
    }

    /// Counts a derived event of type `t`.
    pub fn derived_event(&self, t: crate::model::DerivedType) {
        match self.hot.derived.get(t as usize) {
            Some(c) => c.inc(),
            None => self.derived_events.with_label_values(&[t.as_str()]).inc(),
        }
    }

    fn touch(&self, channel: Channel, kind: TouchType) {
        let i = channel.index() * TouchType::ALL.len() + kind.index();
        match self.hot.touches.get(i) {
            Some(c) => c
                .get_or_init(|| {
                    self.touchpoints
                        .with_label_values(&[channel.as_str(), kind.as_str()])
                })
                .inc(),
            None => self
                .touchpoints
                .with_label_values(&[channel.as_str(), kind.as_str()])
                .inc(),
        }
    }

    /// Exports KPI facts reported by an engine.
    pub fn record_kpis(&self, kpis: &[crate::engine::kpi::Kpi]) {
        use crate::engine::kpi::Kpi;
        for k in kpis {
            match k {
                Kpi::Touch { channel, kind } => self.touch(*channel, *kind),
                Kpi::Order {
                    channel,
                    currency,
                    value,
                } => {
                    self.orders.with_label_values(&[channel.as_str()]).inc();
                    let cur = currency_label(currency.as_deref());
                    self.revenue
                        .with_label_values(&[channel.as_str(), cur.as_str()])
                        .inc_by(value.unwrap_or(0.0));
                }
                Kpi::CartStarted { channel } => self
                    .carts_started
                    .with_label_values(&[channel.as_str()])
                    .inc(),
                Kpi::CartAbandoned { channel } => self
                    .carts_abandoned
                    .with_label_values(&[channel.as_str()])
                    .inc(),
                Kpi::CartRecovered { channel } => self
                    .carts_recovered
                    .with_label_values(&[channel.as_str()])
                    .inc(),
                Kpi::CampaignClick { channel } => self
                    .campaign_clicks
                    .with_label_values(&[channel.as_str()])
                    .inc(),
                Kpi::CampaignConversion { channel } => self
                    .campaign_conversions
                    .with_label_values(&[channel.as_str()])
                    .inc(),
                Kpi::SurveyScore {
                    survey,
                    channel,
                    score,
                } => self
                    .survey_score
                    .with_label_values(&[survey.as_str(), channel.as_str()])
                    .observe(f64::from(*score)),
                Kpi::SupportResolved { channel, seconds } => self
                    .support_resolution
                    .with_label_values(&[channel.as_str()])
                    .observe(*seconds),
                Kpi::ChannelSwitch { from, to } => self
                    .channel_switches
                    .with_label_values(&[from.as_str(), to.as_str()])
                    .inc(),
                Kpi::PredictedClv {
                    stage,
                    level,
                    predicted_clv,
                } => self
                    .predicted_clv
                    .with_label_values(&[stage.map_or("none", |s| s.as_str()), level.as_str()])
                    .observe(*predicted_clv),
                Kpi::ClvTurningHighRisk {
                    currency,
                    predicted_clv,
                } => self
                    .clv_turning_high_risk
                    .with_label_values(&[currency_label(currency.as_deref()).as_str()])
                    .inc_by(predicted_clv.max(0.0)),
            }
        }
    }

    /// Sets the population gauges from the sum over engines.
    pub fn set_population(&self, p: &crate::engine::kpi::Population) {
        for l in crate::model::ChurnLevel::ALL {
            self.customers_by_churn_level
                .with_label_values(&[l.as_str()])
                .set(p.levels[l.index()]);
        }
        for st in crate::model::JourneyStage::ALL {
            self.customers_by_stage
                .with_label_values(&[st.as_str()])
                .set(p.stages[st.index()]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = {
            let _whole = self.partitions.read().unwrap_or_else(|p| p.into_inner());
            self.registry.gather()
        };
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// A bounded currency label: an ISO 4217-shaped code, else `other`, or
/// `none` when absent.
pub fn currency_label(c: Option<&str>) -> String {
    match c {
        None => "none".into(),
        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            c.to_ascii_uppercase()
        }
        Some(_) => "other".into(),
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
        m.derived_event(crate::model::DerivedType::ChurnRisk);
        m.record_kpis(&[crate::engine::kpi::Kpi::Touch {
            channel: Channel::Sms,
            kind: TouchType::PageView,
        }]);
        let text = m.render();
        assert!(text.contains("touchstream_records_rejected_total{reason=\"too_late\"} 1"));
        assert!(text.contains("touchstream_derived_events_total{type=\"churn_risk\"} 1"));
        assert!(
            text.contains("touchstream_touchpoints_total{channel=\"sms\",type=\"page_view\"} 1")
        );
        assert!(
            !text.contains("channel=\"web\",type=\"page_view\""),
            "series appear when used"
        );
        assert!(text.contains("touchstream_derived_events_total{type=\"cart_abandoned\"} 0"));
    }
}
