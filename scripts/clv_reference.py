#!/usr/bin/env python3
"""Reference numbers for the customer-lifetime-value signal (SPEC section 4,
"Customer lifetime value"), computed with the `lifetimes` PyPI package,
version 0.11.3 (the same release whose CDNOW_sample.txt built
tests/data/cdnow_calibration.jsonl), plus mpmath for exact hypergeometric
values.

Writes tests/data/clv_reference.json to stdout:

    python3 -m venv /tmp/clvenv
    /tmp/clvenv/bin/pip install lifetimes==0.11.3 numpy==2.4.6 pandas==3.1.1 \
        scipy==1.17.1 autograd==1.9.1 mpmath==1.4.1
    /tmp/clvenv/bin/python scripts/clv_reference.py > tests/data/clv_reference.json

Versions checked; the two give the same file except the "versions" line,
the last digit of one customer's m/avg_value/clv (cdnow-1901, pandas'
summation order), the 16th digit of the correlation and the optimizer's raw
Gamma-Gamma output (from the 9th digit on; "mle" and p, q, v agree):
  * lifetimes 0.11.3, numpy 2.4.6, pandas 3.1.1, scipy 1.17.1, autograd 1.9.1,
    mpmath 1.4.1 (what a plain `pip install lifetimes==0.11.3` gives on
    Python 3.11), and
  * lifetimes 0.11.3, numpy 1.26.4, pandas 1.5.3, scipy 1.11.4, autograd 1.6.2,
    mpmath 1.3.0.

Options: --cdnow PATH (default: lifetimes/datasets/CDNOW_sample.txt from the
installed package), --jsonl PATH (default: tests/data/cdnow_calibration.jsonl
next to this script's repo).

What it computes
----------------
All times are in DAYS; the observation end is 1997-09-30 (inclusive day).

* "customers": lifetimes.utils.summary_data_from_transaction_data(
      transactions, 'sample_id', 'date', monetary_value_col='amount',
      observation_period_end='1997-09-30', freq='D')
  on all rows of CDNOW_sample.txt (lifetimes drops rows after the end itself).
  lifetimes first SUMS the amounts of a customer's rows on the same day into
  one purchase, so x = distinct purchase days - 1, t_x = last day - first day,
  T = 1997-09-30 - first day, and m = mean of the day totals of the repeat
  days (first day excluded), 0 when x = 0.  Then, with params_ set directly
  (no fit) to r=0.243, alpha=30.898, a=0.793, b=2.426, p=6.25, q=3.74,
  v=15.44:
    expected_orders = BetaGeoFitter.conditional_expected_number_of_purchases_up_to_time(360, x, t_x, T)
    avg_value       = GammaGammaFitter.conditional_expected_average_profit(x, m)
    clv             = GammaGammaFitter.customer_lifetime_value(bgf, x, t_x, T, m,
                          time=12, discount_rate=0.01, freq='D')
  i.e. clv = sum_{k=1..12} avg_value * (E(30k) - E(30(k-1))) / 1.01**k with
  E(t) the conditional expectation above (E(0) = 0).
  The same quantities are recomputed in mpmath (40 digits) and the largest
  relative difference is reported under "checks".

* "gamma_gamma_fit": GammaGammaFitter(penalizer_coef=0).fit(x, m) over the
  customers with x > 0 ("lifetimes_fit_raw": the optimizer's output, whose
  trailing digits vary with the scipy version), then polished by Newton's
  method on the gradient of LL in mpmath (40 digits), so "mle" is the
  optimum to float64 precision and p, q, v are its 6 significant figures
  (q = 3.744224667... is only 3e-7 from the rounding boundary).
  Log-likelihood (natural log, summed over the n repeat customers):
    LL(p,q,v) = sum_i [ lnG(p x_i + q) - lnG(p x_i) - lnG(q) + q ln v
                        + (p x_i - 1) ln m_i + p x_i ln x_i
                        - (p x_i + q) ln(x_i m_i + v) ]
  (lnG = log-gamma; this is lifetimes' _negative_log_likelihood times -n, the
  density of the mean spend m_i of x_i transactions, Fader & Hardie note 025).
  "corr_frequency_monetary" is the Pearson correlation of x and m over the
  repeat customers (lifetimes' tutorial does DataFrame.corr() on the shipped
  cdnow_customers_summary_with_transactions.csv, whose m is rounded to cents;
  that value is given too).

* "hyp2f1_cases": 2F1(a, b; c; z) at 30 significant digits (mpmath, inputs
  taken as the exact binary64 values of the stored floats), with the BG/NBD
  shapes a = r + x, b = b_param + x, c = a_param + b_param + x - 1, and for
  each case the full BG/NBD conditional expectation (lifetimes' formula,
  Fader, Hardie & Lee 2005 eq. 10)
    E[Y(t) | x, t_x, T] = (a+b+x-1)/(a-1)
        * (1 - ((alpha+T)/(alpha+T+t))^(r+x) * 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t)))
        / (1 + [x>0] * a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x))
  for t = z (alpha + T) / (1 - z), so that t/(alpha+T+t) is z up to rounding
  (the expectation is computed from the stored t, not from z).  "lifetimes"
  is what lifetimes/scipy give in float64 for the same case (null if NaN).

Pitfalls met on the way (for anyone redoing this with lifetimes):
  * BetaGeoFitter.predict only exists after fit(); with params_ set by hand
    it must be assigned (customer_lifetime_value calls model.predict).
  * summary["T"], never summary.T (that is the transpose).
  * lifetimes' m is per DAY (same-day amounts summed, first day dropped), not
    per order: 67 repeat customers here have several orders on one day.
  * x = 0: conditional_expected_average_profit ignores m and returns the
    population mean v p / (q - 1) = 35.2189781...; the CLV of a one-order
    customer is that mean times the discounted expected orders, not 0.

Standard library + lifetimes + numpy + pandas + scipy + mpmath only.
"""

