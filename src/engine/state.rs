//! Per-customer state: one compact struct holding each signal's piece.
//!
//! It derives serde so that the changelog can carry it; the timer queue
//! entries are not part of it and are rebuilt on restore.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dedup::Dedup;
use crate::config::EngineConfig;
use crate::model::EventTime;
use crate::signals::attribution::AttributionState;
use crate::signals::cart::CartState;
use crate::signals::churn::ChurnState;
use crate::signals::engagement::EngagementState;
use crate::signals::fatigue::FatigueState;
use crate::signals::journey::JourneyState;
use crate::signals::survey::SurveyState;

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
    /// The customer id.
    pub id: Arc<str>,
    /// Newest event time seen for the customer.
    pub newest: EventTime,
    /// The customer's clock: max(newest, due time of the last fired timer).
    pub clock: EventTime,
    /// Last 32 accepted event ids (hashed).
    pub dedup: Dedup,
    /// `engagement_score`
    pub engagement: EngagementState,
    /// `churn_risk`
    pub churn: ChurnState,
    /// `journey_stage_changed`
    pub journey: JourneyState,
    /// `contact_fatigue`
    pub fatigue: FatigueState,
    /// `order_attributed`
    pub attribution: AttributionState,
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
    pub fn new(id: Arc<str>, t: EventTime) -> Self {
        Customer {
            id,
            newest: t,
            clock: t,
            dedup: Dedup::default(),
            engagement: EngagementState::default(),
            churn: ChurnState::default(),
            journey: JourneyState::default(),
            fatigue: FatigueState::default(),
            attribution: AttributionState::default(),
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
            self.dedup.touch(),
            self.attribution.touch(),
            self.fatigue.touch(),
            self.rare.as_ref().map(|r| r.support_open.is_some()),
        ));
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
        self.attribution.forget(
            horizon.saturating_sub(crate::signals::attribution::WINDOW),
            self.newest,
        );
        self.fatigue.forget(self.clock);
        self.tidy(cfg, horizon);
    }

    /// Approximate bytes this customer occupies: the struct, its heap
    /// allocations, and its entry in the partition's id index.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.id.len()
            + 16 // Arc header
            + self.dedup.heap_bytes()
            + self.rare.as_ref().map_or(0, |r| {
                std::mem::size_of::<Rare>() + r.cart.heap_bytes() + r.survey.heap_bytes()
            })
            + self.fatigue.heap_bytes()
            + self.attribution.heap_bytes()
            + 4 + 1 // index entry: u32 slot, control byte
    }
}
