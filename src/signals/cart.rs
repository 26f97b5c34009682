//! `cart_abandoned` and `cart_recovered` (SPEC 4, 7 "Carts").
//!
//! Carts are keyed by `cart_id` (no id: one unnamed cart per customer). A
//! cart becomes eligible with `add_to_cart` or `checkout_started`; its lazy
//! timer is due at its latest activity + `cart_timeout`. Any order closes
//! every open cart of the customer. An abandonment is remembered for
//! `recovery_window` so that an order can recover it.

use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

use crate::model::{Channel, EventTime, Payload, TouchType, Touchpoint};
use crate::signals::config::EngineConfig;
use crate::signals::{Lane, Lanes, Packed};
use crate::time::timers::{LazyTimer, PopAction, TimerKey, TimerKind, TimerQueue, TimerTarget};

/// Carts kept per customer at most (a defence against unbounded cart ids
/// from one customer). Beyond it a cart that was never eligible is dropped
/// first, else the one with the oldest activity. Far above real use.
pub const MAX_OPEN_CARTS: usize = 64;

/// One open cart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    id: Option<Box<str>>,
    eligible: bool,
    /// Σ add_to_cart values − Σ remove_from_cart values.
    sum: f64,
    /// Latest `checkout_started` carrying a value: (time, value).
    checkout: Option<(EventTime, f64)>,
    /// Latest currency seen on cart activity: (time, code).
    currency: Option<(EventTime, Box<str>)>,
    last_activity: EventTime,
    last_channel: Channel,
    timer: LazyTimer,
}

/// A remembered abandonment, waiting for a recovering order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Abandonment {
    cart_id: Option<Box<str>>,
    at: EventTime,
}

/// Cart state of one customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CartState {
    carts: ThinVec<Cart>,
    abandonments: ThinVec<Abandonment>,
}

/// The changelog form of a customer's carts (state format 2), with the
/// closed carts that live in the customer's lanes (see [`Lane::Closed`]).
#[derive(Serialize)]
pub struct CartForm<'a> {
    carts: &'a [Cart],
    abandonments: &'a [Abandonment],
    closed: Vec<u64>,
}

/// [`CartForm`] as read.
#[derive(Deserialize)]
pub struct CartFormOwned {
    carts: ThinVec<Cart>,
    abandonments: ThinVec<Abandonment>,
    #[serde(default)]
    closed: Vec<u64>,
}

impl CartState {
    /// The changelog form of `state` (none: no cart) and the closed carts.
    pub fn form<'a>(state: Option<&'a CartState>, lanes: &Lanes) -> CartForm<'a> {
        CartForm {
            carts: state.map_or(&[], |c| &c.carts[..]),
            abandonments: state.map_or(&[], |c| &c.abandonments[..]),
            closed: lanes.lane(Lane::Closed).iter().map(|p| p.bits()).collect(),
        }
    }

    /// Reads the changelog form: the carts, and the closed carts into
    /// `lanes` (the newest [`MAX_CLOSED_CARTS`]).
    pub fn from_form(f: CartFormOwned, lanes: &mut Lanes) -> CartState {
        let skip = f.closed.len().saturating_sub(MAX_CLOSED_CARTS);
        for &k in &f.closed[skip..] {
            lanes.push(Lane::Closed, Packed::from_bits(k));
        }
        CartState {
            carts: f.carts,
            abandonments: f.abandonments,
        }
    }
}

/// A customer's closed carts live in the [`Lane::Closed`] lane: 6 bytes a
/// cart, and no allocation of the rare part for a customer whose only
/// cart state is a cart abandoned long ago.
impl Lanes {
    fn is_closed(&self, key: u64) -> bool {
        let k = Packed::from_bits(key);
        self.lane(Lane::Closed).contains(&k)
    }

    fn close_cart(&mut self, key: u64) {
        if self.lane(Lane::Closed).len() >= MAX_CLOSED_CARTS {
            self.remove_front(Lane::Closed, 1);
        }
        self.push(Lane::Closed, Packed::from_bits(key));
    }

    /// An order closes every cart: each may be abandoned again.
    pub fn reopen_carts(&mut self) {
        let n = self.lane(Lane::Closed).len();
        self.remove_front(Lane::Closed, n);
    }
}

/// Abandoned carts remembered per customer at most (beyond it the oldest is
/// forgotten and could be abandoned again; far above real use).
pub const MAX_CLOSED_CARTS: usize = 255;

fn cart_key(id: Option<&str>) -> u64 {
    match id {
        None => xxhash_rust::xxh3::xxh3_64(b"\0"),
        Some(id) => xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), 1),
    }
}

impl CartState {
    /// Heap bytes used (approximate).
    pub fn heap_bytes(&self) -> usize {
        super::thin_bytes(&self.carts)
            + super::thin_bytes(&self.abandonments)
            + self
                .carts
                .iter()
                .map(|c| {
                    c.id.as_ref().map_or(0, |s| s.len())
                        + c.currency.as_ref().map_or(0, |s| s.1.len())
                })
                .sum::<usize>()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.carts.is_empty() && self.abandonments.is_empty()
    }

