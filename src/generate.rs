//! Synthetic omnichannel traffic for `touchstream generate`: customers with
//! different habits browsing, filling and abandoning carts, ordering in the
//! shop or the app, answering (or ignoring) campaigns, calling support and
//! answering surveys.
//!
//! Owns the customer model and the event layout only. It is pure: no I/O,
//! no clock, no global RNG. The output is a function of the [`GenConfig`]
//! alone, and byte-identical across runs and platforms:
//!
//! - every customer draws from its own [`StdRng`] (ChaCha12, stable within
//!   rand 0.8) seeded by `(seed, customer number)`, so adding customers never
//!   changes the traffic of the existing ones;
//! - the campaign calendar is drawn once from the seed;
//! - transcendental functions come from `libm`, not the platform's libm.
//!
//! Touchpoints come out in event-time order except for a bounded jitter: a
//! small fraction of timestamps are moved back by at most
//! [`GenConfig::disorder_ms`] (never before the same customer's previous
//! touchpoint), so every timestamp is at least `max(earlier timestamps) −
//! disorder_ms` and the engine's 5 s out-of-orderness accepts all of them.
//!
//! Memory: touchpoints are generated per customer into a compact 48-byte
//! record, sorted, and turned into [`Touchpoint`]s lazily by [`Touchpoints`];
//! a million customers over a month take about 2–3 GB.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::{Channel, EventTime, Survey, TouchType, Touchpoint, DAY_MS, HOUR_MS};

const SEC: i64 = 1_000;
const MIN: i64 = 60_000;
const WEEK_MS: i64 = 7 * DAY_MS;

/// 2026-01-01T00:00:00Z, the default first instant.
pub const DEFAULT_START_MS: EventTime = 1_767_225_600_000;

/// The kind of customer, which sets their habits. Mixed by
/// [`GenConfig::persona_weights`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Persona {
    /// Page and product views and searches; rarely fills a cart, never buys.
    Browser,
    /// Frequent sessions, an order every 1–3 weeks, the app, the store and
    /// the loyalty programme; answers campaigns.
    Loyal,
    /// One order, then fading visits.
    OneTime,
    /// Active (and ordering) early in the period, then silent, so inactivity
    /// and churn fire; unhappy survey answers, more support.
    Lapsing,
    /// Many carts, most abandoned; comes back after a reminder now and then;
    /// clicks on campaigns.
    Bargain,
}

impl Persona {
    /// Every persona, in the order of [`GenConfig::persona_weights`].
    pub const ALL: [Persona; 5] = [
        Persona::Browser,
        Persona::Loyal,
        Persona::OneTime,
        Persona::Lapsing,
        Persona::Bargain,
    ];

    /// A short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Persona::Browser => "browser",
            Persona::Loyal => "loyal",
            Persona::OneTime => "one_time",
            Persona::Lapsing => "lapsing",
            Persona::Bargain => "bargain",
        }
    }

    fn habits(self) -> &'static Habits {
        match self {
            Persona::Browser => &BROWSER,
            Persona::Loyal => &LOYAL,
            Persona::OneTime => &ONE_TIME,
            Persona::Lapsing => &LAPSING,
            Persona::Bargain => &BARGAIN,
        }
    }
}

/// What to generate. Same config, same touchpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Number of customers (`cust-000001` ..).
    pub customers: u32,
    /// First instant, epoch millis; nothing is generated before it.
    pub start_ms: EventTime,
    /// Length of the period in days; nothing is generated at or after
    /// `start_ms + days`.
    pub days: u32,
    /// Marketing campaigns (email, SMS, push, direct mail) sent per week,
    /// each to a random share of the customers.
    pub campaigns_per_week: u32,
    /// Largest amount a timestamp is moved back (out-of-order jitter).
    pub disorder_ms: i64,
    /// Share of touchpoints whose timestamp is moved back.
    pub disorder_fraction: f64,
    /// Share of customers who get a week of "flash sale" messages on top of
    /// the campaigns (11–15 in 6 days), so contact fatigue fires.
    pub heavy_messaged_fraction: f64,
    /// Share of customers who first appear during the period (the others
    /// are active from `start_ms`).
    pub new_customer_fraction: f64,
    /// Relative weights of [`Persona::ALL`].
    pub persona_weights: [f64; 5],
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            customers: 1_000,
            start_ms: DEFAULT_START_MS,
            days: 30,
            campaigns_per_week: 3,
            disorder_ms: 2_000,
            disorder_fraction: 0.05,
            heavy_messaged_fraction: 0.03,
            new_customer_fraction: 0.25,
            persona_weights: [0.30, 0.15, 0.20, 0.15, 0.20],
        }
    }
}

impl GenConfig {
    /// The first instant after the period.
    pub fn end_ms(&self) -> EventTime {
        self.start_ms.saturating_add(i64::from(self.days) * DAY_MS)
    }
}

/// The customer id of customer number `n` (1-based): `cust-000123`.
pub fn customer_id(n: u32) -> String {
    format!("cust-{n:06}")
}

/// Generates every touchpoint of the period, in emission order.
///
/// # Examples
/// ```
/// use touchstream::generate::{generate, GenConfig};
/// let cfg = GenConfig { customers: 20, days: 14, ..GenConfig::default() };
/// let a = generate(&cfg);
/// assert!(!a.is_empty());
/// assert_eq!(a, generate(&cfg));
/// ```
pub fn generate(cfg: &GenConfig) -> Vec<Touchpoint> {
    stream(cfg).collect()
}

/// Like [`generate`], but builds each [`Touchpoint`] only when it is asked
/// for (the compact records are generated and sorted up front).
pub fn stream(cfg: &GenConfig) -> Touchpoints {
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(8) as u32;
    stream_with(cfg, if cfg.customers < 2_000 { 1 } else { threads })
}

fn stream_with(cfg: &GenConfig, threads: u32) -> Touchpoints {
    let plan = Plan::new(cfg);
    let parts = sorted_parts(cfg, &plan, threads);
    let len = parts.iter().map(Vec::len).sum();
    let mut parts: Vec<std::iter::Peekable<std::vec::IntoIter<Ev>>> = parts
        .into_iter()
        .map(|p| p.into_iter().peekable())
        .collect();
    parts.retain_mut(|p| p.peek().is_some());
    Touchpoints {
        parts,
        len,
        names: plan.names,
        seed: cfg.seed,
    }
}

