//! `customer_value` (SPEC 4, "Customer lifetime value") from literal
//! touchpoints: when it is emitted, its plain sums, the population mean for
//! a one-order customer, orders without a value, and predicted CLV falling
//! as time passes without an order.

mod common;

use common::*;
use touchstream::bgnbd::BgNbd;
use touchstream::clv::{ClvModel, GammaGamma};
use touchstream::config::EngineConfig;

fn model() -> ClvModel {
    EngineConfig::default().clv()
}

fn order(h: &mut Harness, cust: &str, t: i64, value: Option<f64>) -> Vec<serde_json::Value> {
    let mut o = h.auto(cust, Ch::Web, Ty::OrderPlaced, t).currency("EUR");
    if let Some(v) = value {
        o = o.value(v);
    }
    let evs = h.send_ok(o);
    of_type(&evs, "customer_value")
}

#[test]
fn every_order_gets_one_customer_value_right_after_its_attribution() {
    let mut h = Harness::new();
    h.touch("c1", Ch::Email, Ty::MessageClicked, T0);
    let o = h
        .auto("c1", Ch::Web, Ty::OrderPlaced, T0 + HOUR)
        .value(20.0);
    let evs = h.send_ok(o);
    let kinds = types(&evs);
    let at = kinds
        .iter()
        .position(|k| *k == "order_attributed")
        .expect("attributed");
    assert_eq!(kinds[at + 1], "customer_value", "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "customer_value").count(), 1);
    // Not on other touchpoints.
    let evs = h.touch("c1", Ch::Web, Ty::PageView, T0 + 2 * HOUR);
    assert!(of_type(&evs, "customer_value").is_empty());
}

#[test]
fn sums_means_currency_and_p_alive_of_the_orders_so_far() {
    let mut h = Harness::new();
    order(&mut h, "c1", T0, Some(10.0));
    order(&mut h, "c1", T0 + 10 * DAY, None);
    let v = order(&mut h, "c1", T0 + 20 * DAY, Some(30.0)).remove(0);
    assert_eq!(v["orders"], 3);
    assert_close(&v["total_spend"], 40.0, "total_spend");
    assert_close(&v["average_order_value"], 20.0, "mean of the valued orders");
    assert_eq!(v["currency"], "EUR");
    assert_eq!(v["at"], T0 + 20 * DAY);
    // x = 2, t_x = T = 20 d at the order itself.
    assert_close(&v["p_alive"], p_alive(3, 20.0, 20.0), "p_alive");
    let m = model();
    // Gamma-Gamma: one valued repeat order of 30 (the first is left out).
    let mean = m.gamma_gamma.conditional_mean(1.0, 30.0);
    let expect = m.predict(2.0, 20.0, 20.0, mean);
    assert_close(
        &v["expected_orders"],
        expect.expected_orders,
        "expected_orders",
    );
    assert_close(&v["predicted_clv"], expect.predicted_clv, "predicted_clv");
}

#[test]
fn a_one_order_customer_is_worth_the_population_mean_whatever_it_spent() {
    let mut h = Harness::new();
    let big = order(&mut h, "big", T0, Some(5000.0)).remove(0);
    let small = order(&mut h, "small", T0, Some(5.0)).remove(0);
    assert_eq!(big["predicted_clv"], small["predicted_clv"]);
    let m = model();
    let expect = m.predict(0.0, 0.0, 0.0, m.gamma_gamma.population_mean());
    assert_close(
        &big["predicted_clv"],
        expect.predicted_clv,
        "population mean",
    );
    assert_close(&big["p_alive"], 1.0, "p_alive with one order");
    assert_close(&big["average_order_value"], 5000.0, "plain mean");
}

#[test]
fn orders_without_a_value_count_as_orders_but_not_as_money() {
    let mut h = Harness::new();
    order(&mut h, "c1", T0, None);
    let v = order(&mut h, "c1", T0 + 5 * DAY, None).remove(0);
    assert_eq!(v["orders"], 2);
    assert_close(&v["total_spend"], 0.0, "nothing spent");
    assert!(v["average_order_value"].is_null());
    let m = model();
    let expect = m.predict(1.0, 5.0, 5.0, m.gamma_gamma.population_mean());
    assert_close(
        &v["predicted_clv"],
        expect.predicted_clv,
        "population mean value",
    );
}

#[test]
fn predicted_clv_falls_in_the_snapshot_as_time_passes_without_an_order() {
    let mut h = Harness::new();
    for (i, v) in [40.0, 25.0, 60.0].into_iter().enumerate() {
        order(&mut h, "c1", T0 + i as i64 * 7 * DAY, Some(v));
    }
    let row = |h: &Harness| {
        let rows = h.engine.snapshot();
        let r = rows.iter().find(|r| r.customer_id == "c1").expect("row");
        (r.predicted_clv.expect("clv"), r.expected_orders.expect("n"))
    };
    let mut last = row(&h);
    for days in [30, 90, 200, 380] {
        h.advance(T0 + 14 * DAY + days * DAY);
        let now = row(&h);
        assert!(now.0 < last.0, "{days} d: {now:?} after {last:?}");
        assert!(now.1 < last.1);
        last = now;
    }
    // A customer without an order has none.
    h.touch("c2", Ch::Web, Ty::PageView, T0 + 400 * DAY);
    let rows = h.engine.snapshot();
    let c2 = rows.iter().find(|r| r.customer_id == "c2").expect("row");
    assert_eq!((c2.predicted_clv, c2.expected_orders), (None, None));
}

#[test]
fn a_late_order_earlier_than_the_first_takes_its_place() {
    let mut h = Harness::new();
    order(&mut h, "c1", T0 + HOUR, Some(100.0));
    // Arrives late (within the allowed lateness) but happened first: the
    // 100 becomes a repeat order's value, the 7 the first order's.
    let v = order(&mut h, "c1", T0, Some(7.0)).remove(0);
    let m = model();
    let mean = m.gamma_gamma.conditional_mean(1.0, 100.0);
    let t_x = HOUR as f64 / DAY as f64;
    let expect = m.predict(1.0, t_x, t_x, mean);
    assert_close(&v["predicted_clv"], expect.predicted_clv, "repeat mean 100");
}

#[test]
fn hundreds_of_orders_and_a_horizon_near_z_1_stay_finite() {
    let bg = BgNbd {
        r: 0.243,
        alpha: 30.898,
        a: 0.793,
        b: 2.426,
    };
    for x in [0.0, 1.0, 100.0, 300.0, 1000.0] {
        let e = bg.expected_orders(360.0, x, 300.0, 300.0);
        assert!(e.is_finite() && e >= 0.0, "x {x}: {e}");
    }
    // z = t/(α + T + t) within 1e-5 of 1: a tiny α, T = 0.
    let tiny = BgNbd { alpha: 0.003, ..bg };
    let e = tiny.expected_orders(360.0, 0.0, 0.0, 0.0);
    assert!(e.is_finite() && e > 0.0, "{e}");
    let m = ClvModel {
        bgnbd: bg,
        gamma_gamma: GammaGamma {
            p: 6.25,
            q: 3.74,
            v: 15.44,
        },
        horizon_months: 12,
        monthly_discount: 0.01,
    };
    let p = m.predict(500.0, 360.0, 361.0, 35.0);
    assert!(p.predicted_clv.is_finite() && p.predicted_clv > 0.0);
    // A daily buyer for a year is expected to go on nearly daily.
    assert!(p.expected_orders > 300.0, "{p:?}");
}