import argparse
import datetime as dt
import json
import math
import os
import sys
import warnings

import mpmath as mp
import numpy as np
import pandas as pd
import scipy

import lifetimes
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data

warnings.simplefilter("ignore")

OBS_END = "1997-09-30"
OBS_END_DATE = dt.date(1997, 9, 30)
BG = {"r": 0.243, "alpha": 30.898, "a": 0.793, "b": 2.426}
GG = {"p": 6.25, "q": 3.74, "v": 15.44}
HORIZON_MONTHS = 12
MONTHLY_DISCOUNT = 0.01
DAYS_PER_MONTH = 30

HYP_X = [0, 1, 2, 5, 20, 100, 300, 1000]
HYP_Z = [0.0, 0.1, 0.5, 0.9, 0.99, 0.999]
ALT_PARAMS = [
    ("alt1", {"r": 2.0, "alpha": 10.0, "a": 0.1, "b": 5.0}, [0, 2, 20, 300], [0.1, 0.9, 0.999]),
    ("alt2", {"r": 0.05, "alpha": 100.0, "a": 3.0, "b": 0.5}, [0, 2, 20, 300], [0.1, 0.9, 0.999]),
]


# ---------------------------------------------------------------- input


def read_cdnow(path):
    """Rows of CDNOW_sample.txt: master_id sample_id YYYYMMDD quantity amount."""
    ids, dates, amounts = [], [], []
    with open(path, "r", encoding="ascii", newline=None) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            _master, sample_id, date, _qty, amount = line.split()
            ids.append(int(sample_id))
            dates.append(date)
            amounts.append(float(amount))
    df = pd.DataFrame({"sample_id": ids, "date": dates, "amount": amounts})
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    return df


