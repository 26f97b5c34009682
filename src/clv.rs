//! Customer lifetime value (SPEC 4, "Customer lifetime value"): the
//! Gamma-Gamma model of order value (Fader, Hardie & Lee 2005, "RFM and
//! CLV: Using Iso-Value Curves for Customer Base Analysis"; Fader & Hardie,
//! "The Gamma-Gamma Model of Monetary Value", 2013) beside the BG/NBD
//! expectation of [`crate::bgnbd`], the predicted value of the next
//! months, and the maximum-likelihood fit of p, q, v.
//!
//! Pure math; time is in days throughout, months are 30 days, as
//! lifetimes' `customer_lifetime_value` counts them with daily units.

use libm::lgamma;

use crate::bgnbd::{minimise, BgNbd, FitError};

/// Days in a month of the CLV horizon.
pub const MONTH_DAYS: f64 = 30.0;

/// Gamma-Gamma parameters: an order's value is gamma(p, ν) with ν itself
/// gamma(q, v) across customers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGamma {
    /// Shape of an order's value.
    pub p: f64,
    /// Shape of the customers' rate ν.
    pub q: f64,
    /// Scale of the customers' rate ν.
    pub v: f64,
}

impl GammaGamma {
    /// The population mean order value, v·p/(q − 1) (infinite for q <= 1).
    pub fn population_mean(&self) -> f64 {
        self.v * self.p / (self.q - 1.0)
    }

    /// The conditional mean value of a customer's orders given `x` valued
    /// orders (after the first) with mean `m`:
    /// p·(v + x·m)/(p·x + q − 1); the population mean for x = 0.
    ///
    /// # Examples
    /// ```
    /// use touchstream::clv::GammaGamma;
    /// let gg = GammaGamma { p: 6.25, q: 3.74, v: 15.44 };
    /// assert!((gg.conditional_mean(0.0, 0.0) - gg.population_mean()).abs() < 1e-12);
    /// // Many orders: close to the customer's own mean.
    /// assert!((gg.conditional_mean(1000.0, 40.0) - 40.0).abs() < 0.1);
    /// ```
    pub fn conditional_mean(&self, x: f64, m: f64) -> f64 {
        if x <= 0.0 {
            return self.population_mean();
        }
        self.p * (self.v + x * m) / (self.p * x + self.q - 1.0)
    }

    /// Log-likelihood of one repeat customer (x > 0 valued repeat orders,
    /// mean value m > 0), as lifetimes' `GammaGammaFitter` writes it.
    pub fn log_likelihood(&self, x: f64, m: f64) -> f64 {
        let (p, q, v) = (self.p, self.q, self.v);
        lgamma(p * x + q) - lgamma(p * x) - lgamma(q)
            + q * v.ln()
            + (p * x - 1.0) * m.ln()
            + (p * x) * x.ln()
            - (p * x + q) * (x * m + v).ln()
    }
}

/// The BG/NBD and Gamma-Gamma models and the horizon they predict over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClvModel {
    /// Purchase and dropout process.
    pub bgnbd: BgNbd,
    /// Order value.
    pub gamma_gamma: GammaGamma,
    /// Months predicted (30 days each).
    pub horizon_months: u32,
    /// Discount per month.
    pub monthly_discount: f64,
}

/// A customer's predicted orders and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Expected orders over the horizon.
    pub expected_orders: f64,
    /// Discounted expected value over the horizon.
    pub predicted_clv: f64,
}

