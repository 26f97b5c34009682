//! The compact event record: one touchpoint before its strings exist
//! ([`Ev`], 48 bytes), and the codes of its one optional attribute (device,
//! store, network, support topic, loyalty points).
//!
//! Owns the layout only; what the strings look like is decided when
//! `Touchpoints` materializes an `Ev`. Draws nothing.

use crate::model::{Channel, Survey, TouchType};

pub(super) const NO_VALUE: u32 = u32::MAX;
pub(super) const CURRENCIES: [&str; 2] = ["EUR", "USD"];

/// One touchpoint before its strings exist (48 bytes).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ev {
    /// True event time (emission order); the timestamp is `t - jitter`.
    pub(super) t: i64,
    pub(super) cust: u32,
    /// Index among the customer's touchpoints, in time order.
    pub(super) n: u32,
    pub(super) jitter: u32,
    /// Amount in cents, or `NO_VALUE`.
    pub(super) cents: u32,
    pub(super) cart: u32,
    pub(super) order: u32,
    pub(super) session: u32,
    /// 1-based index into the campaign names, 0 for none.
    pub(super) campaign: u32,
    pub(super) attr: u16,
    pub(super) kind: TouchType,
    pub(super) channel: Channel,
    pub(super) survey: Option<Survey>,
    pub(super) score: Option<i8>,
    pub(super) currency: u8,
}

impl Ev {
    /// Emission order: true time, then customer, then the customer's own order.
    pub(super) fn key(&self) -> (i64, u32, u32) {
        (self.t, self.cust, self.n)
    }

    pub(super) fn money(mut self, cents: u32, currency: u8) -> Self {
        self.cents = cents;
        self.currency = currency;
        self
    }
    pub(super) fn cart(mut self, cart: u32) -> Self {
        self.cart = cart;
        self
    }
    pub(super) fn order(mut self, order: u32) -> Self {
        self.order = order;
        self
    }
    pub(super) fn session(mut self, session: u32) -> Self {
        self.session = session;
        self
    }
    pub(super) fn campaign(mut self, campaign: u32) -> Self {
        self.campaign = campaign;
        self
    }
    pub(super) fn attr(mut self, attr: u16) -> Self {
        self.attr = attr;
        self
    }
}

// Attribute codes: one optional attribute per touchpoint.
pub(super) const DEVICE_IOS: u16 = 1;
pub(super) const DEVICE_ANDROID: u16 = 2;
pub(super) const DEVICE_DESKTOP: u16 = 3;
pub(super) const DEVICE_MOBILE_WEB: u16 = 4;
pub(super) const STORE_BASE: u16 = 100; // + store number 1..=24
pub(super) const NETWORK_BASE: u16 = 200; // + 0..3
pub(super) const TOPIC_BASE: u16 = 300; // + 0..4
pub(super) const POINTS_BASE: u16 = 400; // + hundreds of points 1..=20

const NETWORKS: [&str; 3] = ["instagram", "facebook", "tiktok"];
const TOPICS: [&str; 4] = ["delivery", "payment", "product", "account"];

pub(super) fn attribute(code: u16) -> Option<(&'static str, String)> {
    let (k, v) = match code {
        DEVICE_IOS => ("device", "ios".to_string()),
        DEVICE_ANDROID => ("device", "android".to_string()),
        DEVICE_DESKTOP => ("device", "desktop".to_string()),
        DEVICE_MOBILE_WEB => ("device", "mobile_web".to_string()),
        c if (STORE_BASE + 1..STORE_BASE + 100).contains(&c) => {
            ("store", format!("store-{:02}", c - STORE_BASE))
        }
        c if (NETWORK_BASE..NETWORK_BASE + 3).contains(&c) => (
            "network",
            NETWORKS[usize::from(c - NETWORK_BASE)].to_string(),
        ),
        c if (TOPIC_BASE..TOPIC_BASE + 4).contains(&c) => {
            ("topic", TOPICS[usize::from(c - TOPIC_BASE)].to_string())
        }
        c if (POINTS_BASE + 1..POINTS_BASE + 100).contains(&c) => {
            ("points", (u32::from(c - POINTS_BASE) * 100).to_string())
        }
        _ => return None,
    };
    Some((k, v))
}
