//! What a step of the engine hands out: derived events (with their ids and
//! the per-type counters), KPI facts when collection is on, and the list
//! of customers changed since the last changelog drain. Shared by the
//! touchpoint steps (`apply.rs`) and the timer kinds (`fire.rs`); it
//! decides nothing about signals.

use std::sync::Arc;

use super::ids::{event_id, Cause};
use super::kpi::{Kpi, Population};
use super::state::Customer;
use super::EngineStats;
use crate::model::{ChurnLevel, DerivedEvent, EventTime, Payload};
use crate::signals::config::EngineConfig;

/// Records a KPI fact when collection is on.
pub(super) fn kpi(kpis: &mut Option<Vec<Kpi>>, k: impl FnOnce() -> Kpi) {
    if let Some(v) = kpis {
        v.push(k());
    }
}

/// After a churn re-evaluation (a touchpoint's or a timer's): counts the
/// level move of an emitted `churn_risk` in the population and tells
/// whether the risk turned high. The caller emits the event.
pub(super) fn churn_moved(
    population: &mut Population,
    before: ChurnLevel,
    after: ChurnLevel,
    churn: Option<&Payload>,
) -> bool {
    if churn.is_some() {
        population.level(Some(before), Some(after));
    }
    matches!(
        churn,
        Some(Payload::ChurnRisk {
            level: ChurnLevel::High,
            ..
        })
    )
}

/// The KPI fact of a customer turning `high` churn risk: its predicted CLV
/// (0 without an order).
pub(super) fn value_at_risk(
    cfg: &EngineConfig,
    churn: &crate::signals::churn::Churn,
    value: Option<&crate::signals::value::ValueState>,
    clock: EventTime,
) -> Kpi {
    let empty = crate::signals::value::ValueState::default();
    let value = value.unwrap_or(&empty);
    Kpi::ClvTurningHighRisk {
        currency: value.currency.as_ref().map(|(_, c)| c.to_string()),
        predicted_clv: crate::signals::value::predict(cfg, churn, value, clock)
            .map_or(0.0, |p| p.predicted_clv),
    }
}

/// Marks a customer changed since the last changelog drain (once).
pub(super) fn mark_dirty(dirty: &mut Vec<u32>, c: &mut Customer, slot: u32) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(slot);
    }
}

/// The customer of the derived events one touchpoint or timer causes: its
/// id is made into the events' shared `Arc` once, at the first of them.
pub(super) struct Who<'a> {
    id: &'a str,
    arc: Option<Arc<str>>,
}

impl<'a> Who<'a> {
    pub(super) fn new(id: &'a str) -> Self {
        Who { id, arc: None }
    }

    fn arc(&mut self) -> Arc<str> {
        self.arc.get_or_insert_with(|| Arc::from(self.id)).clone()
    }
}

/// Emits a payload as a derived event.
pub(super) fn emit(
    out: &mut Vec<DerivedEvent>,
    stats: &mut EngineStats,
    customer: &mut Who<'_>,
    at: EventTime,
    cause: Cause<'_>,
    payload: Payload,
) {
    let kind = payload.derived_type();
    stats.emitted[kind as usize] += 1;
    out.push(DerivedEvent {
        kind,
        event_id: event_id(kind, customer.id, cause),
        customer_id: customer.arc(),
        at,
        payload,
    });
}
