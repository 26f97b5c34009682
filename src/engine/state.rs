//! Per-customer state: one compact struct holding each signal's piece.
//!
//! It is serialized (in the shape of state format 2) so that the changelog
//! can carry it; the timer queue entries are not part of it and are rebuilt
//! on restore.

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::EventTime;
use crate::signals::cart::{CartForm, CartFormOwned, CartState};
use crate::signals::churn::{Churn, ChurnState};
use crate::signals::config::EngineConfig;
use crate::signals::engagement::EngagementState;
use crate::signals::journey::JourneyState;
use crate::signals::survey::SurveyState;
use crate::signals::value::ValueState;
use crate::signals::{Lane, Lanes, Packed};

/// The parts of a customer's state that come and go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rare {
    /// `cart_abandoned`, `cart_recovered` (the closed carts live in the
    /// lanes)
    pub cart: CartState,
    /// `survey_trigger`
    pub survey: SurveyState,
}

impl Rare {
    /// Whether nothing is left that could matter.
    pub fn is_empty(&self) -> bool {
        self.cart.is_empty() && self.survey.is_empty()
    }
}

/// Everything touchstream remembers about one customer.
///
/// Serialized in the shape of state format 2 (see `CustomerForm`), so
/// that a changelog written by an earlier build restores, and one written
/// by this build restores on an earlier build (which reads the closed
/// carts' 48-bit hashes as different carts: each may be abandoned once
/// more there).
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    /// Newest event time seen for the customer.
    pub newest: EventTime,
    /// The customer's clock: max(newest, due time of the last fired timer).
    pub clock: EventTime,
    /// The customer id and the per-event lists, in one allocation: the
    /// last 32 accepted event ids (hashed), the own touches of the last
    /// 30 d (`order_attributed`, engagement channels), the carts abandoned
    /// and not closed yet, the open support contact, the churn facts, the
    /// outbound messages of the last 7 d (`contact_fatigue`).
    pub lists: Lanes,
    /// `engagement_score`
    pub engagement: EngagementState,
    /// `churn_risk`: what every customer has (the other facts are in the
    /// lanes; [`Customer::full_churn`] puts them together)
    pub churn: ChurnState,
    /// `journey_stage_changed`
    pub journey: JourneyState,
    /// Open carts, recent abandonments, survey clicks: allocated only while
    /// the customer has any (most customers, most of the time, do not), so
    /// they cost one pointer otherwise.
    pub rare: Option<Box<Rare>>,
    /// `customer_value`: the money of the customer's orders, allocated at
    /// the first order.
    pub value: Option<Box<ValueState>>,
    /// Channel of the previous own touch (channel-switch KPI).
    pub last_channel: Option<crate::model::Channel>,
    /// Which of the customer's two changelog slots (1 or 2; 0 = never
    /// written) holds this state. Each drain flips it, so a checkpoint that
    /// does not complete never overwrites the last complete one.
    pub slot: u8,
    /// Changed since the last changelog drain (not persisted).
    pub dirty: bool,
}

/// The changelog form of a customer as read (state format 2): the lists'
/// keys (`id`, `dedup`, `attribution`, `fatigue`) at the top level, the
/// closed carts and the open support contact under `rare`.
#[derive(Deserialize)]
struct CustomerForm {
    newest: EventTime,
    clock: EventTime,
    #[serde(flatten)]
    lists: Lanes,
    engagement: EngagementState,
    churn: Churn,
    journey: JourneyState,
    #[serde(default)]
    rare: Option<RareForm>,
    #[serde(default)]
    value: Option<Box<ValueState>>,
    #[serde(default)]
    last_channel: Option<crate::model::Channel>,
    #[serde(default)]
    slot: u8,
}

#[derive(Deserialize)]
struct RareForm {
    cart: CartFormOwned,
    survey: SurveyState,
    #[serde(default)]
    support_open: Option<Packed>,
}

#[derive(Serialize)]
struct RareOut<'a> {
    cart: CartForm<'a>,
    survey: &'a SurveyState,
    support_open: Option<Packed>,
}

impl Serialize for Customer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("newest", &self.newest)?;
        m.serialize_entry("clock", &self.clock)?;
        self.lists.serialize_entries(&mut m)?;
        m.serialize_entry("engagement", &self.engagement)?;
        m.serialize_entry("churn", &self.full_churn())?;
        m.serialize_entry("journey", &self.journey)?;
        let support_open = self.lists.support_open();
        let no_survey = SurveyState::default();
        let rare = (self.rare.is_some()
            || support_open.is_some()
            || !self.lists.lane(Lane::Closed).is_empty())
        .then(|| RareOut {
            cart: CartState::form(self.rare.as_deref().map(|r| &r.cart), &self.lists),
            survey: self.rare.as_deref().map_or(&no_survey, |r| &r.survey),
            support_open,
        });
        m.serialize_entry("rare", &rare)?;
        if let Some(v) = &self.value {
            m.serialize_entry("value", v)?;
        }
        m.serialize_entry("last_channel", &self.last_channel)?;
        m.serialize_entry("slot", &self.slot)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for Customer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = CustomerForm::deserialize(d)?;
        let mut lists = f.lists;
        let (churn, facts, n) = f.churn.parts();
        lists.set_lane(Lane::Churn, &facts[..n]);
        let rare = f.rare.and_then(|r| {
            lists.set_support_open(r.support_open);
            let rare = Rare {
                cart: CartState::from_form(r.cart, &mut lists),
                survey: r.survey,
            };
            (!rare.is_empty()).then(|| Box::new(rare))
        });
        Ok(Customer {
            newest: f.newest,
            clock: f.clock,
            lists,
            engagement: f.engagement,
            churn,
            journey: f.journey,
            rare,
            value: f.value,
            last_channel: f.last_channel,
            slot: f.slot,
            dirty: false,
        })
    }
}

