//! What each [`Persona`] does and how often: the per-persona [`Habits`]
//! (session rates, the mix of session kinds, buy, open, click and
//! unsubscribe probabilities, survey answer ranges, prices) and the hourly
//! traffic curve.
//!
//! Constants only: no draws happen here.

use super::Persona;

impl Persona {
    /// The habits of this persona.
    pub(super) fn habits(self) -> &'static Habits {
        match self {
            Persona::Browser => &BROWSER,
            Persona::Loyal => &LOYAL,
            Persona::OneTime => &ONE_TIME,
            Persona::Lapsing => &LAPSING,
            Persona::Bargain => &BARGAIN,
        }
    }
}

/// Per-persona probabilities. Rates are per day; probabilities per
/// occasion.
pub(super) struct Habits {
    /// Organic sessions per day, drawn per customer from this range.
    pub(super) rate: (f64, f64),
    /// Weights of the organic session kinds, in `ORGANIC` order.
    pub(super) mix: [f64; 6],
    /// An organic cart session ends in an order.
    pub(super) cart_buy: f64,
    /// An abandoned cart got as far as `checkout_started`.
    pub(super) checkout_abandon: f64,
    /// An abandoned cart is ordered after a reminder reached the customer.
    pub(super) recover: f64,
    /// ... without a reminder.
    pub(super) self_recover: f64,
    /// A marketing email or push is opened.
    pub(super) open: f64,
    /// An opened message is clicked.
    pub(super) click: f64,
    /// A campaign click leads to an order in the same session.
    pub(super) click_buy: f64,
    /// A message the customer reacted to ends in `unsubscribed`.
    pub(super) unsub: f64,
    /// A store visit ends in an order.
    pub(super) store_buy: f64,
    /// An order redeems loyalty points.
    pub(super) loyalty: f64,
    /// An order is returned.
    pub(super) returns: f64,
    /// Survey answer ranges.
    pub(super) nps: (i8, i8),
    pub(super) csat: (i8, i8),
    pub(super) ces: (i8, i8),
    /// Log-mean of an item price.
    pub(super) price_mu: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionKind {
    Browse,
    Cart,
    Store,
    Social,
    Support,
    App,
    /// A planned purchase (loyal, one-time and lapsing customers).
    Purchase,
}

pub(super) const ORGANIC: [SessionKind; 6] = [
    SessionKind::Browse,
    SessionKind::Cart,
    SessionKind::Store,
    SessionKind::Social,
    SessionKind::Support,
    SessionKind::App,
];

static BROWSER: Habits = Habits {
    rate: (0.10, 0.30),
    mix: [0.78, 0.08, 0.03, 0.07, 0.02, 0.02],
    cart_buy: 0.0,
    checkout_abandon: 0.10,
    recover: 0.0,
    self_recover: 0.0,
    open: 0.15,
    click: 0.20,
    click_buy: 0.0,
    unsub: 0.02,
    store_buy: 0.0,
    loyalty: 0.0,
    returns: 0.0,
    nps: (3, 9),
    csat: (2, 5),
    ces: (2, 7),
    price_mu: 3.4,
};

static LOYAL: Habits = Habits {
    rate: (0.15, 0.35),
    mix: [0.40, 0.10, 0.12, 0.05, 0.03, 0.30],
    cart_buy: 0.30,
    checkout_abandon: 0.50,
    recover: 0.70,
    self_recover: 0.50,
    open: 0.45,
    click: 0.35,
    click_buy: 0.30,
    unsub: 0.005,
    store_buy: 0.60,
    loyalty: 0.35,
    returns: 0.05,
    nps: (7, 10),
    csat: (4, 5),
    ces: (1, 3),
    price_mu: 3.6,
};

static ONE_TIME: Habits = Habits {
    rate: (0.08, 0.20),
    mix: [0.70, 0.12, 0.05, 0.06, 0.05, 0.02],
    cart_buy: 0.0,
    checkout_abandon: 0.20,
    recover: 0.50,
    self_recover: 0.30,
    open: 0.20,
    click: 0.20,
    click_buy: 0.0,
    unsub: 0.03,
    store_buy: 0.0,
    loyalty: 0.0,
    returns: 0.08,
    nps: (4, 10),
    csat: (2, 5),
    ces: (1, 6),
    price_mu: 3.5,
};

static LAPSING: Habits = Habits {
    rate: (0.20, 0.40),
    mix: [0.50, 0.12, 0.10, 0.05, 0.10, 0.13],
    cart_buy: 0.15,
    checkout_abandon: 0.30,
    recover: 0.30,
    self_recover: 0.20,
    open: 0.30,
    click: 0.20,
    click_buy: 0.10,
    unsub: 0.06,
    store_buy: 0.30,
    loyalty: 0.10,
    returns: 0.12,
    nps: (0, 6),
    csat: (1, 3),
    ces: (3, 7),
    price_mu: 3.5,
};

static BARGAIN: Habits = Habits {
    rate: (0.15, 0.35),
    mix: [0.45, 0.35, 0.05, 0.08, 0.03, 0.04],
    cart_buy: 0.20,
    checkout_abandon: 0.40,
    recover: 0.45,
    self_recover: 0.15,
    open: 0.40,
    click: 0.40,
    click_buy: 0.20,
    unsub: 0.02,
    store_buy: 0.20,
    loyalty: 0.05,
    returns: 0.15,
    nps: (3, 9),
    csat: (2, 5),
    ces: (2, 6),
    price_mu: 3.0,
};

/// Relative traffic by hour of day (UTC).
pub(super) const HOURS: [f64; 24] = [
    1.0, 0.6, 0.3, 0.2, 0.2, 0.4, 1.0, 2.0, 3.0, 3.0, 3.0, 3.5, 4.0, 4.0, 3.5, 3.0, 3.0, 3.5, 4.5,
    5.5, 6.0, 5.5, 4.0, 2.0,
];
