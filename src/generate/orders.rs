//! Carts and orders: a cart filled (and sometimes trimmed), then ordered or
//! abandoned ([`Abandon`]); an order with what may follow it (loyalty
//! points, a return, an NPS survey, a support contact); an abandoned cart
//! recovered later.

use rand::Rng;

use super::customer::Customer;
use super::events::POINTS_BASE;
use crate::model::{Channel, Survey, TouchType, DAY_MS};

/// A cart left without an order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Abandon {
    pub(super) cart: u32,
    /// Last cart activity.
    pub(super) at: i64,
    pub(super) cents: u32,
    /// The cart of a planned purchase (more likely to come back).
    pub(super) intent: bool,
}

impl Customer<'_> {
    /// A session that fills a cart and orders it with probability `buy`,
    /// else abandons it (before or at checkout).
    pub(super) fn cart(
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

    pub(super) fn order(
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

    /// The customer comes back and orders an abandoned cart.
    pub(super) fn recover(&mut self, t0: i64, a: Abandon, campaign: u32) {
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
}
