//! What the engine emits: [`DerivedEvent`] (common fields, a
//! deterministic [`EventId`], the type-specific [`Payload`]), the
//! [`DerivedType`]s in SPEC table order, and the payloads' own types
//! (churn levels and reasons, journey stages, channel sets, attribution
//! weights). Their JSON form is their `Serialize`.

use std::fmt;

use serde::Serialize;

use super::{Channel, EventTime, Survey};

name_enum!(
    /// Churn risk level.
    ChurnLevel, fallback = ChurnLevel::Low, [
        Low => "low",
        Medium => "medium",
        High => "high",
    ]
);

name_enum!(
    /// A condition behind a churn level, in SPEC order.
    ChurnReason, fallback = ChurnReason::PAlive, [
        PAlive => "p_alive",
        Inactive => "inactive",
        Unsubscribed => "unsubscribed",
        NpsDetractor => "nps_detractor",
    ]
);

name_enum!(
    /// Journey stage. `at_risk` is entered from any stage when churn becomes high.
    JourneyStage, fallback = JourneyStage::Awareness, [
        Awareness => "awareness",
        Engagement => "engagement",
        Transaction => "transaction",
        Retention => "retention",
        AtRisk => "at_risk",
    ]
);

/// The derived event types, in the order of the SPEC table (which is also
/// the order events of one cause are emitted in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DerivedType {
    /// `engagement_score`
    EngagementScore,
    /// `cart_abandoned`
    CartAbandoned,
    /// `cart_recovered`
    CartRecovered,
    /// `churn_risk`
    ChurnRisk,
    /// `journey_stage_changed`
    JourneyStageChanged,
    /// `survey_trigger`
    SurveyTrigger,
    /// `contact_fatigue`
    ContactFatigue,
    /// `order_attributed`
    OrderAttributed,
    /// `customer_value`
    CustomerValue,
}

impl DerivedType {
    /// Every type in SPEC table order.
    pub const ALL: [DerivedType; 9] = [
        DerivedType::EngagementScore,
        DerivedType::CartAbandoned,
        DerivedType::CartRecovered,
        DerivedType::ChurnRisk,
        DerivedType::JourneyStageChanged,
        DerivedType::SurveyTrigger,
        DerivedType::ContactFatigue,
        DerivedType::OrderAttributed,
        DerivedType::CustomerValue,
    ];

    /// The SPEC name (also the topic suffix and Avro schema file stem).
    pub fn as_str(self) -> &'static str {
        match self {
            DerivedType::EngagementScore => "engagement_score",
            DerivedType::CartAbandoned => "cart_abandoned",
            DerivedType::CartRecovered => "cart_recovered",
            DerivedType::ChurnRisk => "churn_risk",
            DerivedType::JourneyStageChanged => "journey_stage_changed",
            DerivedType::SurveyTrigger => "survey_trigger",
            DerivedType::ContactFatigue => "contact_fatigue",
            DerivedType::OrderAttributed => "order_attributed",
            DerivedType::CustomerValue => "customer_value",
        }
    }
}

impl fmt::Display for DerivedType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of channels (a bitmask), listed sorted by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ChannelSet(u16);

impl ChannelSet {
    /// The empty set.
    pub const EMPTY: ChannelSet = ChannelSet(0);

    /// Adds a channel.
    pub fn insert(&mut self, c: Channel) {
        self.0 |= 1 << c as u16;
    }

    /// Whether the set holds `c`.
    pub fn contains(self, c: Channel) -> bool {
        self.0 & (1 << c as u16) != 0
    }

    /// Number of channels.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The channels, sorted by name.
    pub fn iter(self) -> impl Iterator<Item = Channel> {
        BY_NAME.iter().copied().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Channel> for ChannelSet {
    fn from_iter<I: IntoIterator<Item = Channel>>(it: I) -> Self {
        let mut s = ChannelSet::EMPTY;
        for c in it {
            s.insert(c);
        }
        s
    }
}

/// Channels sorted by name.
const BY_NAME: [Channel; 12] = [
    Channel::CallCenter,
    Channel::Chat,
    Channel::DirectMail,
    Channel::Email,
    Channel::Loyalty,
    Channel::MobileApp,
    Channel::Other,
    Channel::Push,
    Channel::Sms,
    Channel::Social,
    Channel::Store,
    Channel::Web,
];

impl Serialize for ChannelSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// A derived event's id: 128 bits, written as a hyphenated UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u128);

impl EventId {
    /// The id as hyphenated lower-case UUID text, written into `buf`
    /// (no allocation: one per derived event on the service's hot path).
    pub fn hyphenated<'b>(&self, buf: &'b mut [u8; 36]) -> &'b str {
        uuid::Uuid::from_u128(self.0).hyphenated().encode_lower(buf)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_u128(self.0).hyphenated(), f)
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Channel → weight, listed sorted by channel name; a fixed array, so an
/// attribution allocates nothing per channel.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Weights {
    set: ChannelSet,
    w: [f64; 12],
}

impl Weights {
    /// No channel.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `v` to the channel's weight.
    pub fn add(&mut self, c: Channel, v: f64) {
        if self.set.contains(c) {
            self.w[c as usize] += v;
        } else {
            self.set.insert(c);
            self.w[c as usize] = v;
        }
    }

    /// The channel's weight, if it has one.
    pub fn get(&self, c: Channel) -> Option<f64> {
        self.set.contains(c).then(|| self.w[c as usize])
    }

    /// Channels with a weight.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no channel has a weight.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// (channel name, weight), sorted by channel name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.set.iter().map(|c| (c.as_str(), self.w[c as usize]))
    }
}

