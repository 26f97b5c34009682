//! `churn_risk` (SPEC 4 "Churn risk", SPEC 7 "Churn").
//!
//! Levels are re-evaluated on every touchpoint and on one event-time timer
//! per customer, due at the next instant any condition can flip by time
//! alone: p_alive crossing 0.7 or 0.3 (solved from the closed form, to the
//! millisecond), 30 or 90 d after the last own touch, 30 d after the last
//! unsubscribe. No scan over customers ever happens.

use serde::{Deserialize, Serialize};

use crate::bgnbd;
use crate::model::MAX_ABS_TIMESTAMP;
use crate::model::{
    ChurnLevel, ChurnReason, EventTime, Payload, Survey, TouchType, Touchpoint, DAY_MS,
};
use crate::signals::config::EngineConfig;
use crate::signals::Packed;
use crate::time::timers::{LazyTimer, TimerKind, TimerQueue, TimerTarget};

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

/// The part of a customer's churn state that everyone has, kept inline
/// in the customer. The rest (order times, the pending p_alive crossing,
/// the latest unsubscribe and NPS answer) most customers have little or
/// none of: it lives in the customer's [`Lane::Churn`](crate::signals::Lane::Churn) lane, one 6-byte
/// entry per fact present. [`Churn`] is the two put together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChurnState {
    /// Number of `order_placed` touches.
    pub orders: u32,
    /// Current level.
    pub level: ChurnLevel,
    /// Latest own touch (`MIN` when none).
    pub last_activity: EventTime,
    /// The single re-evaluation timer.
    pub timer: LazyTimer,
}

impl Default for ChurnState {
    fn default() -> Self {
        Churn::default().parts().0
    }
}

/// Tags of the facts in [`Lane::Churn`](crate::signals::Lane::Churn): 0-10 is an NPS answer with that
/// score, then the others.
const TAG_UNSUBSCRIBE: u8 = 11;
const TAG_FIRST_ORDER: u8 = 12;
const TAG_LAST_ORDER: u8 = 13;
const TAG_CROSSING_MEDIUM: u8 = 14;
const TAG_CROSSING_HIGH: u8 = 15;
const MAX_NPS: i8 = 10;

/// The facts of [`Lane::Churn`](crate::signals::Lane::Churn), at most this many.
pub const FACTS: usize = 5;

/// Churn facts and level of one customer (the working form: see
/// [`ChurnState`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "Persisted", from = "Persisted")]
pub struct Churn {
    /// Number of `order_placed` touches.
    pub orders: u32,
    /// Latest NPS answer's score (meaningful when `nps_at` is set).
    pub nps_score: i8,
    /// Current level.
    pub level: ChurnLevel,
    /// Which p_alive threshold `next_crossing` is for: false = 0.7, true = 0.3.
    crossing_high: bool,
    /// Earliest order time (`MIN` when none).
    pub first_order: EventTime,
    /// Latest order time (`MIN` when none).
    pub last_order: EventTime,
    /// Latest own touch (`MIN` when none).
    pub last_activity: EventTime,
    /// Latest unsubscribe (`MIN` when none).
    pub last_unsubscribe: EventTime,
    /// Time of the latest NPS answer by event time (`MIN` when none).
    pub nps_at: EventTime,
    /// When p_alive next falls below a threshold (0.7, then 0.3) with no
    /// further order (`MAX` when never). Set when an order arrives; the
    /// 0.3 crossing is solved only once the 0.7 one is behind the clock.
    next_crossing: EventTime,
    /// The single re-evaluation timer.
    pub timer: LazyTimer,
}

/// The changelog form (the shape of state format 2).
#[derive(Serialize, Deserialize)]
struct Persisted {
    orders: u32,
    first_order: EventTime,
    last_order: EventTime,
    last_activity: EventTime,
    last_unsubscribe: EventTime,
    nps: (EventTime, i8),
    level: ChurnLevel,
    /// The 0.7 and 0.3 crossings; a crossing not solved yet is `MAX` (the
    /// 0.3 one is solved again on demand), a crossing behind the clock is
    /// `MIN`.
    #[serde(default = "never")]
    crossings: [EventTime; 2],
    timer: LazyTimer,
}