def jsonl_summary(path):
    """x, t_x, T (days) and the per-day m from the touchpoint file, one
    purchase per UTC day, standard library only."""
    days = {}
    for line in open(path, "r", encoding="utf-8"):
        if not line.strip():
            continue
        ev = json.loads(line)
        if ev.get("type") != "order_placed":
            continue
        d = dt.date.fromisoformat(ev["timestamp"][:10])
        days.setdefault(ev["customer_id"], {}).setdefault(d, []).append(ev["value"])
    out = {}
    for cid, per_day in days.items():
        ds = sorted(per_day)
        first, last = ds[0], ds[-1]
        repeat_totals = [sum(per_day[d]) for d in ds[1:]]
        orders = [v for d in ds for v in per_day[d]]
        out[cid] = {
            "x": len(ds) - 1,
            "t_x": float((last - first).days),
            "T": float((OBS_END_DATE - first).days),
            "m_day": sum(repeat_totals) / len(repeat_totals) if repeat_totals else 0.0,
            "n_orders": len(orders),
            "same_day_orders": len(orders) != len(ds),
        }
    return out


# ---------------------------------------------------------------- models


def bg_fitter(params):
    bgf = BetaGeoFitter()
    bgf.params_ = pd.Series(params)[["r", "alpha", "a", "b"]]
    # fit() is what normally sets .predict; customer_lifetime_value calls it.
    bgf.predict = bgf.conditional_expected_number_of_purchases_up_to_time
    return bgf


def gg_fitter(params):
    ggf = GammaGammaFitter(penalizer_coef=0.0)
    ggf.params_ = pd.Series(params)[["p", "q", "v"]]
    return ggf


def mp_expected(t, x, t_x, T, r, alpha, a, b):
    """BG/NBD E[Y(t) | x, t_x, T] in mpmath at the current precision."""
    t, x, t_x, T = mp.mpf(t), mp.mpf(x), mp.mpf(t_x), mp.mpf(T)
    r, alpha, a, b = mp.mpf(r), mp.mpf(alpha), mp.mpf(a), mp.mpf(b)
    if t == 0:
        return mp.mpf(0)
    z = t / (alpha + T + t)
    hyp = mp.hyp2f1(r + x, b + x, a + b + x - 1, z)
    num = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp)
    den = 1 + (a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x) if x > 0 else 0)
    return num / den


def mp_avg_value(x, m, p, q, v):
    x, m, p, q, v = (mp.mpf(u) for u in (x, m, p, q, v))
    w = p * x / (p * x + q - 1)
    return (1 - w) * (v * p / (q - 1)) + w * m


def mp_clv(x, t_x, T, m):
    avg = mp_avg_value(x, m, GG["p"], GG["q"], GG["v"])
    total = mp.mpf(0)
    prev = mp.mpf(0)
    for k in range(1, HORIZON_MONTHS + 1):
        cur = mp_expected(DAYS_PER_MONTH * k, x, t_x, T, **BG)
        total += avg * (cur - prev) / (1 + mp.mpf(MONTHLY_DISCOUNT)) ** k
        prev = cur
    return total


def gg_ll(params, x, m):
    """Summed Gamma-Gamma log-likelihood (see module doc)."""
    from scipy.special import gammaln

    p, q, v = params
    px = p * x
    return float(
        np.sum(
            gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
            + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(x * m + v)
        )
    )


def gg_ll_mp(params, x, m):
    """gg_ll in mpmath (40 digits), rounded to float at the end."""
    with mp.workdps(40):
        p, q, v = (mp.mpf(float(u)) for u in params)
        return float(mp.fsum(
            mp.loggamma(p * xi + q) - mp.loggamma(p * xi) - mp.loggamma(q) + q * mp.log(v)
            + (p * xi - 1) * mp.log(mi) + p * xi * mp.log(xi) - (p * xi + q) * mp.log(xi * mi + v)
            for xi, mi in zip((mp.mpf(float(u)) for u in x), (mp.mpf(float(u)) for u in m))))


