//! The BG/NBD model (Fader, Hardie & Lee 2005): the probability that a
//! customer is still alive, the time at which it falls below a threshold,
//! and the maximum-likelihood fit of its parameters to a purchase history.
//!
//! Pure math; time is in days throughout.

use argmin::core::{CostFunction, Executor, State};
use argmin::solver::neldermead::NelderMead;
use libm::lgamma;
use thiserror::Error;

/// BG/NBD parameters (alpha in days).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbd {
    /// Shape of the purchase-rate gamma.
    pub r: f64,
    /// Scale of the purchase-rate gamma (days).
    pub alpha: f64,
    /// Dropout beta a.
    pub a: f64,
    /// Dropout beta b.
    pub b: f64,
}

impl BgNbd {
    /// p_alive = 1 / (1 + \[x > 0\] · a/(b + x − 1) · ((α + T)/(α + t_x))^(r + x)).
    ///
    /// # Examples
    /// ```
    /// use touchstream::bgnbd::BgNbd;
    /// let m = BgNbd { r: 0.243, alpha: 30.898, a: 0.793, b: 2.426 };
    /// assert_eq!(m.p_alive(0.0, 0.0, 100.0), 1.0);
    /// assert!(m.p_alive(2.0, 30.0, 365.0) < 0.5);
    /// ```
    pub fn p_alive(&self, x: f64, t_x: f64, big_t: f64) -> f64 {
        if x <= 0.0 {
            return 1.0;
        }
        let ratio = (self.alpha + big_t) / (self.alpha + t_x);
        let term = self.a / (self.b + x - 1.0) * ratio.powf(self.r + x);
        1.0 / (1.0 + term)
    }

    /// The T (days since the first order) at which p_alive reaches
    /// `threshold`, for x repeat purchases with the last at t_x. `None` when
    /// x = 0 (p_alive is 1 forever) or the threshold is not in (0, 1).
    pub fn crossing_t(&self, x: f64, t_x: f64, threshold: f64) -> Option<f64> {
        if x <= 0.0 || !(threshold > 0.0 && threshold < 1.0) {
            return None;
        }
        let c = self.a / (self.b + x - 1.0);
        let need = (1.0 / threshold - 1.0) / c;
        let ratio = need.powf(1.0 / (self.r + x));
        Some((self.alpha + t_x) * ratio - self.alpha)
    }

    /// The expected number of orders in the next `t` days of a customer
    /// with x repeat orders, the last at t_x, observed for T days since the
    /// first (the BG/NBD conditional expectation, Fader, Hardie & Lee 2005,
    /// eq. 10; lifetimes' `conditional_expected_number_of_purchases_up_to_time`):
    ///
    /// E = (a + b + x − 1)/(a − 1) · [1 − ((α+T)/(α+T+t))^(r+x) · ₂F₁(r+x, b+x; a+b+x−1; z)]
    ///     / (1 + [x > 0] · a/(b + x − 1) · ((α+T)/(α+t_x))^(r+x)),  z = t/(α+T+t).
    ///
    /// ₂F₁ is taken through Euler's transformation,
    /// ₂F₁(A, B; C; z) = (1 − z)^(C−A−B) ₂F₁(C−A, C−B; C; z), whose factor
    /// (1 − z)^(C−A−B) cancels against ((α+T)/(α+T+t))^(r+x) = (1 − z)^(r+x)
    /// to (1 − z)^(a−1): no power overflows for any x, and the series left
    /// has the small parameters a + b − 1 − r and a − 1, so it converges
    /// faster the larger x is (it always converges for z < 1).
    ///
    /// # Examples
    /// ```
    /// use touchstream::bgnbd::BgNbd;
    /// let m = BgNbd { r: 0.243, alpha: 30.898, a: 0.793, b: 2.426 };
    /// assert_eq!(m.expected_orders(0.0, 3.0, 50.0, 60.0), 0.0);
    /// let year = m.expected_orders(360.0, 3.0, 50.0, 60.0);
    /// assert!(year > m.expected_orders(180.0, 3.0, 50.0, 60.0));
    /// ```
    pub fn expected_orders(&self, t: f64, x: f64, t_x: f64, big_t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let (r, alpha, a, b) = (self.r, self.alpha, self.a, self.b);
        // a = 1 exactly is a removable singularity: the limit is continuous.
        let a = if (a - 1.0).abs() < 1e-9 {
            1.0 + 1e-9
        } else {
            a
        };
        let z = t / (alpha + big_t + t);
        let one_minus_z = (alpha + big_t) / (alpha + big_t + t);
        let c = a + b + x - 1.0;
        let series = hyp2f1_series(a + b - 1.0 - r, a - 1.0, c, z);
        let bracket = 1.0 - one_minus_z.powf(a - 1.0) * series;
        let numerator = c / (a - 1.0) * bracket;
        let denominator = if x > 0.0 {
            1.0 + a / (b + x - 1.0) * ((alpha + big_t) / (alpha + t_x)).powf(r + x)
        } else {
            1.0
        };
        numerator / denominator
    }