    /// Applies cart activity (add, remove, checkout); returns whether the
    /// cart just became eligible (a cart "started").
    pub fn on_activity(
        &mut self,
        cfg: &EngineConfig,
        tp: &Touchpoint,
        timers: &mut TimerQueue,
        slot: u32,
        lanes: &Lanes,
    ) -> bool {
        let id = tp.cart_id.as_deref();
        if lanes.is_closed(cart_key(id)) {
            return false; // not abandoned again until an order closes it
        }
        let idx = match self.carts.iter().position(|c| c.id.as_deref() == id) {
            Some(i) => i,
            None => {
                if self.carts.len() >= MAX_OPEN_CARTS {
                    let oldest = self
                        .carts
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, c)| (c.eligible, c.last_activity))
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    let mut gone = self.carts.remove(oldest);
                    timers.cancel(&mut gone.timer);
                }
                if self.carts.len() == self.carts.capacity() {
                    self.carts.reserve_exact(1);
                }
                self.carts.push(Cart {
                    id: id.map(Into::into),
                    eligible: false,
                    sum: 0.0,
                    checkout: None,
                    currency: None,
                    last_activity: tp.timestamp,
                    last_channel: tp.channel,
                    timer: LazyTimer::default(),
                });
                self.carts.len() - 1
            }
        };
        let cart = &mut self.carts[idx];
        let was_eligible = cart.eligible;
        let t = tp.timestamp;
        let v = tp.value.unwrap_or(0.0);
        match tp.kind {
            // Saturating: finite values can still add up beyond f64's
            // range, and neither outputs nor the changelog (JSON) can carry
            // an infinity.
            TouchType::AddToCart => {
                cart.sum = (cart.sum + v).min(f64::MAX);
                cart.eligible = true;
            }
            TouchType::RemoveFromCart => cart.sum = (cart.sum - v).max(f64::MIN),
            TouchType::CheckoutStarted => {
                cart.eligible = true;
                if let Some(value) = tp.value {
                    if cart.checkout.is_none_or(|(ct, _)| t >= ct) {
                        cart.checkout = Some((t, value));
                    }
                }
            }
            _ => {}
        }
        if let Some(cur) = tp.currency.as_deref() {
            if cart.currency.as_ref().is_none_or(|(ct, _)| t >= *ct) {
                cart.currency = Some((t, cur.into()));
            }
        }
        if t >= cart.last_activity {
            cart.last_activity = t;
            cart.last_channel = tp.channel;
        }
        if cart.eligible {
            let due = cart.last_activity.saturating_add(cfg.cart_timeout);
            timers.set(
                &mut cart.timer,
                due,
                TimerTarget {
                    slot,
                    kind: TimerKind::Cart,
                },
            );
        }
        cart.eligible && !was_eligible
    }

    /// An order: closes every open cart and returns the recovery, if any
    /// (the caller reopens the closed carts: [`Lanes::reopen_carts`]).
    pub fn on_order(
        &mut self,
        cfg: &EngineConfig,
        tp: &Touchpoint,
        timers: &mut TimerQueue,
    ) -> Option<Payload> {
        for cart in &mut self.carts {
            timers.cancel(&mut cart.timer);
        }
        self.carts = ThinVec::new();
        let t = tp.timestamp;
        let in_window = |a: &Abandonment| t >= a.at && t - a.at <= cfg.recovery_window;
        let by_id = tp.cart_id.as_deref().and_then(|id| {
            self.abandonments
                .iter()
                .rposition(|a| a.cart_id.as_deref() == Some(id) && in_window(a))
        });
        let pick = by_id.or_else(|| {
            self.abandonments
                .iter()
                .enumerate()
                .filter(|(_, a)| in_window(a))
                .max_by_key(|(i, a)| (a.at, *i))
                .map(|(i, _)| i)
        })?;
        let a = self.abandonments.remove(pick);
        super::free_if_empty(&mut self.abandonments);
        Some(Payload::CartRecovered {
            cart_id: a.cart_id.map(String::from),
            order_id: tp.order_id.clone(),
            order_value: tp.value,
            abandoned_at: a.at,
        })
    }

    /// Forgets abandonments no order can recover any more.
    pub fn prune(&mut self, cfg: &EngineConfig, horizon: EventTime) {
        self.abandonments
            .retain(|a| a.at.saturating_add(cfg.recovery_window) >= horizon);
        super::free_if_empty(&mut self.abandonments);
    }

    /// A cart timer popped from the queue. Returns the abandonment payload
    /// when it fires, and whether it fired at all.
    pub fn on_timer(
        &mut self,
        key: TimerKey,
        target: TimerTarget,
        timers: &mut TimerQueue,
        lanes: &mut Lanes,
    ) -> (PopAction, Option<Payload>) {
        let Some(i) = self.carts.iter().position(|c| c.timer.queued == key) else {
            return (PopAction::Stale, None);
        };
        let action = timers.resolve(&mut self.carts[i].timer, key, target);
        if action != PopAction::Fire {
            return (action, None);
        }
        // An abandoned cart keeps only its key until an order closes it.
        let cart = self.carts.remove(i);
        super::free_if_empty(&mut self.carts);
        lanes.close_cart(cart_key(cart.id.as_deref()));
        let cart_value = match cart.checkout {
            Some((_, v)) => v,
            None => cart.sum.max(0.0),
        };
        let payload = Payload::CartAbandoned {
            cart_id: cart.id.as_deref().map(String::from),
            cart_value,
            currency: cart.currency.as_ref().map(|(_, c)| c.to_string()),
            channel: cart.last_channel,
            last_activity_at: cart.last_activity,
        };
        let cart_id = cart.id.clone();
        self.abandonments.push(Abandonment {
            cart_id,
            at: key.due,
        });
        (PopAction::Fire, Some(payload))
    }

    /// Re-creates the queue entries of restored carts.
    pub fn restore_timers(&mut self, timers: &mut TimerQueue, slot: u32) {
        for cart in &mut self.carts {
            timers.restore(
                &mut cart.timer,
                TimerTarget {
                    slot,
                    kind: TimerKind::Cart,
                },
            );
        }
    }

    /// Cancels every timer (eviction).
    pub fn cancel_timers(&mut self, timers: &mut TimerQueue) {
        for cart in &mut self.carts {
            timers.cancel(&mut cart.timer);
        }
    }
}