impl From<Churn> for Persisted {
    fn from(c: Churn) -> Self {
        Persisted {
            orders: c.orders,
            first_order: c.first_order,
            last_order: c.last_order,
            last_activity: c.last_activity,
            last_unsubscribe: c.last_unsubscribe,
            nps: (c.nps_at, c.nps_score),
            level: c.level,
            crossings: if c.crossing_high {
                [EventTime::MIN, c.next_crossing]
            } else {
                [c.next_crossing, EventTime::MAX]
            },
            timer: c.timer,
        }
    }
}

impl From<Persisted> for Churn {
    fn from(p: Persisted) -> Self {
        let high = p.crossings[0] == EventTime::MIN;
        Churn {
            orders: p.orders,
            nps_score: p.nps.1,
            level: p.level,
            crossing_high: high,
            first_order: p.first_order,
            last_order: p.last_order,
            last_activity: p.last_activity,
            last_unsubscribe: p.last_unsubscribe,
            nps_at: p.nps.0,
            next_crossing: p.crossings[usize::from(high)],
            timer: p.timer,
        }
    }
}

impl Default for Churn {
    fn default() -> Self {
        Churn {
            orders: 0,
            nps_score: 0,
            level: ChurnLevel::Low,
            crossing_high: false,
            first_order: NONE,
            last_order: NONE,
            last_activity: NONE,
            last_unsubscribe: NONE,
            nps_at: NONE,
            next_crossing: EventTime::MAX,
            timer: LazyTimer::default(),
        }
    }
}

impl Churn {
    /// Puts the inline part and the facts of [`Lane::Churn`](crate::signals::Lane::Churn) together.
    pub fn from_parts(state: &ChurnState, facts: &[Packed]) -> Churn {
        let mut c = Churn {
            orders: state.orders,
            level: state.level,
            last_activity: state.last_activity,
            timer: state.timer,
            ..Churn::default()
        };
        for p in facts {
            let t = p.time();
            match p.tag() {
                TAG_UNSUBSCRIBE => c.last_unsubscribe = t,
                TAG_FIRST_ORDER => c.first_order = t,
                TAG_LAST_ORDER => c.last_order = t,
                TAG_CROSSING_MEDIUM | TAG_CROSSING_HIGH => {
                    c.next_crossing = t;
                    c.crossing_high = p.tag() == TAG_CROSSING_HIGH;
                }
                score => {
                    c.nps_at = t;
                    c.nps_score = score as i8;
                }
            }
        }
        c
    }

    /// The inline part.
    pub fn inline(&self) -> ChurnState {
        ChurnState {
            orders: self.orders,
            level: self.level,
            last_activity: self.last_activity,
            timer: self.timer,
        }
    }

    /// Whether the facts [`Churn::parts`] puts in the lane are those of
    /// `other`.
    pub fn same_facts(&self, other: &Churn) -> bool {
        let facts = |c: &Churn| {
            (
                c.first_order,
                c.last_order,
                c.last_unsubscribe,
                c.nps_at,
                c.nps_score,
                c.next_crossing,
                c.crossing_high,
            )
        };
        facts(self) == facts(other)
    }

