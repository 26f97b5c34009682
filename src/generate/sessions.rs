//! The customer's own sessions: planned purchases and organic sessions
//! laid out day by day, then run one after the other (browsing, the app,
//! store visits, social, support), and the campaign landings.
//!
//! Carts and orders are in `orders.rs`; what the business sends is in
//! `messaging.rs`.

use rand::Rng;

use super::customer::Customer;
use super::events::{NETWORK_BASE, TOPIC_BASE};
use super::habits::{SessionKind, HOURS, ORGANIC};
use super::sampling::{pick, poisson};
use super::{Persona, MIN};
use crate::model::{Channel, Survey, TouchType, DAY_MS, HOUR_MS};

impl Customer<'_> {
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
    pub(super) fn organic(&mut self) {
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
    pub(super) fn open_session(
        &mut self,
        t: i64,
        channel: Channel,
        session: u32,
        campaign: u32,
    ) -> i64 {
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
    pub(super) fn views(&mut self, mut t: i64, channel: Channel, session: u32, n: u32) -> i64 {
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
    pub(super) fn support(&mut self, t: i64) -> i64 {
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

    /// A browsing session on a given channel (a campaign landing).
    pub(super) fn browse_from(&mut self, t: i64, channel: Channel, campaign: u32) -> i64 {
        let s = self.next_session();
        let t = self.open_session(t, channel, s, campaign);
        let n = self.rng.gen_range(1..=4);
        self.views(t, channel, s, n)
    }
}