    /// Log-likelihood of one customer (x repeat purchases, last at t_x,
    /// observed for T days since the first).
    pub fn log_likelihood(&self, x: f64, t_x: f64, big_t: f64) -> f64 {
        let (r, alpha, a, b) = (self.r, self.alpha, self.a, self.b);
        let ln_a1 = lgamma(r + x) - lgamma(r) + r * alpha.ln();
        let ln_a2 = lgamma(a + b) + lgamma(b + x) - lgamma(b) - lgamma(a + b + x);
        let ln_a3 = -(r + x) * (alpha + big_t).ln();
        if x > 0.0 {
            let ln_a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + t_x).ln();
            let m = ln_a3.max(ln_a4);
            ln_a1 + ln_a2 + m + ((ln_a3 - m).exp() + (ln_a4 - m).exp()).ln()
        } else {
            ln_a1 + ln_a2 + ln_a3
        }
    }
}

/// The Gauss hypergeometric series ₂F₁(a, b; c; z) = Σₙ (a)ₙ(b)ₙ/((c)ₙ n!) zⁿ
/// for 0 <= z < 1, summed until a term no longer changes the sum (the
/// terms' ratio tends to z, so this ends; capped at 1,000,000 terms for z
/// within 1e-6 of 1). `c` must not be 0 or a negative integer.
fn hyp2f1_series(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 0..1_000_000u32 {
        let n = f64::from(n);
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        let next = sum + term;
        if next == sum || !next.is_finite() {
            return next;
        }
        sum = next;
    }
    sum
}

/// One customer's purchase summary, in days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Repeat purchases (distinct purchase days − 1).
    pub x: f64,
    /// First to last purchase.
    pub t_x: f64,
    /// First purchase to the end of observation.
    pub big_t: f64,
}

/// Why a fit failed.
#[derive(Debug, Error)]
pub enum FitError {
    /// No customer with a purchase.
    #[error("no purchases to fit")]
    Empty,
    /// No customer bought on two different days: nothing in the data tells
    /// the purchase rate from the dropout, and the optimiser would wander
    /// off to meaningless parameters.
    #[error(
        "no customer bought on two different days: this history cannot identify the model \
         (keep the default parameters, or fit on a longer history)"
    )]
    NoRepeat,
    /// The optimiser failed.
    #[error("optimiser failed: {0}")]
    Optimiser(String),
}

/// A fitted model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// The parameters.
    pub model: BgNbd,
    /// Total log-likelihood at them.
    pub log_likelihood: f64,
    /// Customers fitted.
    pub customers: usize,
}

struct NegLl<'a> {
    data: &'a [(Summary, f64)],
}

impl NegLl<'_> {
    fn eval(&self, p: &[f64]) -> f64 {
        let m = BgNbd {
            r: p[0].exp(),
            alpha: p[1].exp(),
            a: p[2].exp(),
            b: p[3].exp(),
        };
        let ll: f64 = self
            .data
            .iter()
            .map(|(s, n)| n * m.log_likelihood(s.x, s.t_x, s.big_t))
            .sum();
        if ll.is_finite() {
            -ll
        } else {
            f64::MAX
        }
    }
}

/// A cost function made of a closure (argmin wants a type).
struct Cost<F>(F);

impl<F: Fn(&[f64]) -> f64> CostFunction for Cost<F> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok((self.0)(p))
    }
}

