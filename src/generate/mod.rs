//! Synthetic omnichannel traffic for `touchstream generate`: customers with
//! different habits browsing, filling and abandoning carts, ordering in the
//! shop or the app, answering (or ignoring) campaigns, calling support and
//! answering surveys.
//!
//! Owns the customer model and the event layout only. It is pure: no I/O,
//! no clock, no global RNG. The output is a function of the [`GenConfig`]
//! alone, and byte-identical across runs and platforms:
//!
//! - every customer draws from its own [`StdRng`](rand::rngs::StdRng)
//!   (ChaCha12, stable within rand 0.8) seeded by `(seed, customer number)`,
//!   so adding customers never changes the traffic of the existing ones;
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
//!
//! This file holds the public API (personas, [`GenConfig`], [`generate`],
//! [`stream`], [`Touchpoints`]) and the parallel driver. The rooms:
//! `events.rs` (the compact record and attribute codes), `habits.rs` (the
//! personas' habits), `calendar.rs` (the campaign calendar), `sampling.rs`
//! (the random draws), `customer.rs` (one customer: state, start, helpers,
//! finish), and what a customer does: `sessions.rs`, `orders.rs`,
//! `messaging.rs`.

mod calendar;
mod customer;
mod events;
mod habits;
mod messaging;
mod orders;
mod sampling;
mod sessions;

use calendar::Plan;
use customer::Customer;
use events::{attribute, Ev, CURRENCIES, NO_VALUE};

use crate::model::{EventTime, Touchpoint, DAY_MS};

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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};

    use super::*;
    use crate::model::{Channel, Survey, TouchType, HOUR_MS};
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
