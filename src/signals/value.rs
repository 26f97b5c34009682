//! `customer_value` (SPEC 4, "Customer lifetime value"): what a customer's
//! orders were worth and what the next months of them are predicted to be
//! worth, on every `order_placed`, after `order_attributed`.
//!
//! The purchase process (x, t_x, T) is the churn signal's (orders counted
//! one by one, T up to the customer's clock); this module keeps only the
//! money: the sum and count of valued orders, the first order's value
//! apart (the Gamma-Gamma mean m̄ is over the orders after the first), and
//! the latest currency. It lives behind a pointer that customers without
//! an order never allocate.

use serde::{Deserialize, Serialize};

use crate::clv::Prediction;
use crate::model::{EventTime, Payload, Touchpoint, DAY_MS};
use crate::signals::churn::Churn;
use crate::signals::config::EngineConfig;

/// The money side of a customer's orders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueState {
    /// Sum of every order's `value` (returns not deducted).
    pub total_spend: f64,
    /// Orders that carried a `value`.
    pub valued: u32,
    /// Sum of the values of the orders after the first.
    pub repeat_sum: f64,
    /// Orders after the first that carried a value.
    pub repeat_valued: u32,
    /// The first order's value (by event time; `None` without one).
    pub first_value: Option<f64>,
    /// Currency of the latest order carrying one, and that order's time.
    pub currency: Option<(EventTime, Box<str>)>,
}

impl ValueState {
    /// Records an order. `first_before` is the customer's earliest order
    /// time before this one (`None` for a first order): an order earlier
    /// than it (a late record) becomes the first, and the former first a
    /// repeat order.
    pub fn on_order(&mut self, tp: &Touchpoint, first_before: Option<EventTime>) {
        let value = tp.value;
        if let Some(v) = value {
            self.total_spend += v;
            self.valued += 1;
        }
        match first_before {
            Some(first) if tp.timestamp >= first => self.add_repeat(value),
            Some(_) => {
                let former = std::mem::replace(&mut self.first_value, value);
                self.add_repeat(former);
            }
            None => self.first_value = value,
        }
        if let Some(c) = &tp.currency {
            if self
                .currency
                .as_ref()
                .is_none_or(|(at, _)| tp.timestamp >= *at)
            {
                self.currency = Some((tp.timestamp, c.as_str().into()));
            }
        }
    }

    fn add_repeat(&mut self, value: Option<f64>) {
        if let Some(v) = value {
            self.repeat_sum += v;
            self.repeat_valued += 1;
        }
    }

    /// The Gamma-Gamma conditional mean value of the customer's orders.
    pub fn mean_value(&self, cfg: &EngineConfig) -> f64 {
        let x = f64::from(self.repeat_valued);
        let m = if self.repeat_valued > 0 {
            self.repeat_sum / x
        } else {
            0.0
        };
        cfg.gamma_gamma.conditional_mean(x, m)
    }

    /// Approximate heap bytes.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.currency.as_ref().map_or(0, |(_, c)| c.len())
    }
}

/// The customer's predicted orders and value at `clock` (`None` before a
/// first order).
pub fn predict(
    cfg: &EngineConfig,
    churn: &Churn,
    value: &ValueState,
    clock: EventTime,
) -> Option<Prediction> {
    if churn.orders == 0 {
        return None;
    }
    let days = |ms: i64| ms as f64 / DAY_MS as f64;
    let x = f64::from(churn.orders - 1);
    let t_x = days(churn.last_order - churn.first_order);
    let big_t = days(clock.max(churn.last_order) - churn.first_order);
    if churn.orders == 1 && big_t == 0.0 {
        // A first order at its own time: x = t_x = T = 0 and the population
        // mean value, the same prediction for every such customer.
        return Some(first_order(cfg));
    }
    Some(cfg.clv().predict(x, t_x, big_t, value.mean_value(cfg)))
}

/// The prediction of a customer whose first order is now, memoised per
/// model (most orders in most traffic are first orders, and each
/// prediction sums twelve hypergeometric series).
fn first_order(cfg: &EngineConfig) -> Prediction {
    use std::cell::Cell;
    type Key = [u64; 9];
    thread_local! {
        static MEMO: Cell<Option<(Key, Prediction)>> = const { Cell::new(None) };
    }
    let m = cfg.clv();
    let key: Key = [
        m.bgnbd.r.to_bits(),
        m.bgnbd.alpha.to_bits(),
        m.bgnbd.a.to_bits(),
        m.bgnbd.b.to_bits(),
        m.gamma_gamma.p.to_bits(),
        m.gamma_gamma.q.to_bits(),
        m.gamma_gamma.v.to_bits(),
        u64::from(m.horizon_months),
        m.monthly_discount.to_bits(),
    ];
    MEMO.with(|memo| match memo.get() {
        Some((k, p)) if k == key => p,
        _ => {
            let p = m.predict(0.0, 0.0, 0.0, m.gamma_gamma.population_mean());
            memo.set(Some((key, p)));
            p
        }
    })
}

/// The `customer_value` payload after an order (the order already
/// recorded in `churn` and `value`).
pub fn payload(
    cfg: &EngineConfig,
    churn: &Churn,
    value: &ValueState,
    clock: EventTime,
) -> Option<Payload> {
    let prediction = predict(cfg, churn, value, clock)?;
    Some(Payload::CustomerValue {
        orders: churn.orders,
        total_spend: value.total_spend,
        average_order_value: (value.valued > 0)
            .then(|| value.total_spend / f64::from(value.valued)),
        expected_orders: prediction.expected_orders,
        predicted_clv: prediction.predicted_clv,
        currency: value.currency.as_ref().map(|(_, c)| c.to_string()),
        p_alive: churn.p_alive(cfg, clock).unwrap_or(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Channel, TouchType};

    fn order(id: &str, t: EventTime, value: Option<f64>) -> Touchpoint {
        let mut tp = Touchpoint::new(id, "c", Channel::Web, TouchType::OrderPlaced, t);
        tp.value = value;
        tp.currency = Some("EUR".into());
        tp
    }

    #[test]
    fn a_late_earlier_order_becomes_the_first_and_the_former_first_a_repeat() {
        let mut v = ValueState::default();
        v.on_order(&order("a", 10 * DAY_MS, Some(30.0)), None);
        v.on_order(&order("b", 20 * DAY_MS, None), Some(10 * DAY_MS));
        assert_eq!((v.repeat_valued, v.first_value), (0, Some(30.0)));
        v.on_order(&order("c", 5 * DAY_MS, Some(7.0)), Some(10 * DAY_MS));
        assert_eq!(v.first_value, Some(7.0));
        assert_eq!((v.repeat_valued, v.repeat_sum), (1, 30.0));
        assert_eq!((v.valued, v.total_spend), (2, 37.0));
        // The latest currency by event time stays the 20th day's.
        assert_eq!(v.currency.as_ref().map(|c| c.0), Some(20 * DAY_MS));
    }
}
