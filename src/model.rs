//! The data model shared by every part of touchstream: the input
//! [`Touchpoint`], the [`DerivedEvent`]s the engine emits, and the small
//! enums (channel, touchpoint type, survey) with their SPEC names.
//!
//! This module owns names and shapes only; it performs no validation (see
//! [`crate::validate`]) and no I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Timestamps beyond ±2^43 ms of the Unix epoch (before 1691-04-06 or
/// after 2248-09-26) cannot be represented by the engine's packed 6-byte
/// time fields: an earlier one is a decode error, a later one is in the
/// future of any real clock.
pub const MAX_ABS_TIMESTAMP: i64 = 1 << 43;

/// Event time in epoch milliseconds.
pub type EventTime = i64;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

macro_rules! name_enum {
    (
        $(#[$meta:meta])*
        $name:ident, fallback = $fallback:expr, [ $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)? ]
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* #[doc = $text] $variant ),+
        }

        impl $name {
            /// Every value, in SPEC order (which is also the Avro symbol order).
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),+ ];

            /// The SPEC name of the value.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text ),+ }
            }

            /// Parses a SPEC name exactly; `None` for anything else.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $( $text => Some($name::$variant), )+ _ => None }
            }

            /// Parses a SPEC name; unknown names map to the fallback value.
            pub fn parse_lenient(s: &str) -> Self {
                Self::parse(s).unwrap_or($fallback)
            }

            /// Position of the value in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }

            /// The value at position `i` of [`Self::ALL`].
            pub fn from_index(i: usize) -> Option<Self> {
                Self::ALL.get(i).copied()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown {} `{}`", stringify!($name), s)))
            }
        }
    };
}

name_enum!(
    /// The channel a touchpoint happened on. Unknown names become `other`.
    Channel, fallback = Channel::Other, [
        Web => "web",
        MobileApp => "mobile_app",
        Email => "email",
        Sms => "sms",
        Push => "push",
        Social => "social",
        Store => "store",
        CallCenter => "call_center",
        Chat => "chat",
        DirectMail => "direct_mail",
        Loyalty => "loyalty",
        Other => "other",
    ]
);

name_enum!(
    /// What the customer (or, for `message_sent`, the business) did.
    /// Unknown names become `other`.
    TouchType, fallback = TouchType::Other, [
        PageView => "page_view",
        ProductView => "product_view",
        Search => "search",
        AddToCart => "add_to_cart",
        RemoveFromCart => "remove_from_cart",
        CheckoutStarted => "checkout_started",
        OrderPlaced => "order_placed",
        OrderReturned => "order_returned",
        AppOpen => "app_open",
        StoreVisit => "store_visit",
        MessageSent => "message_sent",
        MessageOpened => "message_opened",
        MessageClicked => "message_clicked",
        Unsubscribed => "unsubscribed",
        SupportContact => "support_contact",
        SupportResolved => "support_resolved",
        SurveyResponse => "survey_response",
        LoyaltyRedeemed => "loyalty_redeemed",
        SocialInteraction => "social_interaction",
        Other => "other",
    ]
);

name_enum!(
    /// A survey kind. Unknown names are a decode error (no fallback is used
    /// by the decoders; `parse_lenient` exists only for symmetry).
    Survey, fallback = Survey::Nps, [
        Nps => "nps",
        Csat => "csat",
        Ces => "ces",
    ]
);

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

impl TouchType {
    /// `message_sent` is the business contacting the customer; every other
    /// type is the customer acting ("own touch").
    pub fn is_own(self) -> bool {
        self != TouchType::MessageSent
    }

    /// Passive touches keep a customer in the `awareness` stage.
    pub fn is_passive(self) -> bool {
        matches!(
            self,
            TouchType::PageView
                | TouchType::MessageOpened
                | TouchType::MessageSent
                | TouchType::SocialInteraction
                | TouchType::StoreVisit
                | TouchType::Unsubscribed
        )
    }

    /// Cart activity extends a cart's abandonment timer.
    pub fn is_cart_activity(self) -> bool {
        matches!(
            self,
            TouchType::AddToCart | TouchType::RemoveFromCart | TouchType::CheckoutStarted
        )
    }
}

impl Survey {
    /// Inclusive range of valid answers.
    pub fn score_range(self) -> (i32, i32) {
        match self {
            Survey::Nps => (0, 10),
            Survey::Csat => (1, 5),
            Survey::Ces => (1, 7),
        }
    }
}

/// One accepted (validated) touchpoint. See SPEC section 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Touchpoint {
    /// Unique per customer; used to drop duplicates.
    pub event_id: String,
    /// 1..=256 bytes of UTF-8.
    pub customer_id: String,
    /// Where it happened.
    pub channel: Channel,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: TouchType,
    /// Event time, epoch millis.
    pub timestamp: EventTime,
    /// Money amount (finite, >= 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// ISO 4217 code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Cart this touch belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cart_id: Option<String>,
    /// Order this touch belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// Campaign this touch belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// Session this touch belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Survey kind of a `survey_response`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub survey: Option<Survey>,
    /// Survey answer, within the survey's range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<i32>,
    /// Free-form attributes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Touchpoint {
    /// A touchpoint with only the required fields set (handy in tests and
    /// the generator).
    pub fn new(
        event_id: impl Into<String>,
        customer_id: impl Into<String>,
        channel: Channel,
        kind: TouchType,
        timestamp: EventTime,
    ) -> Self {
        Touchpoint {
            event_id: event_id.into(),
            customer_id: customer_id.into(),
            channel,
            kind,
            timestamp,
            value: None,
            currency: None,
            cart_id: None,
            order_id: None,
            campaign_id: None,
            session_id: None,
            survey: None,
            score: None,
            attributes: BTreeMap::new(),
        }
    }
}

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
