//! The input: [`Touchpoint`] (one accepted, validated touchpoint) and the
//! enums its fields take ([`Channel`], [`TouchType`], [`Survey`]) with
//! their SPEC names. No validation here (that is `validate`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::EventTime;

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