/// The open support contact lives in the [`Lane::Support`] lane (one
/// entry at most): no allocation of the rare part for a contact that is
/// never resolved.
impl Lanes {
    /// The open support contact: its time and channel.
    pub fn support_open(&self) -> Option<Packed> {
        self.lane(Lane::Support).first().copied()
    }

    /// Opens (`Some`) or closes (`None`) the support contact.
    pub fn set_support_open(&mut self, p: Option<Packed>) {
        match (self.lane_mut(Lane::Support).first_mut(), p) {
            (Some(slot), Some(p)) => *slot = p,
            (None, Some(p)) => self.push(Lane::Support, p),
            (Some(_), None) => self.remove_front(Lane::Support, 1),
            (None, None) => {}
        }
    }
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
            value: None,
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
            self.rare.as_ref().map(|r| r.cart.is_empty()),
        ));
    }

    /// The customer id.
    pub fn id(&self) -> &str {
        self.lists.id()
    }

    /// The churn state whole: the inline part and the facts of the lanes.
    pub fn full_churn(&self) -> Churn {
        Churn::from_parts(&self.churn, self.lists.lane(Lane::Churn))
    }

    /// Stores back a churn state read by [`Customer::full_churn`] as
    /// `before` (the facts' lane is rewritten only if they changed).
    pub fn store_churn(&mut self, churn: &Churn, before: &Churn) {
        if churn.same_facts(before) {
            self.churn = churn.inline();
        } else {
            let (state, facts, n) = churn.parts();
            self.churn = state;
            self.lists.set_lane(Lane::Churn, &facts[..n]);
        }
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
            + self.value.as_ref().map_or(0, |v| v.heap_bytes())
            + 4
            + 1 // index entry: u32 slot, control byte
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::engine::Engine;
    use crate::model::{Channel, TouchType, Touchpoint, DAY_MS};
    use crate::signals::config::EngineConfig;

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
        expected.churn.timer.queued = crate::time::timers::TimerKey::NONE; // not persisted
        back.dirty = expected.dirty;
        assert_eq!(back, expected);
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }

    #[test]
    fn a_format_2_closed_cart_and_support_contact_are_read_into_the_lanes() {
        let cfg = Arc::new(EngineConfig::default());
        let mut e = Engine::new(cfg.clone());
        let mut out = Vec::new();
        let t = 1_767_261_600_000;
        let page =
            |id: &str, t: i64| Touchpoint::new(id, "c", Channel::Web, TouchType::PageView, t);
        e.on_touchpoint(&page("p1", t), &mut out);
        let mut json = serde_json::to_value(e.customer("c").expect("in state")).unwrap();
        // Format 2 kept both in the rare part; the closed cart as the full
        // 64-bit hash of its key (here the unnamed cart's).
        let unnamed = xxhash_rust::xxh3::xxh3_64(b"\0");
        let survey = serde_json::to_value(crate::signals::survey::SurveyState::default()).unwrap();
        let contact = serde_json::to_value(crate::signals::Packed::new(t, Channel::Chat)).unwrap();
        json["rare"] = serde_json::json!({
            "cart": { "carts": [], "abandonments": [], "closed": [unnamed] },
            "survey": survey,
            "support_open": contact,
        });
        let c: Customer = serde_json::from_value(json).unwrap();
        assert!(c.rare.is_none(), "nothing else in the rare part");
        assert_eq!(c.lists.lane(crate::signals::Lane::Closed).len(), 1);
        assert_eq!(
            c.lists.support_open().map(|p| (p.time(), p.channel())),
            Some((t, Channel::Chat))
        );
        let mut e = Engine::restore(cfg, e.meta(), [c]);
        // The unnamed cart was abandoned: not again until an order.
        let mut cart = Touchpoint::new("a1", "c", Channel::Web, TouchType::AddToCart, t + 1000);
        cart.value = Some(5.0);
        e.on_touchpoint(&cart, &mut out);
        out.clear();
        e.on_touchpoint(&page("p2", t + 2 * 3_600_000), &mut out);
        assert!(
            out.iter().all(|ev| ev.kind.as_str() != "cart_abandoned"),
            "{out:?}"
        );
        // The open contact is resolved: the KPI sees its duration.
        e.collect_kpis(true);
        let done = Touchpoint::new(
            "s1",
            "c",
            Channel::Chat,
            TouchType::SupportResolved,
            t + 7_203_000,
        );
        e.on_touchpoint(&done, &mut out);
        assert!(e
            .kpis()
            .iter()
            .any(|k| matches!(k, crate::engine::kpi::Kpi::SupportResolved { seconds, .. } if *seconds == 7203.0)));
    }
}
