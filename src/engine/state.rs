//! Per-customer state: one compact struct holding each signal's piece.
//!
//! It derives serde so that the changelog can carry it; the timer queue
//! entries are not part of it and are rebuilt on restore.

use serde::{Deserialize, Serialize};

use crate::config::EngineConfig;
use crate::model::EventTime;
use crate::signals::cart::CartState;
use crate::signals::churn::ChurnState;
use crate::signals::engagement::EngagementState;
use crate::signals::journey::JourneyState;
use crate::signals::survey::SurveyState;
use crate::signals::Lanes;

/// The parts of a customer's state that come and go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rare {
    /// `cart_abandoned`, `cart_recovered`
    pub cart: CartState,
    /// `survey_trigger`
    pub survey: SurveyState,
    /// Open support contact: (time, channel), for the resolution-time KPI.
    #[serde(default)]
    pub support_open: Option<crate::signals::Packed>,
}

impl Rare {
    /// Whether nothing is left that could matter.
    pub fn is_empty(&self) -> bool {
        self.cart.is_empty() && self.survey.is_empty() && self.support_open.is_none()
    }
}

/// Everything touchstream remembers about one customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// Newest event time seen for the customer.
    pub newest: EventTime,
    /// The customer's clock: max(newest, due time of the last fired timer).
    pub clock: EventTime,
    /// The customer id and the per-event lists, in one allocation (the
    /// `id` key, then): the last 32 accepted event
    /// ids (hashed), the own touches of the last 30 d (`order_attributed`,
    /// engagement channels), the outbound messages of the last 7 d
    /// (`contact_fatigue`). Persisted as the `dedup`, `attribution` and
    /// `fatigue` keys of state format 2.
    #[serde(flatten)]
    pub lists: Lanes,
    /// `engagement_score`
    pub engagement: EngagementState,
    /// `churn_risk`
    pub churn: ChurnState,
    /// `journey_stage_changed`
    pub journey: JourneyState,
    /// Carts, survey clicks, an open support contact: allocated only
    /// while the customer has any (most customers, most of the time, do
    /// not), so they cost one pointer otherwise.
    #[serde(default)]
    pub rare: Option<Box<Rare>>,
    /// Channel of the previous own touch (channel-switch KPI).
    #[serde(default)]
    pub last_channel: Option<crate::model::Channel>,
    /// Which of the customer's two changelog slots (1 or 2; 0 = never
    /// written) holds this state. Each drain flips it, so a checkpoint that
    /// does not complete never overwrites the last complete one.
    #[serde(default)]
    pub slot: u8,
    /// Changed since the last changelog drain (not persisted).
    #[serde(skip)]
    pub dirty: bool,
}

impl Customer {
    /// A customer seen for the first time at `t`.
    pub fn new(id: &str, t: EventTime) -> Self {
        Customer {
            newest: t,
            clock: t,
            lists: Lanes::new(id),
            engagement: EngagementState::default(),
            churn: ChurnState::default(),
            journey: JourneyState::default(),
            rare: None,
            last_channel: None,
            slot: 0,
            dirty: false,
        }
    }

    /// Loads one word of each of the customer's heap parts up front: the
    /// loads are independent, so the CPU overlaps their cache misses
    /// instead of taking them one after another as the signals run.
    #[inline]
    pub fn prefetch(&self) {
        std::hint::black_box((
            self.lists.touch(),
            self.rare.as_ref().map(|r| r.support_open.is_some()),
        ));
    }

    /// The customer id.
    pub fn id(&self) -> &str {
        self.lists.id()
    }

    /// The rare part, allocated on first use.
    pub fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Forgets what can no longer matter once nothing older than `horizon`
    /// (watermark − allowed lateness) can arrive, and frees the rare part
    /// when nothing is left in it.
    pub fn tidy(&mut self, cfg: &EngineConfig, horizon: EventTime) {
        if let Some(r) = &mut self.rare {
            r.cart.prune(cfg, horizon);
            r.survey.forget(cfg, horizon);
            if r.is_empty() {
                self.rare = None;
            }
        }
    }

    /// Forgets, when the churn timer finds the customer quiet, what the
    /// next touchpoints can no longer need: touches too old for any order
    /// that is not too late (`horizon` = watermark − allowed lateness), and
    /// outbound messages out of the 7-day window at the customer's clock.
    /// What the snapshot reads at the customer's newest event is kept.
    pub fn tidy_quiet(&mut self, cfg: &EngineConfig, horizon: EventTime) {
        self.lists.forget_touches(
            horizon.saturating_sub(crate::signals::attribution::WINDOW),
            self.newest,
        );
        self.lists.forget_messages(self.clock);
        self.lists.compact();
        self.tidy(cfg, horizon);
    }

    /// Approximate bytes this customer occupies: the struct, its heap
    /// allocations, and its entry in the partition's id index.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.lists.heap_bytes()
            + self.rare.as_ref().map_or(0, |r| {
                std::mem::size_of::<Rare>() + r.cart.heap_bytes() + r.survey.heap_bytes()
            })
            + 4
            + 1 // index entry: u32 slot, control byte
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::EngineConfig;
    use crate::engine::Engine;
    use crate::model::{Channel, TouchType, Touchpoint, DAY_MS};

    use super::Customer;

    #[test]
    fn a_format_2_customer_reads_back_the_same() {
        let mut e = Engine::new(Arc::new(EngineConfig::default()));
        let mut out = Vec::new();
        let kinds = [
            TouchType::PageView,
            TouchType::MessageSent,
            TouchType::OrderPlaced,
            TouchType::MessageSent,
            TouchType::AddToCart,
            TouchType::OrderPlaced,
        ];
        for i in 0..40i64 {
            let kind = kinds[i as usize % kinds.len()];
            let tp = Touchpoint::new(
                format!("e{i}"),
                "c",
                Channel::ALL[i as usize % 12],
                kind,
                1_767_261_600_000 + i * DAY_MS / 3,
            );
            e.on_touchpoint(&tp, &mut out);
        }
        let c = e.customer("c").expect("in state").clone();
        let json = serde_json::to_value(&c).unwrap();
        for key in ["dedup", "attribution", "fatigue", "churn", "engagement"] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        // Format 2 wrote a fatigue flag, a ring position and both p_alive
        // crossings; a reader of this format takes all of them.
        assert_eq!(
            json["fatigue"]["disarmed"],
            serde_json::json!(false),
            "readable by older builds"
        );
        let mut old = json.clone();
        old["fatigue"]["disarmed"] = serde_json::json!(true);
        let mut ring: Vec<u64> = serde_json::from_value(old["dedup"]["ring"].clone()).unwrap();
        assert_eq!(ring.len(), 32);
        ring.rotate_right(7);
        old["dedup"] = serde_json::json!({ "ring": ring, "next": 7 });
        let crossings = old["churn"]["crossings"].clone();
        assert_eq!(crossings[1], serde_json::json!(i64::MAX), "{crossings}");
        let mut back: Customer = serde_json::from_value(old).unwrap();
        let mut expected = c;
        expected.churn.timer.queued = crate::engine::timers::TimerKey::NONE; // not persisted
        back.dirty = expected.dirty;
        assert_eq!(back, expected);
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }
}
