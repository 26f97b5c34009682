//! The BG/NBD model against published numbers: the CDNOW fit of Fader,
//! Hardie & Lee (2005) through `touchstream fit-churn`, and p_alive against
//! reference values computed independently (Python, float64).

use std::process::Command;

use touchstream::bgnbd::BgNbd;

/// 2026-01-01T10:00:00Z, the epoch of the regression test below.
const W: i64 = 1_767_261_600_000;

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/bgnbd_reference.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `touchstream fit-churn` over the CDNOW calibration period, with `extra`.
fn fit_cdnow(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_touchstream"))
        .args(["fit-churn", "--observation-end", "1997-09-30T00:00:00Z"])
        .args(extra)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/cdnow_calibration.jsonl"
        ))
        .output()
        .unwrap()
}

fn sig3(x: f64) -> String {
    format!("{:.2e}", x)
}

#[test]
fn fit_churn_reproduces_the_published_cdnow_estimates() {
    let out = fit_cdnow(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let get = |k: &str| fit[k].as_f64().unwrap();
    assert_eq!(fit["customers"].as_u64(), Some(2357));
    // Published: r = 0.243, alpha = 4.414 weeks = 30.90 days, a = 0.793, b = 2.426.
    assert_eq!(sig3(get("r")), sig3(0.243));
    assert_eq!(sig3(get("alpha")), sig3(30.9));
    assert_eq!(sig3(get("a")), sig3(0.793));
    assert_eq!(sig3(get("b")), sig3(2.43));
    let r = reference();
    let ll_days = r["fit_days"]["ll"].as_f64().unwrap();
    assert!(
        (get("log_likelihood") - ll_days).abs() < 0.01,
        "LL {} vs {}",
        get("log_likelihood"),
        ll_days
    );
    // In weeks the published LL is -9582.4: days differ by -ln(7)·Σx.
    let sum_x = r["sum_x"].as_f64().unwrap();
    assert!((get("log_likelihood") + 7f64.ln() * sum_x - (-9582.4)).abs() < 0.1);
}

#[test]
fn fit_churn_prints_a_config_section() {
    let out = fit_cdnow(&[]);
    let text = String::from_utf8(out.stdout).unwrap();
    let section = &text[text.find("[churn]").expect("a [churn] section")..];
    let cfg = touchstream::config::Config::from_parts("fit", section, &[])
        .expect("pastes into the config");
    assert!((cfg.churn.alpha - 30.9).abs() < 0.01);
}

#[test]
fn p_alive_matches_the_closed_form_reference_to_1e9() {
    let r = reference();
    let cases = r["p_alive_cases"].as_array().unwrap();
    assert!(cases.len() >= 200);
    for c in cases {
        let f = |k: &str| c[k].as_f64().unwrap();
        let m = BgNbd {
            r: f("r"),
            alpha: f("alpha"),
            a: f("a"),
            b: f("b"),
        };
        let got = m.p_alive(f("x"), f("t_x_days"), f("T_days"));
        let want = f("p_alive");
        let tol = 1e-9 * want.abs().max(1e-300);
        assert!((got - want).abs() <= tol.max(1e-15), "{c}: got {got}");
    }
}

// ----------------------------------------------------------------------
// Customer lifetime value (SPEC 4): Gamma-Gamma and the BG/NBD
// expectation against lifetimes 0.11.3 (tests/data/clv_reference.json,
// made by scripts/clv_reference.py).

fn clv_reference() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/clv_reference.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

#[test]
fn fit_churn_reproduces_the_published_gamma_gamma_estimates() {
    let out = fit_cdnow(&["--json"]);
    assert!(out.status.success());
    let fit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let clv = &fit["clv"];
    let get = |k: &str| clv[k].as_f64().unwrap();
    // Published (Fader & Hardie, 946 repeat customers): p = 6.25, q = 3.74, v = 15.44.
    assert_eq!(clv["customers"].as_u64(), Some(946));
    assert_eq!(sig3(get("p")), sig3(6.25));
    assert_eq!(sig3(get("q")), sig3(3.74));
    assert_eq!(sig3(get("v")), sig3(15.44));
    let r = clv_reference();
    let gg = &r["gamma_gamma_fit"];
    assert!((get("log_likelihood") - gg["ll"].as_f64().unwrap()).abs() < 1e-4);
    // lifetimes' tutorial reports the correlation of frequency and value (0.11).
    assert!(
        rel(
            get("correlation"),
            gg["corr_frequency_monetary"].as_f64().unwrap()
        ) < 1e-9
    );
    assert!(fit["clv_warning"].is_null());
    // The TOML form carries a [clv] section that pastes into the config.
    let out = fit_cdnow(&[]);
    let text = String::from_utf8(out.stdout).unwrap();
    let section = &text[text.find("[churn]").expect("[churn]")..];
    let cfg = touchstream::config::Config::from_parts("fit", section, &[]).expect("pastes");
    assert!((cfg.clv.q - 3.74).abs() < 0.01, "{text}");
    assert!(text.contains("2357 customers in the input"), "{text}");
}

#[test]
fn expected_orders_and_clv_equal_lifetimes_for_every_cdnow_customer() {
    // lifetimes counts one purchase a day (x, t_x, T and m per day), as
    // fit-churn does; the model's math is what is compared here.
    let r = clv_reference();
    let p = &r["params"];
    let f = |k: &str| p[k].as_f64().unwrap();
    let model = touchstream::clv::ClvModel {
        bgnbd: BgNbd {
            r: f("r"),
            alpha: f("alpha"),
            a: f("a"),
            b: f("b"),
        },
        gamma_gamma: touchstream::clv::GammaGamma {
            p: f("p"),
            q: f("q"),
            v: f("v"),
        },
        horizon_months: 12,
        monthly_discount: 0.01,
    };
    let customers = r["customers"].as_array().unwrap();
    assert_eq!(customers.len(), 2357);
    let mut worst = (0.0, 0.0, 0.0);
    for c in customers {
        let g = |k: &str| c[k].as_f64().unwrap();
        let (x, t_x, big_t, m) = (g("x"), g("t_x"), g("T"), g("m"));
        let mean = model.gamma_gamma.conditional_mean(x, m);
        let e = model.bgnbd.expected_orders(360.0, x, t_x, big_t);
        let pred = model.predict(x, t_x, big_t, mean);
        worst.0 = f64::max(worst.0, rel(mean, g("avg_value")));
        worst.1 = f64::max(worst.1, rel(e, g("expected_orders")));
        worst.2 = f64::max(worst.2, rel(pred.predicted_clv, g("clv")));
        assert_eq!(e, pred.expected_orders);
    }
    assert!(
        worst.0 < 1e-12 && worst.1 < 1e-6 && worst.2 < 1e-6,
        "worst relative differences (mean value, expected orders, clv): {worst:?}"
    );
}

#[test]
fn the_bgnbd_expectation_holds_where_2f1_is_hard() {
    // Reference values computed with mpmath at 30 digits: x up to 1000, z up
    // to 0.999, three parameter sets.
    let r = clv_reference();
    let mut checked = 0;
    for case in r["hyp2f1_cases"].as_array().unwrap() {
        let g = |k: &str| case[k].as_f64().unwrap();
        let expected: f64 = case["expected_30"].as_str().unwrap().parse().unwrap();
        let bg = BgNbd {
            r: g("r"),
            alpha: g("alpha"),
            a: g("a_param"),
            b: g("b_param"),
        };
        let e = bg.expected_orders(g("t"), g("x"), g("t_x"), g("T"));
        assert!(
            e.is_finite() && rel(e, expected) < 1e-9,
            "{}: {e} vs {expected}",
            case["label"]
        );
        checked += 1;
    }
    assert!(checked >= 60);
}

/// regression: `fit-churn` printed floats that did not paste back into the config.
#[test]
fn fit_churn_output_always_pastes_into_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let lines: Vec<String> = (0..2)
        .map(|i| format!(r#"{{"event_id":"o{i}","customer_id":"c","channel":"web","type":"order_placed","timestamp":{}}}"#, W + i * 86_400_000 * 3))
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_touchstream"))
        .args(["fit-churn"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let section = &text[text.find("[churn]").unwrap()..];
    touchstream::config::Config::from_parts("fit", section, &[]).expect("pastes into the config");
}