impl ClvModel {
    /// Predicts the next `horizon_months` of a customer with x repeat
    /// orders (the last at t_x, first order T days ago) whose orders are
    /// worth `mean_value` each: Σᵢ mean_value · (E(30·i) − E(30·(i−1))) /
    /// (1 + monthly_discount)^i, i = 1..horizon.
    ///
    /// # Examples
    /// ```
    /// use touchstream::bgnbd::BgNbd;
    /// use touchstream::clv::{ClvModel, GammaGamma};
    /// let m = ClvModel {
    ///     bgnbd: BgNbd { r: 0.243, alpha: 30.898, a: 0.793, b: 2.426 },
    ///     gamma_gamma: GammaGamma { p: 6.25, q: 3.74, v: 15.44 },
    ///     horizon_months: 12,
    ///     monthly_discount: 0.01,
    /// };
    /// let now = m.predict(2.0, 60.0, 60.0, 50.0);
    /// let later = m.predict(2.0, 60.0, 200.0, 50.0);
    /// assert!(later.predicted_clv < now.predicted_clv);
    /// ```
    pub fn predict(&self, x: f64, t_x: f64, big_t: f64, mean_value: f64) -> Prediction {
        let mut clv = 0.0;
        let mut before = 0.0;
        let mut discount = 1.0;
        for i in 1..=self.horizon_months {
            let e = self
                .bgnbd
                .expected_orders(MONTH_DAYS * f64::from(i), x, t_x, big_t);
            discount *= 1.0 + self.monthly_discount;
            clv += mean_value * (e - before) / discount;
            before = e;
        }
        Prediction {
            expected_orders: before,
            predicted_clv: clv,
        }
    }
}

/// A fitted Gamma-Gamma model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaFit {
    /// The parameters.
    pub model: GammaGamma,
    /// Total log-likelihood at them.
    pub log_likelihood: f64,
    /// Repeat customers fitted.
    pub customers: usize,
    /// Pearson correlation of x and m over them: the model assumes order
    /// value independent of frequency; far from 0 it should not be used.
    pub correlation: f64,
}

struct NegLl<'a> {
    data: &'a [(f64, f64)],
}

impl NegLl<'_> {
    fn eval(&self, p: &[f64]) -> f64 {
        let m = GammaGamma {
            p: p[0].exp(),
            q: p[1].exp(),
            v: p[2].exp(),
        };
        let ll: f64 = self
            .data
            .iter()
            .map(|(x, m_)| m.log_likelihood(*x, *m_))
            .sum();
        if ll.is_finite() {
            -ll
        } else {
            f64::MAX
        }
    }
}

/// Pearson correlation of the pairs (NaN when either side is constant).
pub fn correlation(data: &[(f64, f64)]) -> f64 {
    let n = data.len() as f64;
    let (mx, my) = data
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in data {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// Fits p, q, v by maximum likelihood to the repeat customers' (x, m):
/// x valued repeat orders with mean value m; customers with x = 0 or
/// m <= 0 carry no information and are left out. Nelder–Mead on the logs
/// of the parameters, restarted from its own optimum until it stops
/// improving (as [`crate::bgnbd::fit`]).
pub fn fit(customers: &[(f64, f64)]) -> Result<GammaGammaFit, FitError> {
    let data: Vec<(f64, f64)> = customers
        .iter()
        .copied()
        .filter(|(x, m)| *x > 0.0 && *m > 0.0 && m.is_finite())
        .collect();
    if data.is_empty() {
        return Err(FitError::NoRepeat);
    }
    let problem = NegLl { data: &data };
    let mean_m = data.iter().map(|(_, m)| m).sum::<f64>() / data.len() as f64;
    let start = vec![0.0, 2f64.ln(), mean_m.max(1e-9).ln()];
    let (best, best_cost) = minimise(|p| problem.eval(p), start)?;
    Ok(GammaGammaFit {
        model: GammaGamma {
            p: best[0].exp(),
            q: best[1].exp(),
            v: best[2].exp(),
        },
        log_likelihood: -best_cost,
        customers: data.len(),
        correlation: correlation(&data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_is_no_worse_than_the_truth() {
        let truth = GammaGamma {
            p: 6.25,
            q: 3.74,
            v: 15.44,
        };
        let data: Vec<(f64, f64)> = (0..300)
            .map(|i| (1.0 + (i % 6) as f64, 10.0 + (i * 37 % 90) as f64))
            .collect();
        let f = fit(&data).unwrap();
        let ll: f64 = data.iter().map(|(x, m)| truth.log_likelihood(*x, *m)).sum();
        assert!(f.log_likelihood >= ll - 1e-6);
        assert_eq!(f.customers, 300);
    }

    #[test]
    fn no_repeat_customer_is_refused() {
        assert!(matches!(fit(&[(0.0, 0.0); 10]), Err(FitError::NoRepeat)));
    }
}
