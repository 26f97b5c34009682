//! What the business sends one customer and how it reacts: the calendar's
//! campaigns that reach it, a flash-sale week for heavily messaged
//! customers, abandoned-cart reminders, then opens, clicks, unsubscribes,
//! the landings and recoveries that follow, and recoveries without a
//! reminder.

use rand::Rng;

use super::calendar::REMINDER;
use super::customer::Customer;
use super::sampling::exponential;
use super::{MIN, SEC, WEEK_MS};
use crate::model::{Channel, TouchType, DAY_MS, HOUR_MS};

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

impl Customer<'_> {
    pub(super) fn outbound(&mut self) {
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
}
