//! The BG/NBD model against published numbers: the CDNOW fit of Fader,
//! Hardie & Lee (2005) through `touchstream fit-churn`, and p_alive against
//! reference values computed independently (Python, float64).

use std::process::Command;

use touchstream::bgnbd::BgNbd;

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/bgnbd_reference.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn sig3(x: f64) -> String {
    format!("{:.2e}", x)
}

#[test]
fn fit_churn_reproduces_the_published_cdnow_estimates() {
    let out = Command::new(env!("CARGO_BIN_EXE_touchstream"))
        .args([
            "fit-churn",
            "--json",
            "--observation-end",
            "1997-09-30T00:00:00Z",
        ])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/cdnow_calibration.jsonl"
        ))
        .output()
        .unwrap();
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
    let out = Command::new(env!("CARGO_BIN_EXE_touchstream"))
        .args(["fit-churn", "--observation-end", "1997-09-30T00:00:00Z"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/cdnow_calibration.jsonl"
        ))
        .output()
        .unwrap();
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