/// The generated touchpoints, built one at a time: a merge of the sorted
/// per-thread parts.
pub struct Touchpoints {
    parts: Vec<std::iter::Peekable<std::vec::IntoIter<Ev>>>,
    len: usize,
    names: Vec<String>,
    seed: u64,
}

impl Iterator for Touchpoints {
    type Item = Touchpoint;

    fn next(&mut self) -> Option<Touchpoint> {
        // At most a handful of parts: a linear scan beats a heap.
        let mut best: Option<(usize, (i64, u32, u32))> = None;
        for (i, p) in self.parts.iter_mut().enumerate() {
            if let Some(e) = p.peek() {
                let key = e.key();
                if best.is_none_or(|(_, b)| key < b) {
                    best = Some((i, key));
                }
            }
        }
        let e = self.parts[best?.0].next()?;
        self.len -= 1;
        Some(self.materialize(&e))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len, Some(self.len))
    }
}

impl ExactSizeIterator for Touchpoints {}

impl Touchpoints {
    fn materialize(&self, e: &Ev) -> Touchpoint {
        let c = e.cust;
        let mut tp = Touchpoint::new(
            format!("{:x}-{c:06}-{}", self.seed, e.n),
            customer_id(c),
            e.channel,
            e.kind,
            e.t - i64::from(e.jitter),
        );
        if e.cents != NO_VALUE {
            tp.value = Some(f64::from(e.cents) / 100.0);
            tp.currency = Some(CURRENCIES[usize::from(e.currency)].to_string());
        }
        tp.cart_id = (e.cart != 0).then(|| format!("cart-{c:06}-{}", e.cart));
        tp.order_id = (e.order != 0).then(|| format!("ord-{c:06}-{}", e.order));
        tp.session_id = (e.session != 0).then(|| format!("s-{c:06}-{}", e.session));
        tp.campaign_id = (e.campaign != 0).then(|| self.names[e.campaign as usize - 1].clone());
        tp.survey = e.survey;
        tp.score = e.score.map(i32::from);
        if let Some((k, v)) = attribute(e.attr) {
            tp.attributes.insert(k.to_string(), v);
        }
        tp
    }
}

// ---------------------------------------------------------------------------
// Compact events

const NO_VALUE: u32 = u32::MAX;
const CURRENCIES: [&str; 2] = ["EUR", "USD"];

/// One touchpoint before its strings exist (48 bytes).
#[derive(Debug, Clone, Copy)]
struct Ev {
    /// True event time (emission order); the timestamp is `t - jitter`.
    t: i64,
    cust: u32,
    /// Index among the customer's touchpoints, in time order.
    n: u32,
    jitter: u32,
    /// Amount in cents, or `NO_VALUE`.
    cents: u32,
    cart: u32,
    order: u32,
    session: u32,
    /// 1-based index into the campaign names, 0 for none.
    campaign: u32,
    attr: u16,
    kind: TouchType,
    channel: Channel,
    survey: Option<Survey>,
    score: Option<i8>,
    currency: u8,
}

impl Ev {
    /// Emission order: true time, then customer, then the customer's own order.
    fn key(&self) -> (i64, u32, u32) {
        (self.t, self.cust, self.n)
    }

    fn money(mut self, cents: u32, currency: u8) -> Self {
        self.cents = cents;
        self.currency = currency;
        self
    }
    fn cart(mut self, cart: u32) -> Self {
        self.cart = cart;
        self
    }
    fn order(mut self, order: u32) -> Self {
        self.order = order;
        self
    }
    fn session(mut self, session: u32) -> Self {
        self.session = session;
        self
    }
    fn campaign(mut self, campaign: u32) -> Self {
        self.campaign = campaign;
        self
    }
    fn attr(mut self, attr: u16) -> Self {
        self.attr = attr;
        self
    }
}

// Attribute codes: one optional attribute per touchpoint.
const DEVICE_IOS: u16 = 1;
const DEVICE_ANDROID: u16 = 2;
const DEVICE_DESKTOP: u16 = 3;
const DEVICE_MOBILE_WEB: u16 = 4;
const STORE_BASE: u16 = 100; // + store number 1..=24
const NETWORK_BASE: u16 = 200; // + 0..3
const TOPIC_BASE: u16 = 300; // + 0..4
const POINTS_BASE: u16 = 400; // + hundreds of points 1..=20

const NETWORKS: [&str; 3] = ["instagram", "facebook", "tiktok"];
const TOPICS: [&str; 4] = ["delivery", "payment", "product", "account"];

