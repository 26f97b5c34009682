//! `churn_risk` (SPEC 4 "Churn risk", SPEC 7 "Churn").
//!
//! Levels are re-evaluated on every touchpoint and on one event-time timer
//! per customer, due at the next instant any condition can flip by time
//! alone: p_alive crossing 0.7 or 0.3 (solved from the closed form, to the
//! millisecond), 30 or 90 d after the last own touch, 30 d after the last
//! unsubscribe. No scan over customers ever happens.

use serde::{Deserialize, Serialize};

use crate::bgnbd::{self, BgNbd};
use crate::config::EngineConfig;
use crate::engine::timers::{LazyTimer, TimerKind, TimerQueue, TimerTarget};
use crate::model::{
    ChurnLevel, ChurnReason, EventTime, Payload, Survey, TouchType, Touchpoint, DAY_MS,
};

/// p_alive below this is `high` risk.
pub const P_HIGH: f64 = 0.3;
/// p_alive below this is `medium` risk.
pub const P_MEDIUM: f64 = 0.7;
/// Inactivity that makes a customer `medium`.
pub const INACTIVE_MEDIUM: i64 = 30 * DAY_MS;
/// Inactivity that makes a customer `high`.
pub const INACTIVE_HIGH: i64 = 90 * DAY_MS;
/// How long an unsubscribe keeps a customer `high`.
pub const UNSUBSCRIBE_WINDOW: i64 = 30 * DAY_MS;

const NONE: EventTime = EventTime::MIN;

/// Churn facts and level of one customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnState {
    /// Number of `order_placed` touches.
    pub orders: u32,
    /// Earliest order time (`MIN` when none).
    pub first_order: EventTime,
    /// Latest order time (`MIN` when none).
    pub last_order: EventTime,
    /// Latest own touch (`MIN` when none).
    pub last_activity: EventTime,
    /// Latest unsubscribe (`MIN` when none).
    pub last_unsubscribe: EventTime,
    /// Latest NPS answer by event time: (time, score); time `MIN` when none.
    pub nps: (EventTime, i8),
    /// Current level.
    pub level: ChurnLevel,
    /// When p_alive falls below 0.7 and 0.3 with no further order
    /// (`MAX` when never); recomputed when an order arrives.
    #[serde(default = "never")]
    pub crossings: [EventTime; 2],
    /// The single re-evaluation timer.
    pub timer: LazyTimer,
}

impl Default for ChurnState {
    fn default() -> Self {
        ChurnState {
            orders: 0,
            first_order: NONE,
            last_order: NONE,
            last_activity: NONE,
            last_unsubscribe: NONE,
            nps: (NONE, 0),
            level: ChurnLevel::Low,
            crossings: never(),
            timer: LazyTimer::default(),
        }
    }
}

fn never() -> [EventTime; 2] {
    [EventTime::MAX, EventTime::MAX]
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Level at the clock.
    pub level: ChurnLevel,
    /// p_alive at the clock (None before a first order).
    pub p_alive: Option<f64>,
    /// Whole days since the last own touch.
    pub days_inactive: Option<i64>,
    /// Conditions that hold (bit i = `ChurnReason::ALL[i]`).
    pub reasons: u8,
}

impl Evaluation {
    /// The conditions that hold, in SPEC order.
    pub fn reason_list(&self) -> Vec<ChurnReason> {
        ChurnReason::ALL
            .iter()
            .copied()
            .filter(|r| self.reasons & (1 << r.index()) != 0)
            .collect()
    }
}

fn model(cfg: &EngineConfig) -> BgNbd {
    BgNbd {
        r: cfg.r,
        alpha: cfg.alpha,
        a: cfg.a,
        b: cfg.b,
    }
}

impl ChurnState {
    fn optional(t: EventTime) -> Option<EventTime> {
        (t != NONE).then_some(t)
    }

    /// The first order time, if any.
    pub fn first_order_at(&self) -> Option<EventTime> {
        Self::optional(self.first_order)
    }

    /// The last order time, if any.
    pub fn last_order_at(&self) -> Option<EventTime> {
        Self::optional(self.last_order)
    }

    /// The last own-touch time, if any.
    pub fn last_activity_at(&self) -> Option<EventTime> {
        Self::optional(self.last_activity)
    }

    /// Records the facts a touchpoint carries.
    pub fn apply(&mut self, cfg: &EngineConfig, tp: &Touchpoint) {
        let t = tp.timestamp;
        if tp.kind.is_own() {
            self.last_activity = self.last_activity.max(t);
        }
        match tp.kind {
            TouchType::OrderPlaced => {
                self.orders = self.orders.saturating_add(1);
                self.first_order = if self.first_order == NONE {
                    t
                } else {
                    self.first_order.min(t)
                };
                self.last_order = self.last_order.max(t);
                self.crossings = [
                    self.crossing(cfg, P_MEDIUM).unwrap_or(EventTime::MAX),
                    self.crossing(cfg, P_HIGH).unwrap_or(EventTime::MAX),
                ];
            }
            TouchType::Unsubscribed => self.last_unsubscribe = self.last_unsubscribe.max(t),
            TouchType::SurveyResponse => {
                if let (Some(Survey::Nps), Some(score)) = (tp.survey, tp.score) {
                    if self.nps.0 == NONE || t >= self.nps.0 {
                        self.nps = (t, score as i8);
                    }
                }
            }
            _ => {}
        }
    }

