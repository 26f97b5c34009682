//! Timers: firing every timer the watermark reaches, in the queue's order,
//! one function per timer kind (cart, churn, survey, state TTL), and the
//! eviction a TTL check ends in. Touchpoints are applied in `apply.rs`;
//! nothing here reads a touchpoint.

use std::sync::Arc;

use super::emit::{churn_moved, emit, kpi, mark_dirty, value_at_risk, Who};
use super::ids::Cause;
use super::kpi::{Kpi, Population};
use super::snapshot::next_slot;
use super::state::Customer;
use super::{Engine, EngineStats};
use crate::model::{DerivedEvent, EventTime, JourneyStage, Payload};
use crate::signals::config::EngineConfig;
use crate::time::timers::{self, PopAction, TimerKey, TimerKind, TimerQueue};

/// What every timer kind reads and writes: the popped timer, its
/// customer, and the engine's parts the firing touches.
struct Fired<'a> {
    cfg: &'a EngineConfig,
    key: TimerKey,
    target: timers::TimerTarget,
    due: EventTime,
    late_horizon: EventTime,
    c: &'a mut Customer,
    timers: &'a mut TimerQueue,
    stats: &'a mut EngineStats,
    dirty: &'a mut Vec<u32>,
    kpis: &'a mut Option<Vec<Kpi>>,
    population: &'a mut Population,
    out: &'a mut Vec<DerivedEvent>,
}

impl Engine {
    pub(super) fn fire_until(&mut self, wm: EventTime, out: &mut Vec<DerivedEvent>) {
        // Staged churn timers of the days the watermark entered go to the
        // queue first, so that the pop order below is the whole order.
        for (day, slots) in self.timers.take_staged(wm) {
            for slot in slots {
                if let Some(c) = self.store.get_mut(slot) {
                    let target = timers::TimerTarget {
                        slot,
                        kind: TimerKind::Churn,
                    };
                    self.timers.load(&mut c.churn.timer, day, target);
                } else {
                    self.timers.skip_stale();
                }
            }
        }
        while let Some((key, target)) = self.timers.pop_due(wm) {
            if self.fire_one(key, target, out) {
                self.evict(target.slot);
            }
        }
    }

    /// Runs one popped timer; returns true when the customer's state TTL
    /// is up (its churn timer, due at the TTL instant at the latest, queues
    /// the TTL check).
    fn fire_one(
        &mut self,
        key: TimerKey,
        target: timers::TimerTarget,
        out: &mut Vec<DerivedEvent>,
    ) -> bool {
        let cfg = &*self.cfg;
        let late_horizon = self
            .watermark
            .current()
            .unwrap_or(key.due)
            .saturating_sub(cfg.allowed_lateness);
        let Engine {
            store,
            timers,
            stats,
            dirty,
            kpis,
            population,
            ..
        } = self;
        let Some(c) = store.get_mut(target.slot) else {
            return false;
        };
        let f = Fired {
            cfg,
            key,
            target,
            due: key.due,
            late_horizon,
            c,
            timers,
            stats,
            dirty,
            kpis,
            population,
            out,
        };
        match target.kind {
            TimerKind::Cart => f.cart(),
            TimerKind::Churn => f.churn(),
            TimerKind::Survey => f.survey(),
            TimerKind::Ttl => return f.ttl(),
        }
        false
    }

    /// Removes a customer whose state TTL is up, with its timers.
    fn evict(&mut self, slot: u32) {
        let Some(mut c) = self.store.remove(slot) else {
            return;
        };
        self.timers.cancel(&mut c.churn.timer);
        if let Some(r) = &mut c.rare {
            r.cart.cancel_timers(&mut self.timers);
            r.survey.cancel_timers(&mut self.timers);
        }
        self.population.level(Some(c.churn.level), None);
        self.population.stage(c.journey.stage, None);
        self.evicted.push((Arc::from(c.id()), next_slot(c.slot)));
        self.stats.evicted += 1;
    }
}

