//! Applying one accepted touchpoint to its customer: [`Engine::apply`]
//! runs one function per signal step, in the order of the SPEC table
//! (engagement, cart, churn with the order's value, journey, survey, the
//! KPI-only facts, fatigue, attribution, customer value), so the events
//! one touchpoint causes come out in that order. Deciding whether a record
//! is accepted, and firing timers, is the caller's (`mod.rs`, `fire.rs`).

use super::emit::{churn_moved, emit, kpi, mark_dirty, value_at_risk, Who};
use super::ids::Cause;
use super::kpi::{Kpi, Population};
use super::state::Customer;
use super::{Engine, EngineStats};
use crate::model::{DerivedEvent, EventTime, Payload, TouchType, Touchpoint};
use crate::signals::churn::Churn;
use crate::signals::config::EngineConfig;
use crate::time::timers::TimerQueue;

/// What every step of one touchpoint reads and writes: the touchpoint, its
/// customer, and the engine's parts the steps touch.
struct Touch<'a> {
    cfg: &'a EngineConfig,
    tp: &'a Touchpoint,
    slot: u32,
    /// The touchpoint's time.
    t: EventTime,
    /// The customer's clock and newest event time with this touchpoint.
    clock: EventTime,
    newest: EventTime,
    /// Watermark − allowed lateness: what is older can no longer matter.
    late_horizon: EventTime,
    c: &'a mut Customer,
    timers: &'a mut TimerQueue,
    stats: &'a mut EngineStats,
    kpis: &'a mut Option<Vec<Kpi>>,
    population: &'a mut Population,
    out: &'a mut Vec<DerivedEvent>,
    who: Who<'a>,
    cause: Cause<'a>,
}

impl Engine {
    fn slot_for(&mut self, id: &str, t: EventTime) -> (u32, bool) {
        if let Some(slot) = self.store.find(id) {
            return (slot, false);
        }
        let slot = self.store.insert(Customer::new(id, t));
        self.population
            .level(None, Some(crate::model::ChurnLevel::Low));
        (slot, true)
    }

    /// Applies an accepted touchpoint (`known`: its customer's slot, if
    /// the customer is in state): each signal's step in turn.
    pub(super) fn apply(
        &mut self,
        tp: &Touchpoint,
        h: u64,
        known: Option<u32>,
        out: &mut Vec<DerivedEvent>,
    ) {
        let (slot, is_new) = match known {
            Some(slot) => (slot, false),
            None => self.slot_for(&tp.customer_id, tp.timestamp),
        };
        let Some((mut s, newest_before)) = self.touch(tp, h, slot, is_new, out) else {
            return;
        };
        s.engagement(newest_before);
        s.cart();
        let (full, became_high) = s.churn();
        s.journey(became_high);
        s.survey();
        s.kpi_facts();
        s.fatigue();
        s.order_attributed();
        s.customer_value(&full);
        s.record_touch();
        s.c.tidy(s.cfg, s.late_horizon);
    }

    /// Opens a touchpoint's steps: the customer marked changed, the touch
    /// KPI, the customer's clock moved on, the event id remembered. Also
    /// returns the customer's newest event time before it (`None` for a
    /// new customer).
    fn touch<'a>(
        &'a mut self,
        tp: &'a Touchpoint,
        h: u64,
        slot: u32,
        is_new: bool,
        out: &'a mut Vec<DerivedEvent>,
    ) -> Option<(Touch<'a>, Option<EventTime>)> {
        let t = tp.timestamp;
        let cfg = &*self.cfg;
        let wm = self.watermark.current().unwrap_or(t);
        let late_horizon = wm.saturating_sub(cfg.allowed_lateness);
        let Engine {
            store,
            timers,
            stats,
            dirty,
            kpis,
            population,
            ..
        } = self;
        let c = store.get_mut(slot)?;
        mark_dirty(dirty, c, slot);
        kpi(kpis, || Kpi::Touch {
            channel: tp.channel,
            kind: tp.kind,
        });
        let newest_before = (!is_new).then_some(c.newest);
        c.newest = c.newest.max(t);
        c.clock = c.clock.max(t);
        c.lists.remember_event(h);
        let s = Touch {
            cfg,
            tp,
            slot,
            t,
            clock: c.clock,
            newest: c.newest,
            late_horizon,
            c,
            timers,
            stats,
            kpis,
            population,
            out,
            who: Who::new(&tp.customer_id),
            cause: Cause::Touch(&tp.event_id),
        };
        Some((s, newest_before))
    }
}

