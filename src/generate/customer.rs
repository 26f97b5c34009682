//! One customer being generated ([`Customer`]): its state, its start
//! (persona, arrival, lapse, phone, store, drawn in a fixed order from its
//! own RNG), the small helpers every kind of touch uses, and the finish
//! (clip to the period, order, number, jitter).
//!
//! What the customer does lives beside it, one `impl Customer` per room:
//! `sessions.rs` (its own sessions), `orders.rs` (carts and orders),
//! `messaging.rs` (what the business sends and the reactions). The order
//! of the draws is the output: moving a draw changes the traffic.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::calendar::Plan;
use super::events::{
    Ev, DEVICE_ANDROID, DEVICE_DESKTOP, DEVICE_IOS, DEVICE_MOBILE_WEB, NO_VALUE, STORE_BASE,
};
use super::habits::Habits;
use super::orders::Abandon;
use super::sampling::{mix, normal, pick};
use super::{GenConfig, Persona, SEC};
use crate::model::{Channel, Survey, TouchType, DAY_MS};

/// One customer being generated.
pub(super) struct Customer<'a> {
    pub(super) cfg: &'a GenConfig,
    pub(super) plan: &'a Plan,
    pub(super) rng: StdRng,
    pub(super) id: u32,
    pub(super) persona: Persona,
    pub(super) h: &'static Habits,
    pub(super) currency: u8,
    /// Attribute code of the phone, 0 without the app.
    pub(super) phone: u16,
    pub(super) sms: bool,
    pub(super) heavy: bool,
    pub(super) store: u16,
    /// First instant the customer exists.
    pub(super) first: i64,
    /// Own touches stop here (lapsing customers).
    pub(super) until: i64,
    pub(super) evs: Vec<Ev>,
    pub(super) sessions: u32,
    pub(super) carts: u32,
    pub(super) orders: u32,
    pub(super) abandons: Vec<Abandon>,
}

impl<'a> Customer<'a> {
    pub(super) fn new(cfg: &'a GenConfig, plan: &'a Plan, id: u32) -> Self {
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

    pub(super) fn run(mut self) -> Vec<Ev> {
        if self.cfg.days == 0 {
            return Vec::new();
        }
        self.organic();
        self.outbound();
        self.finish()
    }

    // -- small helpers ------------------------------------------------------

    pub(super) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.gen::<f64>() < p
    }

    /// A delay between `lo_s` and `hi_s` seconds.
    pub(super) fn secs(&mut self, lo_s: i64, hi_s: i64) -> i64 {
        self.rng.gen_range(lo_s * SEC..=hi_s * SEC)
    }

    pub(super) fn ev(&self, t: i64, kind: TouchType, channel: Channel) -> Ev {
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

    pub(super) fn push(&mut self, e: Ev) {
        self.evs.push(e);
    }

    pub(super) fn next_session(&mut self) -> u32 {
        self.sessions += 1;
        self.sessions
    }

    pub(super) fn price(&mut self) -> u32 {
        let p = libm::exp(self.h.price_mu + 0.6 * normal(&mut self.rng)).clamp(2.0, 400.0);
        (p as u32) * 100 + 99
    }

    pub(super) fn web_or_app(&mut self) -> Channel {
        if self.phone != 0 && self.chance(0.55) {
            Channel::MobileApp
        } else {
            Channel::Web
        }
    }

    pub(super) fn device_attr(&mut self, channel: Channel) -> u16 {
        if !self.chance(0.3) {
            return 0;
        }
        match channel {
            Channel::MobileApp => self.phone,
            _ if self.phone != 0 && self.chance(0.4) => DEVICE_MOBILE_WEB,
            _ => DEVICE_DESKTOP,
        }
    }

    pub(super) fn survey(&mut self, t: i64, survey: Survey) {
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