fn attribute(code: u16) -> Option<(&'static str, String)> {
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

// ---------------------------------------------------------------------------
// Habits

/// Per-persona probabilities. Rates are per day; probabilities per
/// occasion.
struct Habits {
    /// Organic sessions per day, drawn per customer from this range.
    rate: (f64, f64),
    /// Weights of the organic session kinds, in `ORGANIC` order.
    mix: [f64; 6],
    /// An organic cart session ends in an order.
    cart_buy: f64,
    /// An abandoned cart got as far as `checkout_started`.
    checkout_abandon: f64,
    /// An abandoned cart is ordered after a reminder reached the customer.
    recover: f64,
    /// ... without a reminder.
    self_recover: f64,
    /// A marketing email or push is opened.
    open: f64,
    /// An opened message is clicked.
    click: f64,
    /// A campaign click leads to an order in the same session.
    click_buy: f64,
    /// A message the customer reacted to ends in `unsubscribed`.
    unsub: f64,
    /// A store visit ends in an order.
    store_buy: f64,
    /// An order redeems loyalty points.
    loyalty: f64,
    /// An order is returned.
    returns: f64,
    /// Survey answer ranges.
    nps: (i8, i8),
    csat: (i8, i8),
    ces: (i8, i8),
    /// Log-mean of an item price.
    price_mu: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionKind {
    Browse,
    Cart,
    Store,
    Social,
    Support,
    App,
    /// A planned purchase (loyal, one-time and lapsing customers).
    Purchase,
}

const ORGANIC: [SessionKind; 6] = [
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
const HOURS: [f64; 24] = [
    1.0, 0.6, 0.3, 0.2, 0.2, 0.4, 1.0, 2.0, 3.0, 3.0, 3.0, 3.5, 4.0, 4.0, 3.5, 3.0, 3.0, 3.5, 4.5,
    5.5, 6.0, 5.5, 4.0, 2.0,
];

// ---------------------------------------------------------------------------
// Campaign calendar

struct Campaign {
    at: i64,
    channel: Channel,
    reach: f64,
    /// 1-based index into `Plan::names`.
    name: u32,
}

/// The business's outbound calendar, shared by all customers.
struct Plan {
    campaigns: Vec<Campaign>,
    names: Vec<String>,
    /// Name index of week 0's flash sale; week `w` is `flash + w`.
    flash: u32,
}

/// Campaign name index of the abandoned-cart reminder.
const REMINDER: u32 = 1;

impl Plan {
    fn new(cfg: &GenConfig) -> Plan {
        let mut rng = StdRng::seed_from_u64(mix(cfg.seed, 0xCA3A_16E5));
        let weeks = cfg.days.div_ceil(7);
        let mut names = vec!["cart-reminder".to_string()];
        let flash = names.len() as u32 + 1;
        names.extend((1..=weeks).map(|w| format!("flash-w{w:02}")));
        let end = cfg.end_ms();
        let mut campaigns = Vec::new();
        for w in 0..weeks {
            for k in 1..=cfg.campaigns_per_week {
                let day = rng.gen_range(0..7i64);
                let hour = rng.gen_range(8..20i64);
                let at = cfg.start_ms
                    + i64::from(w) * WEEK_MS
                    + day * DAY_MS
                    + hour * HOUR_MS
                    + rng.gen_range(0..HOUR_MS);
                let channel = [
                    Channel::Email,
                    Channel::Sms,
                    Channel::Push,
                    Channel::DirectMail,
                ][pick(&mut rng, &[0.60, 0.20, 0.15, 0.05])];
                let reach = rng.gen_range(0.3..0.8);
                if at >= end {
                    continue;
                }
                names.push(format!("cmp-w{:02}-{k}-{}", w + 1, channel.as_str()));
                campaigns.push(Campaign {
                    at,
                    channel,
                    reach,
                    name: names.len() as u32,
                });
            }
        }
        campaigns.sort_by_key(|c| c.at);
        Plan {
            campaigns,
            names,
            flash,
        }
    }
}

// ---------------------------------------------------------------------------
// Sampling (portable: fixed-width integer ranges, never usize, and libm)

/// SplitMix64 finaliser over `a ^ b`: seeds from (seed, stream).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An index drawn with the given relative weights.
fn pick(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

/// Knuth's Poisson sampler (the rates here are small).
fn poisson(rng: &mut StdRng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    let limit = libm::exp(-lambda);
    let mut p = 1.0;
    let mut k = 0;
    loop {
        p *= rng.gen::<f64>();
        if p <= limit || k >= 1_000 {
            return k;
        }
        k += 1;
    }
}

/// Exponential with the given mean, in millis.
fn exponential(rng: &mut StdRng, mean_ms: f64) -> i64 {
    let u: f64 = rng.gen::<f64>();
    (-libm::log(1.0 - u) * mean_ms) as i64
}

/// Standard normal (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(std::f64::consts::TAU * u2)
}

// ---------------------------------------------------------------------------
// Generation

/// Every customer's events, in `threads` parts generated (and sorted) in
/// parallel, each part a contiguous range of customers. The parts are merged
/// lazily rather than concatenated, so peak memory is one copy of the
/// events. Keys `(t, cust, n)` are unique, so the result does not depend on
/// the number of parts.
fn sorted_parts(cfg: &GenConfig, plan: &Plan, threads: u32) -> Vec<Vec<Ev>> {
    let n = cfg.customers;
    let part = |lo: u32, hi: u32| {
        let mut evs: Vec<Ev> = (lo..=hi)
            .flat_map(|c| Customer::new(cfg, plan, c).run())
            .collect();
        evs.shrink_to_fit();
        evs.sort_unstable_by_key(Ev::key);
        evs
    };
    if threads <= 1 || n < threads {
        return vec![part(1, n)];
    }
    let chunk = n.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let lo = 1 + i * chunk;
                let hi = n.min(lo.saturating_add(chunk - 1));
                s.spawn(move || part(lo, hi))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[derive(Debug, Clone, Copy)]
struct Abandon {
    cart: u32,
    /// Last cart activity.
    at: i64,
    cents: u32,
    /// The cart of a planned purchase (more likely to come back).
    intent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MsgKind {
    Campaign,
    Flash { last: bool },
    Reminder(usize),
}

#[derive(Debug, Clone, Copy)]
struct Msg {
    t: i64,
    channel: Channel,
    campaign: u32,
    kind: MsgKind,
}

/// One customer being generated.
struct Customer<'a> {
    cfg: &'a GenConfig,
    plan: &'a Plan,
    rng: StdRng,
    id: u32,
    persona: Persona,
    h: &'static Habits,
    currency: u8,
    /// Attribute code of the phone, 0 without the app.
    phone: u16,
    sms: bool,
    heavy: bool,
    store: u16,
    /// First instant the customer exists.
    first: i64,
    /// Own touches stop here (lapsing customers).
    until: i64,
    evs: Vec<Ev>,
    sessions: u32,
    carts: u32,
    orders: u32,
    abandons: Vec<Abandon>,
}

impl<'a> Customer<'a> {
    fn new(cfg: &'a GenConfig, plan: &'a Plan, id: u32) -> Self {
        let mut rng = StdRng::seed_from_u64(mix(cfg.seed, u64::from(id)));
        let persona = Persona::ALL[pick(&mut rng, &cfg.persona_weights)];
        let start = cfg.start_ms;
        let end = cfg.end_ms();
        let span = end - start;
        let first = if span > 0 && rng.gen_bool(cfg.new_customer_fraction.clamp(0.0, 1.0)) {
            start + rng.gen_range(0..span.max(1)) * 4 / 5
        } else {
            start
        };
        let until = if persona == Persona::Lapsing && span > 0 {
            let active = ((end - first) as f64 * rng.gen_range(0.15..0.45)) as i64;
            first + active.max(3 * DAY_MS)
        } else {
            end
        };
        let currency = u8::from(rng.gen_bool(0.3));
        let phone = match rng.gen_range(0..10u32) {
            0..=2 => DEVICE_IOS,
            3..=5 => DEVICE_ANDROID,
            _ => 0,
        };
        let phone = if persona == Persona::Loyal && phone == 0 && rng.gen_bool(0.6) {
            DEVICE_IOS
        } else {
            phone
        };
        Customer {
            cfg,
            plan,
            sms: rng.gen_bool(0.5),
            heavy: rng.gen_bool(cfg.heavy_messaged_fraction.clamp(0.0, 1.0)),
            store: STORE_BASE + rng.gen_range(1..=24u16),
            rng,
            id,
            persona,
            h: persona.habits(),
            currency,
            phone,
            first,
            until,
            evs: Vec::new(),
            sessions: 0,
            carts: 0,
            orders: 0,
            abandons: Vec::new(),
        }
    }

    fn run(mut self) -> Vec<Ev> {
        if self.cfg.days == 0 {
            return Vec::new();
        }
        self.organic();
        self.outbound();
        self.finish()
    }

    // -- small helpers ------------------------------------------------------

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.gen::<f64>() < p
    }

    /// A delay between `lo_s` and `hi_s` seconds.
    fn secs(&mut self, lo_s: i64, hi_s: i64) -> i64 {
        self.rng.gen_range(lo_s * SEC..=hi_s * SEC)
    }

    fn ev(&self, t: i64, kind: TouchType, channel: Channel) -> Ev {
        Ev {
            t,
            cust: self.id,
            n: 0,
            jitter: 0,
            cents: NO_VALUE,
            cart: 0,
            order: 0,
            session: 0,
            campaign: 0,
            attr: 0,
            kind,
            channel,
            survey: None,
            score: None,
            currency: 0,
        }
    }

    fn push(&mut self, e: Ev) {
        self.evs.push(e);
    }

    fn next_session(&mut self) -> u32 {
        self.sessions += 1;
        self.sessions
    }

    fn price(&mut self) -> u32 {
        let p = libm::exp(self.h.price_mu + 0.6 * normal(&mut self.rng)).clamp(2.0, 400.0);
        (p as u32) * 100 + 99
    }

    fn web_or_app(&mut self) -> Channel {
        if self.phone != 0 && self.chance(0.55) {
            Channel::MobileApp
        } else {
            Channel::Web
        }
    }

    fn device_attr(&mut self, channel: Channel) -> u16 {
        if !self.chance(0.3) {
            return 0;
        }
        match channel {
            Channel::MobileApp => self.phone,
            _ if self.phone != 0 && self.chance(0.4) => DEVICE_MOBILE_WEB,
            _ => DEVICE_DESKTOP,
        }
    }

    fn survey(&mut self, t: i64, survey: Survey) {
        let (lo, hi) = match survey {
            Survey::Nps => self.h.nps,
            Survey::Csat => self.h.csat,
            Survey::Ces => self.h.ces,
        };
        let score = self.rng.gen_range(lo..=hi);
        let mut e = self.ev(t, TouchType::SurveyResponse, Channel::Email);
        e.survey = Some(survey);
        e.score = Some(score);
        self.push(e);
    }

    // -- the customer's own sessions ----------------------------------------

    /// Planned purchases, by persona.
    fn purchases(&mut self) -> Vec<i64> {
        let (first, until) = (self.first, self.until);
        let span = until - first;
        if span <= 0 {
            return Vec::new();
        }
        match self.persona {
            Persona::Loyal => {
                let mut out = Vec::new();
                let mut t = first + self.rng.gen_range(0..10 * DAY_MS);
                while t < until {
                    out.push(t);
                    t += self.rng.gen_range(7 * DAY_MS..21 * DAY_MS);
                }
                out
            }
            Persona::OneTime => vec![first + self.rng.gen_range(span / 10..span * 6 / 10 + 1)],
            Persona::Lapsing => {
                let n = self.rng.gen_range(1..=3u32);
                let mut out: Vec<i64> = (0..n)
                    .map(|_| first + self.rng.gen_range(0..span))
                    .collect();
                out.sort_unstable();
                out
            }
            Persona::Browser | Persona::Bargain => Vec::new(),
        }
    }

    /// Organic and planned sessions, one after the other.
    fn organic(&mut self) {
        let start = self.cfg.start_ms;
        let purchases = self.purchases();
        let fade_from = if self.persona == Persona::OneTime {
            purchases.first().copied()
        } else {
            None
        };
        let mut plan: Vec<(i64, SessionKind)> = purchases
            .iter()
            .map(|&t| (t, SessionKind::Purchase))
            .collect();
        if self.first > start {
            let kind = if self.chance(0.4) {
                SessionKind::Social
            } else {
                SessionKind::Browse
            };
            plan.push((self.first, kind));
        }
        let rate = self.rng.gen_range(self.h.rate.0..self.h.rate.1);
        for d in 0..i64::from(self.cfg.days) {
            let day = start + d * DAY_MS;
            if day + DAY_MS <= self.first || day >= self.until {
                continue;
            }
            let mut lambda = rate;
            if let Some(f) = fade_from {
                let mid = day + DAY_MS / 2;
                if mid > f {
                    lambda *= libm::exp(-((mid - f) as f64) / (6 * DAY_MS) as f64);
                }
            }
            for _ in 0..poisson(&mut self.rng, lambda) {
                let t = day
                    + pick(&mut self.rng, &HOURS) as i64 * HOUR_MS
                    + self.rng.gen_range(0..HOUR_MS);
                let kind = ORGANIC[pick(&mut self.rng, &self.h.mix)];
                if t >= self.first && t < self.until {
                    plan.push((t, kind));
                }
            }
        }
        plan.sort_by_key(|p| p.0);
        let mut free = i64::MIN;
        for (t, kind) in plan {
            let end = self.session(t.max(free), kind);
            // Leave an hour after an abandoned cart so it really is abandoned.
            let quiet = if self.abandons.last().is_some_and(|a| a.at == end) {
                HOUR_MS + MIN
            } else {
                10 * MIN
            };
            free = end + quiet + self.rng.gen_range(0..50 * MIN);
        }
    }

    /// Runs one session from `t`; returns the time of its last touch.
    fn session(&mut self, t: i64, kind: SessionKind) -> i64 {
        match kind {
            SessionKind::Browse => self.browse(t, 0),
            SessionKind::Cart => {
                let p = self.h.cart_buy;
                self.cart(t, None, p, false, 0)
            }
            SessionKind::Purchase => {
                if self.chance(self.h.store_buy * 0.5) {
                    self.store(t, true)
                } else {
                    self.cart(t, None, 0.88, true, 0)
                }
            }
            SessionKind::Store => {
                let buy = self.chance(self.h.store_buy);
                self.store(t, buy)
            }
            SessionKind::Social => self.social(t),
            SessionKind::Support => self.support(t),
            SessionKind::App if self.phone != 0 => self.app(t),
            SessionKind::App => self.browse(t, 0),
        }
    }

    /// The first touch of a web or app session.
    fn open_session(&mut self, t: i64, channel: Channel, session: u32, campaign: u32) -> i64 {
        let kind = if channel == Channel::MobileApp {
            TouchType::AppOpen
        } else {
            TouchType::PageView
        };
        let attr = self.device_attr(channel);
        let e = self
            .ev(t, kind, channel)
            .session(session)
            .campaign(campaign)
            .attr(attr);
        self.push(e);
        t
    }

    /// `n` page views, product views and searches after `t`.
    fn views(&mut self, mut t: i64, channel: Channel, session: u32, n: u32) -> i64 {
        const KINDS: [TouchType; 3] = [
            TouchType::PageView,
            TouchType::ProductView,
            TouchType::Search,
        ];
        for _ in 0..n {
            t += self.secs(5, 90);
            let kind = KINDS[pick(&mut self.rng, &[0.35, 0.45, 0.20])];
            let e = self.ev(t, kind, channel).session(session);
            self.push(e);
        }
        t
    }

    fn browse(&mut self, t: i64, campaign: u32) -> i64 {
        let channel = self.web_or_app();
        let s = self.next_session();
        let t = self.open_session(t, channel, s, campaign);
        let n = self.rng.gen_range(1..=5);
        self.views(t, channel, s, n)
    }

    fn app(&mut self, t: i64) -> i64 {
        let s = self.next_session();
        let t = self.open_session(t, Channel::MobileApp, s, 0);
        let n = self.rng.gen_range(0..=2);
        self.views(t, Channel::MobileApp, s, n)
    }

    /// A session that fills a cart and orders it with probability `buy`,
    /// else abandons it (before or at checkout).
    fn cart(
        &mut self,
        t0: i64,
        channel: Option<Channel>,
        buy: f64,
        intent: bool,
        campaign: u32,
    ) -> i64 {
        let channel = channel.unwrap_or_else(|| self.web_or_app());
        let s = self.next_session();
        let mut t = self.open_session(t0, channel, s, campaign);
        let n = self.rng.gen_range(0..=3);
        t = self.views(t, channel, s, n);
        self.carts += 1;
        let cart = self.carts;
        let cur = self.currency;
        let mut items = [0u32; 3];
        let n_items = self.rng.gen_range(1..=3u32) as usize;
        for item in items.iter_mut().take(n_items) {
            t += self.secs(10, 120);
            let e = self.ev(t, TouchType::ProductView, channel).session(s);
            self.push(e);
            t += self.secs(5, 60);
            *item = self.price();
            let e = self
                .ev(t, TouchType::AddToCart, channel)
                .session(s)
                .cart(cart)
                .money(*item, cur);
            self.push(e);
        }
        let mut n_items = n_items;
        if n_items >= 2 && self.chance(0.2) {
            n_items -= 1;
            t += self.secs(10, 90);
            let e = self
                .ev(t, TouchType::RemoveFromCart, channel)
                .session(s)
                .cart(cart)
                .money(items[n_items], cur);
            self.push(e);
        }
        let total: u32 = items[..n_items].iter().sum();
        let buys = self.chance(buy);
        if buys || self.chance(self.h.checkout_abandon) {
            t += self.secs(20, 180);
            let e = self
                .ev(t, TouchType::CheckoutStarted, channel)
                .session(s)
                .cart(cart)
                .money(total, cur);
            self.push(e);
        }
        if buys {
            t += self.secs(30, 360);
            self.order(t, channel, cart, total, s, campaign);
        } else {
            self.abandons.push(Abandon {
                cart,
                at: t,
                cents: total,
                intent,
            });
        }
        t
    }

    fn order(
        &mut self,
        t: i64,
        channel: Channel,
        cart: u32,
        cents: u32,
        session: u32,
        campaign: u32,
    ) {
        self.orders += 1;
        let order = self.orders;
        let cur = self.currency;
        let e = self
            .ev(t, TouchType::OrderPlaced, channel)
            .session(session)
            .cart(cart)
            .order(order)
            .campaign(campaign)
            .money(cents, cur);
        self.push(e);
        if self.chance(self.h.loyalty) {
            let dt = self.secs(5, 60);
            let points = POINTS_BASE + self.rng.gen_range(1..=20u16);
            let e = self
                .ev(t + dt, TouchType::LoyaltyRedeemed, Channel::Loyalty)
                .order(order)
                .attr(points);
            self.push(e);
        }
        if self.chance(self.h.returns) {
            let r = t + self.rng.gen_range(3 * DAY_MS..20 * DAY_MS);
            let ch = if self.chance(0.4) {
                Channel::Store
            } else {
                Channel::Web
            };
            let e = self
                .ev(r, TouchType::OrderReturned, ch)
                .order(order)
                .money(cents, cur);
            self.push(e);
        }
        if self.chance(0.2) {
            let at = t + self.rng.gen_range(2 * DAY_MS..7 * DAY_MS);
            self.survey(at, Survey::Nps);
        }
        if self.chance(0.04) {
            let at = t + self.rng.gen_range(DAY_MS..5 * DAY_MS);
            self.support(at);
        }
    }

    fn store(&mut self, t: i64, buy: bool) -> i64 {
        let s = self.next_session();
        let e = self
            .ev(t, TouchType::StoreVisit, Channel::Store)
            .session(s)
            .attr(self.store);
        self.push(e);
        if !buy {
            return t + self.secs(300, 1_800);
        }
        let t = t + self.secs(300, 2_400);
        let n = self.rng.gen_range(1..=4);
        let cents: u32 = (0..n).map(|_| self.price()).sum();
        self.order(t, Channel::Store, 0, cents, s, 0);
        t
    }

    fn social(&mut self, t: i64) -> i64 {
        let network = NETWORK_BASE + pick(&mut self.rng, &[0.5, 0.3, 0.2]) as u16;
        let e = self
            .ev(t, TouchType::SocialInteraction, Channel::Social)
            .attr(network);
        self.push(e);
        if self.chance(0.3) {
            let dt = self.secs(5, 60);
            return self.browse(t + dt, 0);
        }
        t
    }

    /// A support contact, resolved later on the same channel, sometimes
    /// followed by a CSAT or CES survey.
    fn support(&mut self, t: i64) -> i64 {
        let channel = if self.chance(0.5) {
            Channel::CallCenter
        } else {
            Channel::Chat
        };
        let topic = TOPIC_BASE + self.rng.gen_range(0..4u16);
        let e = self.ev(t, TouchType::SupportContact, channel).attr(topic);
        self.push(e);
        let resolved = t + match channel {
            Channel::Chat => self.rng.gen_range(5 * MIN..3 * HOUR_MS),
            _ => self.rng.gen_range(HOUR_MS..48 * HOUR_MS),
        };
        let e = self
            .ev(resolved, TouchType::SupportResolved, channel)
            .attr(topic);
        self.push(e);
        if self.chance(0.45) {
            let at = resolved + self.rng.gen_range(30 * MIN..DAY_MS);
            let kind = if self.chance(0.6) {
                Survey::Csat
            } else {
                Survey::Ces
            };
            self.survey(at, kind);
        }
        t + self.secs(120, 900)
    }

    // -- what the business sends, and the reactions --------------------------

    fn outbound(&mut self) {
        let mut msgs = Vec::new();
        for i in 0..self.plan.campaigns.len() {
            let c = &self.plan.campaigns[i];
            let (at, channel, reach, name) = (c.at, c.channel, c.reach, c.name);
            let reachable = match channel {
                Channel::Push => self.phone != 0,
                Channel::Sms => self.sms,
                _ => true,
            };
            if at >= self.first && reachable && self.chance(reach) {
                let t = at + self.rng.gen_range(0..45 * MIN);
                msgs.push(Msg {
                    t,
                    channel,
                    campaign: name,
                    kind: MsgKind::Campaign,
                });
            }
        }
        if self.heavy {
            self.flash_sale(&mut msgs);
        }
        for i in 0..self.abandons.len() {
            if self.chance(0.75) {
                let t = self.abandons[i].at + self.rng.gen_range(90 * MIN..4 * HOUR_MS);
                let channel = if self.sms && self.chance(0.3) {
                    Channel::Sms
                } else if self.phone != 0 && self.chance(0.2) {
                    Channel::Push
                } else {
                    Channel::Email
                };
                msgs.push(Msg {
                    t,
                    channel,
                    campaign: REMINDER,
                    kind: MsgKind::Reminder(i),
                });
            }
        }
        msgs.sort_by_key(|m| m.t);

        let mut reminded = vec![false; self.abandons.len()];
        let mut unsubscribed = false;
        for m in msgs {
            if unsubscribed {
                continue;
            }
            let e = self
                .ev(m.t, TouchType::MessageSent, m.channel)
                .campaign(m.campaign);
            self.push(e);
            if let MsgKind::Reminder(i) = m.kind {
                reminded[i] = true;
            }
            if m.t < self.first || m.t >= self.until {
                continue; // nobody reads it
            }
            unsubscribed = self.react(m);
        }
        for (i, a) in self.abandons.clone().into_iter().enumerate() {
            let p = if a.intent { 0.6 } else { self.h.self_recover };
            if !reminded[i] && self.chance(p) {
                let t = a.at + self.rng.gen_range(3 * HOUR_MS..5 * DAY_MS);
                self.recover(t, a, 0);
            }
        }
    }

    /// 11–15 messages within six days, so the 7-day count goes above 10.
    fn flash_sale(&mut self, msgs: &mut Vec<Msg>) {
        let (first, end) = (self.first, self.cfg.end_ms());
        let latest = end - WEEK_MS;
        let s0 = if latest > first {
            self.rng.gen_range(first..latest)
        } else {
            first
        };
        let week = ((s0 - self.cfg.start_ms) / WEEK_MS) as u32;
        let campaign = self.plan.flash + week;
        let n = self.rng.gen_range(11..=15u32) as usize;
        let mut ts: Vec<i64> = (0..n)
            .map(|_| s0 + self.rng.gen_range(0..6 * DAY_MS))
            .collect();
        ts.sort_unstable();
        for (k, t) in ts.into_iter().enumerate() {
            let mut options = vec![Channel::Email];
            if self.sms {
                options.push(Channel::Sms);
            }
            if self.phone != 0 {
                options.push(Channel::Push);
            }
            let channel = options[self.rng.gen_range(0..options.len() as u32) as usize];
            msgs.push(Msg {
                t,
                channel,
                campaign,
                kind: MsgKind::Flash { last: k + 1 == n },
            });
        }
    }

    /// Opens, clicks, unsubscribes and what follows a click. Returns whether
    /// the customer unsubscribed.
    fn react(&mut self, m: Msg) -> bool {
        let h = self.h;
        let (open, click, unsub) = match m.kind {
            MsgKind::Campaign => (h.open, h.click, h.unsub),
            MsgKind::Flash { last } => (h.open * 0.3, h.click * 0.5, if last { 0.35 } else { 0.0 }),
            MsgKind::Reminder(_) => ((h.open * 1.5).min(0.9), (h.click * 1.5).min(0.9), h.unsub),
        };
        let mut t = m.t;
        let opened = matches!(m.channel, Channel::Email | Channel::Push) && self.chance(open);
        if opened {
            t += 30 * SEC + exponential(&mut self.rng, 2.0 * HOUR_MS as f64);
            let e = self
                .ev(t, TouchType::MessageOpened, m.channel)
                .campaign(m.campaign);
            self.push(e);
        }
        let clicked = match m.channel {
            Channel::Email | Channel::Push => opened && self.chance(click),
            Channel::Sms => self.chance(open * click),
            _ => false,
        };
        if clicked {
            t += if opened {
                self.secs(5, 180)
            } else {
                30 * SEC + exponential(&mut self.rng, 40.0 * MIN as f64)
            };
            let e = self
                .ev(t, TouchType::MessageClicked, m.channel)
                .campaign(m.campaign);
            self.push(e);
        }
        let reacted = opened || clicked || m.channel == Channel::Sms;
        if reacted && matches!(m.channel, Channel::Email | Channel::Sms) && self.chance(unsub) {
            let dt = self.secs(20, 300);
            let e = self
                .ev(t + dt, TouchType::Unsubscribed, m.channel)
                .campaign(m.campaign);
            self.push(e);
            return true;
        }
        let land = t + self.secs(3, 30);
        match m.kind {
            MsgKind::Campaign if clicked => {
                let channel = if m.channel == Channel::Push {
                    Channel::MobileApp
                } else {
                    Channel::Web
                };
                if self.chance(h.click_buy) {
                    self.cart(land, Some(channel), 1.0, false, m.campaign);
                } else {
                    self.browse_from(land, channel, m.campaign);
                }
            }
            MsgKind::Flash { .. } if clicked => {
                let channel = if m.channel == Channel::Push {
                    Channel::MobileApp
                } else {
                    Channel::Web
                };
                self.browse_from(land, channel, m.campaign);
            }
            MsgKind::Reminder(i) => {
                let a = self.abandons[i];
                let p = if a.intent { 0.8 } else { h.recover };
                if self.chance(p) {
                    if clicked {
                        self.recover(land, a, m.campaign);
                    } else {
                        let back = m.t + self.rng.gen_range(HOUR_MS..3 * DAY_MS);
                        self.recover(back, a, 0);
                    }
                }
            }
            _ => {}
        }
        false
    }

    /// A browsing session on a given channel (a campaign landing).
    fn browse_from(&mut self, t: i64, channel: Channel, campaign: u32) -> i64 {
        let s = self.next_session();
        let t = self.open_session(t, channel, s, campaign);
        let n = self.rng.gen_range(1..=4);
        self.views(t, channel, s, n)
    }

    /// The customer comes back and orders an abandoned cart.
    fn recover(&mut self, t0: i64, a: Abandon, campaign: u32) {
        let channel = self.web_or_app();
        let s = self.next_session();
        let mut t = self.open_session(t0, channel, s, campaign);
        t += self.secs(10, 120);
        let cur = self.currency;
        let e = self
            .ev(t, TouchType::CheckoutStarted, channel)
            .session(s)
            .cart(a.cart)
            .money(a.cents, cur);
        self.push(e);
        t += self.secs(30, 300);
        self.order(t, channel, a.cart, a.cents, s, campaign);
    }

    // -- clip, order, number, jitter ----------------------------------------

    fn finish(mut self) -> Vec<Ev> {
        let (start, end, until) = (self.cfg.start_ms, self.cfg.end_ms(), self.until);
        self.evs.retain(|e| {
            e.t >= start && e.t < end && (e.t < until || e.kind == TouchType::MessageSent)
        });
        self.evs.sort_by_key(|e| e.t); // stable: ties keep generation order
        let max = self.cfg.disorder_ms.clamp(0, i64::from(u32::MAX));
        let mut prev = start - 1;
        let mut evs = std::mem::take(&mut self.evs);
        for (n, e) in evs.iter_mut().enumerate() {
            e.n = n as u32;
            // Never before the customer's previous touch nor the start.
            let room = max.min(e.t - prev - 1).min(e.t - start);
            if room >= 1 && self.chance(self.cfg.disorder_fraction) {
                e.jitter = self.rng.gen_range(1..=room) as u32;
            }
            prev = e.t;
        }
        evs
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};

    use super::*;
    use crate::validate::{validate, Clock, RawTouchpoint};

    fn cfg(customers: u32, days: u32) -> GenConfig {
        GenConfig {
            customers,
            days,
            ..GenConfig::default()
        }
    }

    fn json(tps: &[Touchpoint]) -> Vec<String> {
        tps.iter().map(crate::codec::json::encode).collect()
    }

    fn raw(tp: &Touchpoint) -> RawTouchpoint {
        RawTouchpoint {
            event_id: Some(tp.event_id.clone()),
            customer_id: Some(tp.customer_id.clone()),
            channel: Some(tp.channel),
            kind: Some(tp.kind),
            timestamp: Some(tp.timestamp),
            value: tp.value,
            currency: tp.currency.clone(),
            cart_id: tp.cart_id.clone(),
            order_id: tp.order_id.clone(),
            campaign_id: tp.campaign_id.clone(),
            session_id: tp.session_id.clone(),
            survey: tp.survey,
            score: tp.score.map(i64::from),
            attributes: tp.attributes.clone(),
        }
    }

    #[test]
    fn same_seed_same_bytes() {
        let c = cfg(300, 30);
        let a = json(&generate(&c));
        assert!(a.len() > 1_000);
        assert_eq!(a, json(&generate(&c)));
    }

    #[test]
    fn different_seeds_differ() {
        let a = json(&generate(&cfg(100, 14)));
        let b = json(&generate(&GenConfig {
            seed: 7,
            ..cfg(100, 14)
        }));
        assert_ne!(a, b);
    }

    #[test]
    fn more_customers_keep_the_first_ones() {
        let few = generate(&cfg(40, 21));
        let many: Vec<Touchpoint> = generate(&cfg(80, 21))
            .into_iter()
            .filter(|t| t.customer_id.as_str() <= "cust-000040")
            .collect();
        assert_eq!(json(&few), json(&many));
    }

    #[test]
    fn every_touchpoint_is_valid_and_unique() {
        let c = cfg(500, 30);
        let tps = generate(&c);
        let clock = Clock {
            now: c.end_ms(),
            max_future: HOUR_MS,
        };
        let mut ids = HashSet::new();
        for tp in &tps {
            let valid = validate(raw(tp), clock).unwrap_or_else(|r| panic!("{tp:?}: {r}"));
            assert_eq!(&valid, tp);
            assert!(tp.timestamp >= c.start_ms && tp.timestamp < c.end_ms());
            assert!(ids.insert(tp.event_id.clone()), "duplicate {}", tp.event_id);
            if tp.value.is_some() {
                assert!(matches!(tp.currency.as_deref(), Some("EUR" | "USD")));
            }
            if tp.kind == TouchType::SurveyResponse {
                assert!(tp.survey.is_some() && tp.score.is_some());
            }
        }
    }

    #[test]
    fn sorted_within_the_jitter_bound() {
        let c = cfg(500, 30);
        let tps = generate(&c);
        let mut max = i64::MIN;
        let mut late = 0;
        let mut last: HashMap<&str, i64> = HashMap::new();
        for tp in &tps {
            assert!(
                tp.timestamp >= max.saturating_sub(c.disorder_ms),
                "{} is more than {} ms before {max}",
                tp.timestamp,
                c.disorder_ms
            );
            late += usize::from(tp.timestamp < max);
            max = max.max(tp.timestamp);
            // A customer's own touchpoints never go back in time.
            let prev = last.insert(tp.customer_id.as_str(), tp.timestamp);
            assert!(prev.is_none_or(|p| p <= tp.timestamp), "{tp:?}");
        }
        assert!(late > 0, "some touchpoints should be out of order");
        let strict = generate(&GenConfig {
            disorder_ms: 0,
            ..cfg(100, 10)
        });
        assert!(strict.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    }

    #[test]
    fn every_kind_that_matters_appears() {
        let tps = generate(&cfg(1_000, 30));
        let kinds: HashSet<TouchType> = tps.iter().map(|t| t.kind).collect();
        for k in [
            TouchType::PageView,
            TouchType::ProductView,
            TouchType::Search,
            TouchType::AddToCart,
            TouchType::RemoveFromCart,
            TouchType::CheckoutStarted,
            TouchType::OrderPlaced,
            TouchType::OrderReturned,
            TouchType::AppOpen,
            TouchType::StoreVisit,
            TouchType::MessageSent,
            TouchType::MessageOpened,
            TouchType::MessageClicked,
            TouchType::Unsubscribed,
            TouchType::SupportContact,
            TouchType::SupportResolved,
            TouchType::SurveyResponse,
            TouchType::LoyaltyRedeemed,
            TouchType::SocialInteraction,
        ] {
            assert!(kinds.contains(&k), "no {k}");
        }
        assert!(tps
            .iter()
            .any(|t| t.kind == TouchType::MessageClicked && t.campaign_id.is_some()));
        assert!(tps
            .iter()
            .all(|t| t.kind != TouchType::MessageClicked || t.campaign_id.is_some()));
        let surveys: HashSet<Survey> = tps.iter().filter_map(|t| t.survey).collect();
        assert_eq!(surveys.len(), 3);
        let channels: HashSet<Channel> = tps.iter().map(|t| t.channel).collect();
        assert!(channels.len() >= 10, "{channels:?}");
        assert!(tps
            .iter()
            .any(|t| t.attributes.get("device").is_some_and(|d| d == "ios")));
    }

    #[test]
    fn carts_add_up() {
        let tps = generate(&cfg(300, 30));
        // Per cart: the running total of adds minus removes equals the
        // checkout value, which equals the order value.
        let mut totals: HashMap<&str, u64> = HashMap::new();
        let cents = |v: Option<f64>| (v.unwrap() * 100.0).round() as u64;
        let mut checked = 0;
        for tp in &tps {
            let Some(cart) = tp.cart_id.as_deref() else {
                continue;
            };
            match tp.kind {
                TouchType::AddToCart => *totals.entry(cart).or_default() += cents(tp.value),
                TouchType::RemoveFromCart => *totals.entry(cart).or_default() -= cents(tp.value),
                TouchType::CheckoutStarted | TouchType::OrderPlaced => {
                    assert_eq!(totals.get(cart).copied(), Some(cents(tp.value)), "{tp:?}");
                    checked += 1;
                }
                _ => {}
            }
        }
        assert!(checked > 100);
    }

    #[test]
    fn carts_get_abandoned_recovered_and_customers_fatigued_and_lapse() {
        let c = cfg(1_000, 60);
        let tps = generate(&c);
        let mut by_customer: BTreeMap<&str, Vec<&Touchpoint>> = BTreeMap::new();
        for tp in &tps {
            by_customer.entry(&tp.customer_id).or_default().push(tp);
        }
        let (mut abandoned, mut recovered, mut fatigued, mut lapsed, mut clicked_no_order) =
            (0, 0, 0, 0, 0);
        for evs in by_customer.values() {
            let orders: Vec<&Touchpoint> = evs
                .iter()
                .copied()
                .filter(|t| t.kind == TouchType::OrderPlaced)
                .collect();
            // Carts: last activity, then no order at all within the hour.
            let mut last_activity: BTreeMap<&str, i64> = BTreeMap::new();
            for t in evs.iter().filter(|t| t.kind.is_cart_activity()) {
                let cart = t.cart_id.as_deref().unwrap();
                let prev = last_activity.get(cart).copied();
                // Activity after an abandonment (a return to checkout) is
                // a recovery attempt: count the first abandonment only.
                if prev.is_none_or(|p| t.timestamp - p < HOUR_MS) {
                    last_activity.insert(cart, t.timestamp);
                }
            }
            for (cart, at) in &last_activity {
                let closed = orders
                    .iter()
                    .any(|o| o.timestamp >= *at && o.timestamp - at < HOUR_MS);
                if !closed {
                    abandoned += 1;
                    if orders
                        .iter()
                        .any(|o| o.cart_id.as_deref() == Some(*cart) && o.timestamp - at >= HOUR_MS)
                    {
                        recovered += 1;
                    }
                }
            }
            // More than 10 messages in some 7 days.
            let sent: Vec<i64> = evs
                .iter()
                .filter(|t| t.kind == TouchType::MessageSent)
                .map(|t| t.timestamp)
                .collect();
            if sent.windows(11).any(|w| w[10] - w[0] < WEEK_MS) {
                fatigued += 1;
            }
            // No own touch in the last 30 days.
            let last_own = evs
                .iter()
                .filter(|t| t.kind.is_own())
                .map(|t| t.timestamp)
                .max();
            if last_own.is_some_and(|t| c.end_ms() - t > 30 * DAY_MS) {
                lapsed += 1;
            }
            for click in evs.iter().filter(|t| t.kind == TouchType::MessageClicked) {
                if !orders.iter().any(|o| {
                    o.timestamp >= click.timestamp && o.timestamp - click.timestamp <= DAY_MS
                }) {
                    clicked_no_order += 1;
                }
            }
        }
        assert!(abandoned >= 100, "abandoned {abandoned}");
        assert!(
            recovered >= 20 && recovered < abandoned / 2,
            "recovered {recovered} of {abandoned}"
        );
        assert!(fatigued >= 10, "fatigued {fatigued}");
        assert!(lapsed >= 50, "lapsed {lapsed}");
        assert!(
            clicked_no_order >= 50,
            "clicked without order {clicked_no_order}"
        );
        // Loyal customers order again and again; browsers never do.
        let repeat = by_customer
            .values()
            .filter(|e| {
                e.iter()
                    .filter(|t| t.kind == TouchType::OrderPlaced)
                    .count()
                    >= 3
            })
            .count();
        assert!(repeat >= 50, "repeat buyers {repeat}");
        let detractors = tps
            .iter()
            .filter(|t| t.survey == Some(Survey::Nps) && t.score.is_some_and(|s| s <= 6))
            .count();
        assert!(detractors >= 5, "detractors {detractors}");
    }

    #[test]
    fn parts_do_not_change_the_output() {
        let c = cfg(250, 21);
        let one = json(&stream_with(&c, 1).collect::<Vec<_>>());
        assert_eq!(one, json(&stream_with(&c, 3).collect::<Vec<_>>()));
        assert_eq!(one, json(&stream_with(&c, 8).collect::<Vec<_>>()));
    }

    #[test]
    fn empty_configs() {
        assert!(generate(&cfg(0, 30)).is_empty());
        assert!(generate(&cfg(10, 0)).is_empty());
        assert_eq!(stream(&cfg(10, 7)).len(), generate(&cfg(10, 7)).len());
    }
}