impl Touch<'_> {
    /// Emits a payload the touchpoint caused, at its time.
    fn emit(&mut self, p: Payload) {
        emit(self.out, self.stats, &mut self.who, self.t, self.cause, p);
    }

    fn is_order(&self) -> bool {
        self.tp.kind == TouchType::OrderPlaced
    }

    /// `engagement_score`.
    fn engagement(&mut self, newest_before: Option<EventTime>) {
        let (cfg, tp) = (self.cfg, self.tp);
        let c = &mut *self.c;
        c.engagement.apply(cfg, tp.kind, self.t, newest_before);
        let mut channels = c.lists.touches().recent_channels(self.newest);
        if tp.kind.is_own() {
            // Not recorded by attribution yet (an order is attributed first).
            channels =
                crate::signals::engagement::with_touch(channels, self.newest, self.t, tp.channel);
        }
        if let Some(p) = c.engagement.evaluate(cfg, channels) {
            self.emit(p);
        }
    }

    /// `cart_abandoned` (timers only) and `cart_recovered`; the order KPI.
    fn cart(&mut self) {
        let (cfg, tp) = (self.cfg, self.tp);
        let c = &mut *self.c;
        if tp.kind.is_cart_activity()
            && c.rare.get_or_insert_with(Box::default).cart.on_activity(
                cfg,
                tp,
                self.timers,
                self.slot,
                &c.lists,
            )
        {
            kpi(self.kpis, || Kpi::CartStarted {
                channel: tp.channel,
            });
        }
        if tp.kind == TouchType::OrderPlaced {
            kpi(self.kpis, || Kpi::Order {
                channel: tp.channel,
                currency: tp.currency.clone(),
                value: tp.value,
            });
            c.lists.reopen_carts();
            if let Some(p) = c
                .rare
                .as_mut()
                .and_then(|r| r.cart.on_order(cfg, tp, self.timers))
            {
                kpi(self.kpis, || Kpi::CartRecovered {
                    channel: tp.channel,
                });
                self.emit(p);
            }
        }
    }

    /// `churn_risk` (an order's money is recorded first, against the first
    /// order time before it). Returns the churn state after the touchpoint
    /// and whether the risk turned high.
    fn churn(&mut self) -> (Churn, bool) {
        let cfg = self.cfg;
        let before = self.c.full_churn();
        if self.is_order() {
            self.c
                .value
                .get_or_insert_with(Box::default)
                .on_order(self.tp, before.first_order_at());
        }
        let mut full = before.clone();
        full.apply(cfg, self.tp);
        let level_before = full.level;
        let churn = full.reevaluate(
            cfg,
            self.clock,
            self.timers,
            self.slot,
            self.newest.saturating_add(cfg.state_ttl),
        );
        self.c.store_churn(&full, &before);
        let became_high = churn_moved(
            self.population,
            level_before,
            self.c.churn.level,
            churn.as_ref(),
        );
        if let Some(p) = churn {
            self.emit(p);
        }
        if became_high {
            let (c, clock) = (&*self.c, self.clock);
            kpi(self.kpis, || {
                value_at_risk(cfg, &full, c.value.as_deref(), clock)
            });
        }
        (full, became_high)
    }

    /// `journey_stage_changed`.
    fn journey(&mut self, became_high: bool) {
        let c = &mut *self.c;
        let from = c.journey.stage;
        c.journey.on_touch(self.tp.kind, c.churn.orders);
        if became_high {
            c.journey.on_high_risk();
        }
        if let Some(to) = c.journey.stage.filter(|s| Some(*s) != from) {
            self.population.stage(from, Some(to));
            let p = Payload::JourneyStageChanged {
                from,
                to,
                channel: Some(self.tp.channel),
            };
            self.emit(p);
        }
    }

    /// `survey_trigger` (timers only): a campaign click, an order's
    /// conversion.
    fn survey(&mut self) {
        let (cfg, tp, t) = (self.cfg, self.tp, self.t);
        if tp.kind == TouchType::MessageClicked {
            if let Some(campaign) = tp.campaign_id.as_deref() {
                self.c.rare_mut().survey.on_click(
                    cfg,
                    t,
                    campaign,
                    tp.channel,
                    self.timers,
                    self.slot,
                );
                kpi(self.kpis, || Kpi::CampaignClick {
                    channel: tp.channel,
                });
            }
        }
        if self.is_order() {
            // Recorded even with no click pending: a late click may still
            // arrive within the allowed lateness and find it.
            let converted = self.c.rare_mut().survey.on_order(cfg, t, self.late_horizon);
            for channel in converted {
                kpi(self.kpis, || Kpi::CampaignConversion { channel });
            }
        }
    }

    /// KPI-only facts: surveys, support resolution, channel switches.
    fn kpi_facts(&mut self) {
        let (tp, t) = (self.tp, self.t);
        let (c, kpis) = (&mut *self.c, &mut *self.kpis);
        if let (Some(survey), Some(score)) = (tp.survey, tp.score) {
            kpi(kpis, || Kpi::SurveyScore {
                survey,
                channel: tp.channel,
                score,
            });
        }
        match tp.kind {
            TouchType::SupportContact if c.lists.support_open().is_none() => c
                .lists
                .set_support_open(Some(crate::signals::Packed::new(t, tp.channel))),
            TouchType::SupportResolved => {
                let open = c.lists.support_open();
                c.lists.set_support_open(None);
                if let Some((opened, channel)) = open.map(|p| (p.time(), p.channel())) {
                    let seconds = (t - opened).max(0) as f64 / 1000.0;
                    kpi(kpis, || Kpi::SupportResolved { channel, seconds });
                }
            }
            _ => {}
        }
        if tp.kind.is_own() {
            if let Some(from) = c.last_channel.filter(|f| *f != tp.channel) {
                kpi(kpis, || Kpi::ChannelSwitch {
                    from,
                    to: tp.channel,
                });
            }
            c.last_channel = Some(tp.channel);
        }
    }

    /// `contact_fatigue`.
    fn fatigue(&mut self) {
        if self.tp.kind == TouchType::MessageSent {
            if let Some(p) = self
                .c
                .lists
                .on_message(self.cfg, self.t, self.tp.channel, self.clock)
            {
                self.emit(p);
            }
        }
    }

    /// `order_attributed`, over the own touches before the order.
    fn order_attributed(&mut self) {
        let tp = self.tp;
        if tp.kind.is_own() && self.is_order() {
            let models = self.c.lists.touches().attribute(self.t, tp.channel);
            let p = Payload::OrderAttributed {
                order_id: tp.order_id.clone(),
                order_value: tp.value,
                currency: tp.currency.clone(),
                channel: tp.channel,
                models: Box::new(models),
            };
            self.emit(p);
        }
    }

    /// `customer_value` after an order (`full`: the churn state after it).
    fn customer_value(&mut self, full: &Churn) {
        if !(self.tp.kind.is_own() && self.is_order()) {
            return;
        }
        let c = &*self.c;
        let Some(p) = c
            .value
            .as_deref()
            .and_then(|v| crate::signals::value::payload(self.cfg, full, v, self.clock))
        else {
            return;
        };
        if let Payload::CustomerValue { predicted_clv, .. } = &p {
            let (stage, level) = (c.journey.stage, c.churn.level);
            kpi(self.kpis, || Kpi::PredictedClv {
                stage,
                level,
                predicted_clv: *predicted_clv,
            });
        }
        self.emit(p);
    }

    /// Records an own touch for attribution and engagement channels (after
    /// the order it may be is attributed).
    fn record_touch(&mut self) {
        if self.tp.kind.is_own() {
            self.c
                .lists
                .record_touch(self.t, self.tp.channel, self.late_horizon);
        }
    }
}