    /// p_alive at `clock` (None before a first order, 1.0 with one).
    pub fn p_alive(&self, cfg: &EngineConfig, clock: EventTime) -> Option<f64> {
        if self.orders == 0 {
            return None;
        }
        let x = f64::from(self.orders - 1);
        let t_x = (self.last_order - self.first_order) as f64 / DAY_MS as f64;
        let big_t = (clock.max(self.last_order) - self.first_order) as f64 / DAY_MS as f64;
        Some(model(cfg).p_alive(x, t_x, big_t))
    }

    /// Evaluates every condition at `clock`.
    pub fn evaluate(&self, cfg: &EngineConfig, clock: EventTime) -> Evaluation {
        let p_alive = self.p_alive(cfg, clock);
        let inactive = Self::optional(self.last_activity).map(|la| clock - la);
        let unsubscribed =
            self.last_unsubscribe != NONE && clock - self.last_unsubscribe < UNSUBSCRIBE_WINDOW;
        let detractor = self.nps.0 != NONE && self.nps.1 <= 6;
        let p = p_alive.unwrap_or(1.0);
        let high = p < P_HIGH || inactive.is_some_and(|d| d >= INACTIVE_HIGH) || unsubscribed;
        let medium = p < P_MEDIUM || inactive.is_some_and(|d| d >= INACTIVE_MEDIUM) || detractor;
        let level = if high {
            ChurnLevel::High
        } else if medium {
            ChurnLevel::Medium
        } else {
            ChurnLevel::Low
        };
        let mut reasons = 0u8;
        let mut add = |r: ChurnReason| reasons |= 1 << r.index();
        if p < P_MEDIUM {
            add(ChurnReason::PAlive);
        }
        if inactive.is_some_and(|d| d >= INACTIVE_MEDIUM) {
            add(ChurnReason::Inactive);
        }
        if unsubscribed {
            add(ChurnReason::Unsubscribed);
        }
        if detractor {
            add(ChurnReason::NpsDetractor);
        }
        Evaluation {
            level,
            p_alive,
            days_inactive: inactive.map(|d| d.div_euclid(DAY_MS)),
            reasons,
        }
    }

    /// The next instant after `clock` at which a condition flips by time alone.
    pub fn next_flip(&self, cfg: &EngineConfig, clock: EventTime) -> Option<EventTime> {
        let mut next: Option<EventTime> = None;
        let mut consider = |t: EventTime| {
            if t > clock {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if self.last_activity != NONE {
            consider(self.last_activity.saturating_add(INACTIVE_MEDIUM));
            consider(self.last_activity.saturating_add(INACTIVE_HIGH));
        }
        if self.last_unsubscribe != NONE {
            consider(self.last_unsubscribe.saturating_add(UNSUBSCRIBE_WINDOW));
        }
        if self.orders >= 2 {
            // p_alive only falls with time: a crossing still ahead of the
            // clock is exactly one that has not happened yet.
            let _ = cfg;
            for t in self.crossings {
                if t != EventTime::MAX {
                    consider(t);
                }
            }
        }
        next
    }

    /// The first millisecond at which p_alive < `threshold` with no further
    /// order (p_alive falls monotonically with T).
    pub fn crossing(&self, cfg: &EngineConfig, threshold: f64) -> Option<EventTime> {
        let x = f64::from(self.orders.checked_sub(1)?);
        let t_x = (self.last_order - self.first_order) as f64 / DAY_MS as f64;
        let days = model(cfg).crossing_t(x, t_x, threshold)?;
        let guess = self.first_order as f64 + days * DAY_MS as f64;
        if !guess.is_finite() || guess.abs() > 1e17 {
            return None;
        }
        let below = |ms: EventTime| self.p_alive(cfg, ms).is_some_and(|p| p < threshold);
        let mut ms = (guess.ceil() as EventTime).max(self.last_order);
        // Correct float rounding of the closed form: a few steps at most.
        let mut steps = 0;
        while steps < 1_000 && !below(ms) {
            ms += 1;
            steps += 1;
        }
        while steps < 2_000 && ms > self.last_order && below(ms - 1) {
            ms -= 1;
            steps += 1;
        }
        Some(ms)
    }

    /// Re-evaluates at `clock`; returns the payload when the level changed,
    /// and re-arms the timer at the next flip — or at `expires`, the
    /// customer's state-TTL instant, if that comes first (the same timer
    /// then evicts the customer, so no customer needs a second entry).
    pub fn reevaluate(
        &mut self,
        cfg: &EngineConfig,
        clock: EventTime,
        timers: &mut TimerQueue,
        slot: u32,
        expires: EventTime,
    ) -> Option<Payload> {
        let ev = self.evaluate(cfg, clock);
        let previous = self.level;
        self.level = ev.level;
        let due = match self.next_flip(cfg, clock) {
            Some(due) if due < expires => due,
            _ => expires,
        };
        timers.set(
            &mut self.timer,
            due,
            TimerTarget {
                slot,
                kind: TimerKind::Churn,
            },
        );
        (ev.level != previous).then(|| Payload::ChurnRisk {
            level: ev.level,
            previous_level: previous,
            p_alive: ev.p_alive,
            days_inactive: ev.days_inactive,
            reasons: ev.reason_list(),
        })
    }
}

/// Re-exported for tests: p_alive's closed form.
pub use bgnbd::BgNbd as Model;