def gg_mle_newton(start, x, m, iterations=6):
    """Polish the Gamma-Gamma MLE: Newton on the analytic gradient of LL in
    mpmath (40 digits, Jacobian by forward differences of step 1e-15), so the
    6 significant figures do not depend on scipy's optimizer tolerance."""
    with mp.workdps(40):
        X = [mp.mpf(float(u)) for u in x]
        M = [mp.mpf(float(u)) for u in m]

        def grad(th):
            p, q, v = th
            gp = mp.fsum(xi * (mp.digamma(p * xi + q) - mp.digamma(p * xi) + mp.log(mi) + mp.log(xi)
                               - mp.log(xi * mi + v)) for xi, mi in zip(X, M))
            gq = mp.fsum(mp.digamma(p * xi + q) - mp.digamma(q) + mp.log(v) - mp.log(xi * mi + v)
                         for xi, mi in zip(X, M))
            gv = mp.fsum(q / v - (p * xi + q) / (xi * mi + v) for xi, mi in zip(X, M))
            return mp.matrix([gp, gq, gv])

        th = mp.matrix([mp.mpf(float(u)) for u in start])
        h = mp.mpf("1e-15")
        for _ in range(iterations):
            g = grad(th)
            J = mp.matrix(3, 3)
            for j in range(3):
                e = th.copy()
                e[j] += h
                ge = grad(e)
                for i in range(3):
                    J[i, j] = (ge[i] - g[i]) / h
            th = th - mp.lu_solve(J, g)
        if mp.norm(grad(th)) > mp.mpf("1e-20"):
            raise RuntimeError("Gamma-Gamma Newton polish did not converge")
        return np.array([float(u) for u in th])


def sig6(u):
    return float("%.6g" % u)


# ---------------------------------------------------------------- sections


def customers_section(summary):
    bgf = bg_fitter(BG)
    ggf = gg_fitter(GG)
    x, t_x, T, m = summary["frequency"], summary["recency"], summary["T"], summary["monetary_value"]
    expected = bgf.conditional_expected_number_of_purchases_up_to_time(
        HORIZON_MONTHS * DAYS_PER_MONTH, x, t_x, T)
    avg = ggf.conditional_expected_average_profit(x, m)
    clv = ggf.customer_lifetime_value(bgf, x, t_x, T, m, time=HORIZON_MONTHS,
                                      discount_rate=MONTHLY_DISCOUNT, freq="D")
    rows = []
    worst = {"expected_orders": 0.0, "avg_value": 0.0, "clv": 0.0}
    with mp.workdps(40):
        for sid in summary.index:
            row = {
                "id": "cdnow-%d" % sid,
                "x": int(x[sid]),
                "t_x": float(t_x[sid]),
                "T": float(T[sid]),
                "m": float(m[sid]),
                "expected_orders": float(expected[sid]),
                "avg_value": float(avg[sid]),
                "clv": float(clv[sid]),
            }
            exact = {
                "expected_orders": mp_expected(HORIZON_MONTHS * DAYS_PER_MONTH, row["x"], row["t_x"], row["T"], **BG),
                "avg_value": mp_avg_value(row["x"], row["m"], **GG),
                "clv": mp_clv(row["x"], row["t_x"], row["T"], row["m"]),
            }
            for k, e in exact.items():
                rel = abs(mp.mpf(row[k]) - e) / abs(e)
                worst[k] = max(worst[k], float(rel))
            rows.append(row)
    return rows, worst