    /// Splits into the inline part and the facts for [`Lane::Churn`](crate::signals::Lane::Churn)
    /// (`facts[..n]`). A crossing beyond the times an event can carry
    /// ([`MAX_ABS_TIMESTAMP`]) is never reached by a watermark: kept as
    /// none.
    pub fn parts(&self) -> (ChurnState, [Packed; FACTS], usize) {
        let state = self.inline();
        let mut facts = [Packed::tagged(0, 0); FACTS];
        let mut n = 0;
        let mut put = |t: EventTime, tag: u8| {
            if (-MAX_ABS_TIMESTAMP..MAX_ABS_TIMESTAMP).contains(&t) {
                facts[n] = Packed::tagged(t, tag);
                n += 1;
            }
        };
        if self.nps_at != NONE {
            put(self.nps_at, self.nps_score.clamp(0, MAX_NPS) as u8);
        }
        put(self.last_unsubscribe, TAG_UNSUBSCRIBE);
        put(self.first_order, TAG_FIRST_ORDER);
        put(self.last_order, TAG_LAST_ORDER);
        if self.next_crossing != EventTime::MAX {
            let tag = if self.crossing_high {
                TAG_CROSSING_HIGH
            } else {
                TAG_CROSSING_MEDIUM
            };
            put(self.next_crossing, tag);
        }
        (state, facts, n)
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

impl Churn {
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
                self.next_crossing = self.crossing(cfg, P_MEDIUM).unwrap_or(EventTime::MAX);
                self.crossing_high = false;
            }
            TouchType::Unsubscribed => self.last_unsubscribe = self.last_unsubscribe.max(t),
            TouchType::SurveyResponse => {
                if let (Some(Survey::Nps), Some(score)) = (tp.survey, tp.score) {
                    if self.nps_at == NONE || t >= self.nps_at {
                        self.nps_at = t;
                        self.nps_score = score as i8;
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
        Some(cfg.bgnbd().p_alive(x, t_x, big_t))
    }

    /// Evaluates every condition at `clock`.
    pub fn evaluate(&self, cfg: &EngineConfig, clock: EventTime) -> Evaluation {
        let p_alive = self.p_alive(cfg, clock);
        let inactive = Self::optional(self.last_activity).map(|la| clock - la);
        let unsubscribed =
            self.last_unsubscribe != NONE && clock - self.last_unsubscribe < UNSUBSCRIBE_WINDOW;
        let detractor = self.nps_at != NONE && self.nps_score <= 6;
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
            let t = self.pending_crossing(cfg, clock);
            if t != EventTime::MAX {
                consider(t);
            }
        }
        next
    }

    /// The next crossing not behind `clock`: the cached one, or the 0.3
    /// crossing solved now once the 0.7 one is behind (0.7 comes first).
    fn pending_crossing(&self, cfg: &EngineConfig, clock: EventTime) -> EventTime {
        if self.crossing_high || self.next_crossing > clock || self.next_crossing == EventTime::MAX
        {
            self.next_crossing
        } else {
            self.crossing(cfg, P_HIGH).unwrap_or(EventTime::MAX)
        }
    }

    /// The first millisecond at which p_alive < `threshold` with no further
    /// order (p_alive falls monotonically with T).
    pub fn crossing(&self, cfg: &EngineConfig, threshold: f64) -> Option<EventTime> {
        let x = f64::from(self.orders.checked_sub(1)?);
        let t_x = (self.last_order - self.first_order) as f64 / DAY_MS as f64;
        let days = cfg.bgnbd().crossing_t(x, t_x, threshold)?;
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
        if self.orders >= 2 && !self.crossing_high && self.next_crossing <= clock {
            self.next_crossing = self.pending_crossing(cfg, clock);
            self.crossing_high = true;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Channel, Touchpoint};

    fn two_orders(cfg: &EngineConfig) -> Churn {
        let mut c = Churn::default();
        for (i, t) in [0, 7 * DAY_MS].into_iter().enumerate() {
            let tp = Touchpoint::new(i.to_string(), "c", Channel::Web, TouchType::OrderPlaced, t);
            c.apply(cfg, &tp);
        }
        c
    }

    #[test]
    fn the_high_crossing_is_solved_once_the_medium_one_is_behind() {
        let cfg = EngineConfig::default();
        let mut c = two_orders(&cfg);
        let medium = c.crossing(&cfg, P_MEDIUM).unwrap();
        let high = c.crossing(&cfg, P_HIGH).unwrap();
        assert!(medium < high);
        assert_eq!(c.next_flip(&cfg, 7 * DAY_MS), Some(medium));
        // Past the 0.7 crossing (and before 30 d of inactivity, which the
        // next flip would otherwise be): the 0.3 one is next, solved then.
        c.last_activity = medium;
        assert_eq!(
            c.next_flip(&cfg, medium),
            Some(high.min(medium + INACTIVE_MEDIUM))
        );
        let mut q = TimerQueue::new();
        c.reevaluate(&cfg, medium, &mut q, 0, EventTime::MAX);
        assert!(c.crossing_high);
        assert_eq!(c.next_crossing, high);
    }

    #[test]
    fn changelog_form_keeps_the_format_2_shape_both_ways() {
        let cfg = EngineConfig::default();
        let c = two_orders(&cfg);
        let medium = c.crossing(&cfg, P_MEDIUM).unwrap();
        let high = c.crossing(&cfg, P_HIGH).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["crossings"], serde_json::json!([medium, EventTime::MAX]));
        assert_eq!(v["nps"], serde_json::json!([EventTime::MIN, 0]));
        assert_eq!(serde_json::from_value::<Churn>(v.clone()).unwrap(), c);
        // Format 2 wrote both crossings: the first is taken, the second is
        // solved again when due (to the same value).
        let mut old = v;
        old["crossings"] = serde_json::json!([medium, high]);
        let back: Churn = serde_json::from_value(old).unwrap();
        assert_eq!(back, c);
        // Past the 0.7 crossing.
        let mut later = c.clone();
        let mut q = TimerQueue::new();
        later.last_activity = medium;
        later.reevaluate(&cfg, medium, &mut q, 0, EventTime::MAX);
        let v = serde_json::to_value(&later).unwrap();
        assert_eq!(v["crossings"], serde_json::json!([EventTime::MIN, high]));
        later.timer.queued = crate::time::timers::TimerKey::NONE; // not persisted
        assert_eq!(serde_json::from_value::<Churn>(v).unwrap(), later);
    }

    #[test]
    fn the_inline_part_and_the_lane_facts_make_the_whole_again() {
        let cfg = EngineConfig::default();
        let whole = |c: &Churn| {
            let (state, facts, n) = c.parts();
            Churn::from_parts(&state, &facts[..n])
        };
        let fresh = Churn::default();
        assert_eq!(fresh.parts().2, 0, "nothing in the lane");
        assert_eq!(whole(&fresh), fresh);
        let mut c = two_orders(&cfg);
        assert_eq!(c.parts().2, 3, "first and last order, the 0.7 crossing");
        assert_eq!(whole(&c), c);
        for (i, (kind, score)) in [
            (TouchType::Unsubscribed, None),
            (TouchType::SurveyResponse, Some(0)),
            (TouchType::SurveyResponse, Some(10)),
        ]
        .into_iter()
        .enumerate()
        {
            let mut tp = Touchpoint::new(format!("f{i}"), "c", Channel::Web, kind, 9 * DAY_MS);
            tp.survey = score.map(|_| Survey::Nps);
            tp.score = score;
            c.apply(&cfg, &tp);
            assert_eq!(whole(&c), c, "after {kind:?} {score:?}");
        }
        assert_eq!((c.nps_score, c.parts().2), (10, 5));
        // Past the 0.7 crossing: the 0.3 one, flagged.
        let medium = c.next_crossing;
        c.last_activity = medium;
        c.reevaluate(&cfg, medium, &mut TimerQueue::new(), 0, EventTime::MAX);
        assert!(c.crossing_high);
        assert_eq!(whole(&c), c);
        // A crossing no event time can reach is kept as none.
        c.next_crossing = MAX_ABS_TIMESTAMP;
        assert_eq!(whole(&c).next_crossing, EventTime::MAX);
        // The earliest time an event can carry is kept (found in review).
        c.first_order = -MAX_ABS_TIMESTAMP;
        c.nps_at = -MAX_ABS_TIMESTAMP;
        assert_eq!(whole(&c).first_order, -MAX_ABS_TIMESTAMP);
        assert_eq!(whole(&c).nps_at, -MAX_ABS_TIMESTAMP);
    }
}