impl Fired<'_> {
    /// The timer fires: the customer changed, the counter, its clock.
    fn fired(&mut self) {
        mark_dirty(self.dirty, self.c, self.target.slot);
        self.stats.timers_fired += 1;
        self.c.clock = self.c.clock.max(self.due);
    }

    /// Emits a payload the timer caused, at its due time.
    fn emit(&mut self, cause: Cause<'_>, p: Payload) {
        emit(
            self.out,
            self.stats,
            &mut Who::new(self.c.id()),
            self.due,
            cause,
            p,
        );
    }

    /// `cart_abandoned`: a cart's inactivity timeout.
    fn cart(mut self) {
        let Some(r) = self.c.rare.as_mut() else {
            return;
        };
        let (action, payload) =
            r.cart
                .on_timer(self.key, self.target, self.timers, &mut self.c.lists);
        if action != PopAction::Fire {
            return;
        }
        self.fired();
        let Some(p) = payload else {
            return;
        };
        let discriminator = match &p {
            Payload::CartAbandoned {
                cart_id, channel, ..
            } => {
                let channel = *channel;
                kpi(self.kpis, || Kpi::CartAbandoned { channel });
                // Named carts "k:<id>", the unnamed cart "-": never equal.
                cart_id
                    .as_deref()
                    .map_or_else(|| "-".to_string(), |id| format!("k:{id}"))
            }
            _ => String::new(),
        };
        let cause = Cause::Timer {
            kind: TimerKind::Cart,
            due: self.due,
            discriminator: &discriminator,
        };
        self.emit(cause, p);
    }

    /// `churn_risk` re-evaluated at a threshold crossing, the journey's
    /// move to `at_risk` it may cause, and the state-TTL check.
    fn churn(mut self) {
        if self
            .timers
            .resolve(&mut self.c.churn.timer, self.key, self.target)
            != PopAction::Fire
        {
            return;
        }
        let (cfg, due) = (self.cfg, self.due);
        let expires = self.c.newest.saturating_add(cfg.state_ttl);
        self.fired();
        let cause = Cause::Timer {
            kind: TimerKind::Churn,
            due,
            discriminator: "",
        };
        let level_before = self.c.churn.level;
        let before = self.c.full_churn();
        let mut full = before.clone();
        let churn = full.reevaluate(cfg, self.c.clock, self.timers, self.target.slot, expires);
        self.c.store_churn(&full, &before);
        let became_high = churn_moved(
            self.population,
            level_before,
            self.c.churn.level,
            churn.as_ref(),
        );
        if let Some(p) = churn {
            self.emit(cause, p);
        }
        if became_high {
            let c = &*self.c;
            kpi(self.kpis, || {
                value_at_risk(cfg, &full, c.value.as_deref(), c.clock)
            });
        }
        self.c.tidy_quiet(cfg, self.late_horizon);
        if became_high {
            self.journey_at_risk(cause);
        }
        if due >= expires {
            // The state TTL is up: a level that flips at this very instant
            // has changed above; the eviction comes after every other timer
            // due now (TTL checks order last among equal due times).
            self.timers.cancel(&mut self.c.churn.timer);
            self.timers.add_ttl(due, self.target.slot);
        }
    }

    /// `journey_stage_changed` to `at_risk` when churn risk turned high (a
    /// customer with no stage yet keeps none).
    fn journey_at_risk(&mut self, cause: Cause<'_>) {
        let from = self.c.journey.stage;
        if from.is_none() {
            return;
        }
        self.c.journey.on_high_risk();
        if self.c.journey.stage != from {
            self.population.stage(from, self.c.journey.stage);
            let p = Payload::JourneyStageChanged {
                from,
                to: JourneyStage::AtRisk,
                channel: None,
            };
            self.emit(cause, p);
        }
    }

    /// `survey_trigger`: a campaign click's survey delay.
    fn survey(mut self) {
        let Some(discriminator) = self
            .c
            .rare
            .as_ref()
            .and_then(|r| r.survey.campaign_of(self.key))
            .map(str::to_string)
        else {
            return;
        };
        self.fired();
        let (cfg, key) = (self.cfg, self.key);
        let payload = self
            .c
            .rare
            .as_mut()
            .and_then(|r| r.survey.on_timer(cfg, key));
        if let Some(p) = payload {
            let cause = Cause::Timer {
                kind: TimerKind::Survey,
                due: self.due,
                discriminator: &discriminator,
            };
            self.emit(cause, p);
        }
        self.c.tidy(cfg, self.late_horizon);
    }

    /// The state-TTL check: whether the customer is to be evicted.
    fn ttl(self) -> bool {
        // Nothing arrives between the churn timer that queued this check
        // and the check itself (both are due now), but the test costs
        // nothing.
        self.due >= self.c.newest.saturating_add(self.cfg.state_ttl)
    }
}