def checks_section(summary, jl, cdnow_csv_weeks):
    mism_xtT = []
    m_rel = 0.0
    for sid in summary.index:
        cid = "cdnow-%d" % sid
        s = summary.loc[sid]
        j = jl.get(cid)
        if j is None or (j["x"], j["t_x"], j["T"]) != (int(s["frequency"]), float(s["recency"]), float(s["T"])):
            mism_xtT.append(cid)
            continue
        if j["m_day"] != 0 or s["monetary_value"] != 0:
            m_rel = max(m_rel, abs(j["m_day"] - s["monetary_value"]) / abs(s["monetary_value"]))
    weeks_mism = 0
    for sid in summary.index:
        w = cdnow_csv_weeks[sid]
        s = summary.loc[sid]
        if (int(s["frequency"]), round(s["recency"] / 7, 2), round(s["T"] / 7, 2)) != w:
            weeks_mism += 1
    repeat_same_day = sum(1 for j in jl.values() if j["same_day_orders"] and j["x"] > 0)
    return {
        "n_customers_summary": int(len(summary)),
        "n_customers_jsonl": len(jl),
        "sum_x": int(summary["frequency"].sum()),
        "n_repeat_customers": int((summary["frequency"] > 0).sum()),
        "x_tx_T_equal_jsonl_distinct_day_rule_all": not mism_xtT and len(jl) == len(summary),
        "x_tx_T_mismatches_vs_jsonl": mism_xtT,
        "m_max_rel_diff_vs_jsonl_day_totals": m_rel,
        "x_tx_T_weeks_equal_cdnow_customers_summary_csv_all": weeks_mism == 0,
        "n_customers_with_several_orders_on_one_day": sum(1 for j in jl.values() if j["same_day_orders"]),
        "n_repeat_customers_with_several_orders_on_one_day": repeat_same_day,
    }


def gamma_gamma_section(summary, shipped_csv):
    rep = summary[summary["frequency"] > 0]
    x = rep["frequency"].to_numpy(dtype=float)
    m = rep["monetary_value"].to_numpy(dtype=float)
    ggf = GammaGammaFitter(penalizer_coef=0.0).fit(rep["frequency"], rep["monetary_value"])
    raw = ggf.params_[["p", "q", "v"]].to_numpy(dtype=float)

    best = gg_mle_newton(raw, x, m)
    tut = shipped_csv[shipped_csv["frequency"] > 0]
    return {
        "n_repeat_customers": int(len(rep)),
        "p": sig6(best[0]),
        "q": sig6(best[1]),
        "v": sig6(best[2]),
        "mle": {"p": float(best[0]), "q": float(best[1]), "v": float(best[2])},
        "ll": gg_ll_mp(best, x, m),
        "ll_at_published": gg_ll_mp((GG["p"], GG["q"], GG["v"]), x, m),
        "lifetimes_fit_raw": {"p": float(raw[0]), "q": float(raw[1]), "v": float(raw[2]),
                              "ll": gg_ll_mp(raw, x, m)},
        "corr_frequency_monetary": float(np.corrcoef(x, m)[0, 1]),
        "corr_frequency_monetary_shipped_csv": float(tut[["monetary_value", "frequency"]].corr().iloc[0, 1]),
        "published": {"p": 6.25, "q": 3.74, "v": 15.44, "n": 946},
    }


def mp_str(u):
    return mp.nstr(u, 30, min_fixed=-4, max_fixed=25)


def hyp_case(label, params, x, z):
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    T = 272.0 if x <= 200 else float(x + 100)
    t_x = 0.0 if x == 0 else float(round(x + (T - x) * 0.6))
    t = z * (alpha + T) / (1.0 - z)
    with mp.workdps(30):
        A = mp.mpf(r) + x
        B = mp.mpf(b) + x
        C = mp.mpf(a) + mp.mpf(b) + x - 1
        h = mp.hyp2f1(A, B, C, mp.mpf(z))
        lnh = mp.log(h)
        e = mp_expected(t, x, t_x, T, r, alpha, a, b)
        try:
            hf = float(h)
            huge = math.isinf(hf)
        except OverflowError:
            huge = True
        case = {
            "label": label, "r": r, "alpha": alpha, "a_param": a, "b_param": b, "x": x,
            "a": float(A), "b": float(B), "c": float(C), "z": z,
            "hyp2f1": mp_str(h) if huge else float(h),
            "hyp2f1_30": mp_str(h),
            "ln": float(lnh),
            "ln_30": mp_str(lnh),
            "t": t, "t_x": t_x, "T": T,
            "expected": float(e),
            "expected_30": mp_str(e),
        }
    bgf = bg_fitter(params)
    lt = float(bgf.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T))
    case["lifetimes"] = None if math.isnan(lt) or math.isinf(lt) else lt
    return case