/// Minimises `cost` from `start` (Nelder–Mead, restarted from its own
/// optimum with a smaller simplex until it stops improving): the optimum
/// and its cost. Shared by the BG/NBD and Gamma-Gamma fits, which both
/// search the logs of their parameters.
pub(crate) fn minimise(
    cost: impl Fn(&[f64]) -> f64 + Copy,
    start: Vec<f64>,
) -> Result<(Vec<f64>, f64), FitError> {
    let mut best_cost = cost(&start);
    let mut best = start;
    for round in 0..20 {
        let step = if round == 0 { 0.5 } else { 0.05 };
        let mut simplex = vec![best.clone()];
        for i in 0..best.len() {
            let mut v = best.clone();
            v[i] += step;
            simplex.push(v);
        }
        let solver = NelderMead::new(simplex)
            .with_sd_tolerance(1e-12)
            .map_err(|e| FitError::Optimiser(e.to_string()))?;
        let res = Executor::new(Cost(cost), solver)
            .configure(|s| s.max_iters(5_000))
            .run()
            .map_err(|e| FitError::Optimiser(e.to_string()))?;
        let state = res.state();
        let (Some(p), c) = (state.get_best_param().cloned(), state.get_best_cost()) else {
            return Err(FitError::Optimiser("no parameters".into()));
        };
        let improved = best_cost - c;
        if c < best_cost {
            best = p;
            best_cost = c;
        }
        if round > 0 && improved.abs() < 1e-9 {
            break;
        }
    }
    Ok((best, best_cost))
}

/// Fits r, alpha, a, b by maximum likelihood (Nelder–Mead on the logs of
/// the parameters, restarted from its own optimum until it stops improving).
pub fn fit(summaries: &[Summary]) -> Result<Fit, FitError> {
    if summaries.is_empty() {
        return Err(FitError::Empty);
    }
    if summaries.iter().all(|s| s.x == 0.0) {
        return Err(FitError::NoRepeat);
    }
    // Identical summaries share one likelihood evaluation.
    let mut grouped: Vec<(Summary, f64)> = Vec::new();
    let mut sorted: Vec<Summary> = summaries.to_vec();
    sorted.sort_by(|p, q| {
        (p.x, p.t_x, p.big_t)
            .partial_cmp(&(q.x, q.t_x, q.big_t))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for s in sorted {
        match grouped.last_mut() {
            Some((g, n)) if *g == s => *n += 1.0,
            _ => grouped.push((s, 1.0)),
        }
    }
    let problem = NegLl { data: &grouped };
    let start = vec![
        0.0,
        (summaries.iter().map(|s| s.big_t).sum::<f64>() / summaries.len() as f64)
            .max(1.0)
            .ln()
            - 1.0,
        0.0,
        0.0,
    ];
    let (best, best_cost) = minimise(|p| problem.eval(p), start)?;
    Ok(Fit {
        model: BgNbd {
            r: best[0].exp(),
            alpha: best[1].exp(),
            a: best[2].exp(),
            b: best[3].exp(),
        },
        log_likelihood: -best_cost,
        customers: summaries.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CDNOW: BgNbd = BgNbd {
        r: 0.243,
        alpha: 30.898,
        a: 0.793,
        b: 2.426,
    };

    #[test]
    fn crossing_inverts_p_alive() {
        for (x, t_x) in [(1.0, 7.0), (3.0, 100.0), (10.0, 300.0)] {
            for th in [0.7, 0.3] {
                let t = CDNOW.crossing_t(x, t_x, th).unwrap();
                assert!((CDNOW.p_alive(x, t_x, t) - th).abs() < 1e-9);
            }
        }
        assert_eq!(CDNOW.crossing_t(0.0, 0.0, 0.7), None);
    }

    #[test]
    fn fit_recovers_parameters_of_its_own_likelihood_optimum() {
        // A tiny sanity fit: the optimum must not be worse than the truth.
        let data: Vec<Summary> = (0..200)
            .map(|i| {
                let x = (i % 5) as f64;
                let big_t = 200.0 + (i % 7) as f64 * 10.0;
                Summary {
                    x,
                    t_x: if x > 0.0 {
                        big_t * (i % 3 + 1) as f64 / 4.0
                    } else {
                        0.0
                    },
                    big_t,
                }
            })
            .collect();
        let f = fit(&data).unwrap();
        let truth: f64 = data
            .iter()
            .map(|s| CDNOW.log_likelihood(s.x, s.t_x, s.big_t))
            .sum();
        assert!(f.log_likelihood >= truth - 1e-6);
    }

    #[test]
    fn a_history_without_repeat_purchases_is_refused() {
        let once = Summary {
            x: 0.0,
            t_x: 0.0,
            big_t: 30.0,
        };
        assert!(matches!(fit(&[once; 50]), Err(FitError::NoRepeat)));
        assert!(matches!(fit(&[]), Err(FitError::Empty)));
    }
}