impl Serialize for Weights {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Attribution weights of one order under each model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributionModels {
    /// All credit to the latest touch.
    pub last_touch: Weights,
    /// All credit to the earliest touch.
    pub first_touch: Weights,
    /// Equal credit to every touch.
    pub linear: Weights,
    /// Credit halving every 7 days before the order.
    pub time_decay: Weights,
    /// 40 % first, 40 % last, 20 % spread over the middle.
    pub position_based: Weights,
}

/// The type-specific payload of a derived event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    /// See SPEC 4, `engagement_score`.
    EngagementScore {
        /// Score in [0, 100).
        score: f64,
        /// Last emitted score (null at first).
        previous: Option<f64>,
        /// Distinct channels of own touches in the last 30 d, sorted.
        channels: ChannelSet,
    },
    /// See SPEC 4, `cart_abandoned`.
    CartAbandoned {
        /// The cart (null for the unnamed cart).
        cart_id: Option<String>,
        /// Checkout value, else adds minus removes floored at 0.
        cart_value: f64,
        /// Currency of the latest cart activity carrying one.
        currency: Option<String>,
        /// Channel of the last cart activity.
        channel: Channel,
        /// Time of the last cart activity.
        last_activity_at: EventTime,
    },
    /// See SPEC 4, `cart_recovered`.
    CartRecovered {
        /// The recovered cart.
        cart_id: Option<String>,
        /// The order that recovered it.
        order_id: Option<String>,
        /// The order's value.
        order_value: Option<f64>,
        /// When the cart was abandoned.
        abandoned_at: EventTime,
    },
    /// See SPEC 4, `churn_risk`.
    ChurnRisk {
        /// New level.
        level: ChurnLevel,
        /// Level before.
        previous_level: ChurnLevel,
        /// BG/NBD probability alive (null before a first order).
        p_alive: Option<f64>,
        /// Whole days since the last own touch (null without one).
        days_inactive: Option<i64>,
        /// Conditions that hold, in SPEC order.
        reasons: Vec<ChurnReason>,
    },
    /// See SPEC 4, `journey_stage_changed`.
    JourneyStageChanged {
        /// Stage before (null at first).
        from: Option<JourneyStage>,
        /// Stage after.
        to: JourneyStage,
        /// Channel of the causing touchpoint (null for a timer).
        channel: Option<Channel>,
    },
    /// See SPEC 4, `survey_trigger`.
    SurveyTrigger {
        /// Always `nps`.
        survey: Survey,
        /// Campaign that was clicked.
        campaign_id: String,
        /// Channel of the click.
        channel: Channel,
        /// Time of the click.
        clicked_at: EventTime,
    },
    /// See SPEC 4, `contact_fatigue`.
    ContactFatigue {
        /// `message_sent` count in (clock − 7 d, clock].
        messages_7d: u32,
        /// Channels of the counted messages, sorted.
        channels: ChannelSet,
    },
    /// See SPEC 4, `order_attributed`.
    OrderAttributed {
        /// The order.
        order_id: Option<String>,
        /// The order's value.
        order_value: Option<f64>,
        /// The order's currency.
        currency: Option<String>,
        /// The order's own channel.
        channel: Channel,
        /// Weights per model (boxed: it is large and one event in many).
        models: Box<AttributionModels>,
    },
    /// See SPEC 4, `customer_value`.
    CustomerValue {
        /// Orders so far.
        orders: u32,
        /// Sum of the orders' values (returns not deducted).
        total_spend: f64,
        /// Mean value of the orders carrying one (null without one).
        average_order_value: Option<f64>,
        /// BG/NBD expected orders over the horizon.
        expected_orders: f64,
        /// Discounted expected order value over the horizon.
        predicted_clv: f64,
        /// Currency of the latest order carrying one.
        currency: Option<String>,
        /// BG/NBD probability alive at the customer's clock.
        p_alive: f64,
    },
}

impl Payload {
    /// The derived type of this payload.
    pub fn derived_type(&self) -> DerivedType {
        match self {
            Payload::EngagementScore { .. } => DerivedType::EngagementScore,
            Payload::CartAbandoned { .. } => DerivedType::CartAbandoned,
            Payload::CartRecovered { .. } => DerivedType::CartRecovered,
            Payload::ChurnRisk { .. } => DerivedType::ChurnRisk,
            Payload::JourneyStageChanged { .. } => DerivedType::JourneyStageChanged,
            Payload::SurveyTrigger { .. } => DerivedType::SurveyTrigger,
            Payload::ContactFatigue { .. } => DerivedType::ContactFatigue,
            Payload::OrderAttributed { .. } => DerivedType::OrderAttributed,
            Payload::CustomerValue { .. } => DerivedType::CustomerValue,
        }
    }
}

/// One derived event: the three common fields, a deterministic id and the
/// type-specific payload. Serialises (JSON) as a flat object:
/// `{"type":..,"event_id":..,"customer_id":..,"at":.., <payload fields>}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DerivedEvent {
    /// The derived type name.
    #[serde(rename = "type", serialize_with = "ser_type")]
    pub kind: DerivedType,
    /// Pure function of the cause (see [`crate::engine::event_id`]).
    pub event_id: EventId,
    /// The customer.
    pub customer_id: std::sync::Arc<str>,
    /// Event time of the cause (touchpoint time or timer due time).
    pub at: EventTime,
    /// Type-specific fields.
    #[serde(flatten)]
    pub payload: Payload,
}

fn ser_type<S: serde::Serializer>(t: &DerivedType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

impl DerivedEvent {
    /// The event as one JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serialising this struct cannot fail: every field is a plain value
        // and map keys are strings. Non-finite floats serialise as null.
        serde_json::to_string(self).unwrap_or_default()
    }
}