def hyp_section():
    cases = []
    for x in HYP_X:
        for z in HYP_Z:
            cases.append(hyp_case("default-x%d-z%g" % (x, z), BG, x, z))
    for name, params, xs, zs in ALT_PARAMS:
        for x in xs:
            for z in zs:
                cases.append(hyp_case("%s-x%d-z%g" % (name, x, z), params, x, z))
    return cases


# ---------------------------------------------------------------- output


def dump(doc, out):
    """JSON with one line per customer / hyp2f1 case; floats as repr."""
    d = lambda o: json.dumps(o, separators=(",", ":"), allow_nan=False)
    out.write("{\n")
    keys = list(doc)
    for i, k in enumerate(keys):
        v = doc[k]
        out.write(" %s: " % json.dumps(k))
        if isinstance(v, list) and v and isinstance(v[0], dict):
            out.write("[\n")
            out.write(",\n".join("  " + d(e) for e in v))
            out.write("\n ]")
        else:
            out.write(d(v))
        out.write(",\n" if i + 1 < len(keys) else "\n")
    out.write("}\n")


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cdnow", default=os.path.join(os.path.dirname(lifetimes.__file__), "datasets", "CDNOW_sample.txt"))
    ap.add_argument("--jsonl", default=os.path.join(here, "..", "tests", "data", "cdnow_calibration.jsonl"))
    args = ap.parse_args(argv[1:])

    tx = read_cdnow(args.cdnow)
    summary = summary_data_from_transaction_data(
        tx, "sample_id", "date", monetary_value_col="amount",
        observation_period_end=OBS_END, freq="D").sort_index()

    ds = os.path.join(os.path.dirname(lifetimes.__file__), "datasets")
    weeks = pd.read_csv(os.path.join(ds, "cdnow_customers_summary.csv"))
    weeks_map = {int(r.ID): (int(r.frequency), float(r.recency), float(r.T)) for r in weeks.itertuples()}
    shipped = pd.read_csv(os.path.join(ds, "cdnow_customers_summary_with_transactions.csv"))
    shipped = shipped.rename(columns={"x": "frequency", "zbar": "monetary_value"})

    jl = jsonl_summary(args.jsonl)
    customers, worst = customers_section(summary)
    checks = checks_section(summary, jl, weeks_map)
    checks["max_rel_diff_lifetimes_vs_mpmath"] = worst
    x0 = [c for c in customers if c["x"] == 0]
    checks["avg_value_x0"] = sorted({c["avg_value"] for c in x0})
    checks["population_mean_v_p_over_q_minus_1"] = GG["v"] * GG["p"] / (GG["q"] - 1)

    doc = {
        "description": "CLV references (BG/NBD + Gamma-Gamma, lifetimes 0.11.3, daily units); see scripts/clv_reference.py",
        "versions": {"lifetimes": lifetimes.__version__, "numpy": np.__version__, "pandas": pd.__version__,
                     "scipy": scipy.__version__, "mpmath": mp.__version__},
        "observation_end": OBS_END + "T00:00:00Z",
        "params": dict(BG, **GG, horizon_months=HORIZON_MONTHS, monthly_discount=MONTHLY_DISCOUNT,
                       days_per_month=DAYS_PER_MONTH, time_unit="days"),
        "notes": [
            "x, t_x, T in days; m = mean of the repeat days' day totals (same-day orders summed), 0 when x = 0",
            "avg_value for x = 0 is the population mean v*p/(q-1) (individual weight p*x/(p*x+q-1) = 0, m ignored); clv for x = 0 uses it",
            "clv = sum_{k=1..12} avg_value*(E(30k)-E(30k-30))/1.01**k, E(0) = 0; expected_orders = E(360)",
            "hyp2f1_cases: inputs are binary64; hyp2f1 is a string when it overflows float64; *_30 are 30-digit strings",
        ],
        "checks": checks,
        "gamma_gamma_fit": gamma_gamma_section(summary, shipped),
        "customers": customers,
        "hyp2f1_cases": hyp_section(),
    }
    dump(doc, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
