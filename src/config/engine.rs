//! The engine-facing sections (`[time]`, `[signals]`, `[engagement]`,
//! `[churn]`, `[clv]`) with their SPEC defaults, and [`Config::engine`]:
//! their checks and the pure [`EngineConfig`] built from them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{key_err, Config, ConfigError, Millis};
use crate::model::{TouchType, DAY_MS};

/// `[time]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeConfig {
    /// Watermark = max event time − this.
    pub max_out_of_orderness: Millis,
    /// Late events older than watermark − this are rejected.
    pub allowed_lateness: Millis,
    /// Wall-clock time after which a silent partition's watermark follows
    /// the wall clock.
    pub idle_timeout: Millis,
    /// Records more than this ahead of the wall clock are rejected.
    pub max_future: Millis,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            max_out_of_orderness: Millis(5_000),
            allowed_lateness: Millis(3_600_000),
            idle_timeout: Millis(30_000),
            max_future: Millis(3_600_000),
        }
    }
}

/// `[signals]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalsConfig {
    /// Cart inactivity before `cart_abandoned`.
    pub cart_timeout: Millis,
    /// Window after an abandonment in which an order recovers it.
    pub recovery_window: Millis,
    /// Window after a campaign click in which an order converts it.
    pub conversion_window: Millis,
    /// Outbound messages in 7 d above which `contact_fatigue` fires.
    pub contact_cap: u32,
    /// Minimum engagement change to emit.
    pub min_delta: f64,
    /// Event-time inactivity after which a customer is evicted.
    pub state_ttl: Millis,
    /// Minimum time between two survey triggers of a customer.
    pub survey_cooldown: Millis,
}

impl Default for SignalsConfig {
    fn default() -> Self {
        SignalsConfig {
            cart_timeout: Millis(3_600_000),
            recovery_window: Millis(7 * DAY_MS),
            conversion_window: Millis(DAY_MS),
            contact_cap: 10,
            min_delta: 5.0,
            state_ttl: Millis(400 * DAY_MS),
            survey_cooldown: Millis(30 * DAY_MS),
        }
    }
}

/// `[engagement]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngagementConfig {
    /// Decay half-life.
    pub half_life: Millis,
    /// score = 100 × (1 − e^(−raw/scale)).
    pub scale: f64,
    /// Multiplier per extra channel in the last 30 d.
    pub channel_bonus: f64,
    /// Weight per touchpoint type (missing types keep their default).
    pub weights: BTreeMap<String, f64>,
}

impl Default for EngagementConfig {
    fn default() -> Self {
        EngagementConfig {
            half_life: Millis(7 * DAY_MS),
            scale: 10.0,
            channel_bonus: 0.1,
            weights: BTreeMap::new(),
        }
    }
}

/// `[churn]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChurnConfig {
    /// BG/NBD r.
    pub r: f64,
    /// BG/NBD alpha, in days.
    pub alpha: f64,
    /// BG/NBD a.
    pub a: f64,
    /// BG/NBD b.
    pub b: f64,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        ChurnConfig {
            r: 0.243,
            alpha: 30.898,
            a: 0.793,
            b: 2.426,
        }
    }
}

/// `[clv]`: the Gamma-Gamma order-value model and the horizon of
/// `predicted_clv` (SPEC 4, "Customer lifetime value").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClvConfig {
    /// Gamma-Gamma p.
    pub p: f64,
    /// Gamma-Gamma q (must exceed 1: the population mean is v·p/(q − 1)).
    pub q: f64,
    /// Gamma-Gamma v.
    pub v: f64,
    /// Months (of 30 days) predicted.
    pub horizon_months: u32,
    /// Discount per month.
    pub monthly_discount: f64,
}

impl Default for ClvConfig {
    fn default() -> Self {
        ClvConfig {
            p: 6.25,
            q: 3.74,
            v: 15.44,
            horizon_months: 12,
            monthly_discount: 0.01,
        }
    }
}

/// Default engagement weight of each touchpoint type (SPEC 4).
pub fn default_weight(t: TouchType) -> f64 {
    use TouchType::*;
    match t {
        PageView => 1.0,
        ProductView => 2.0,
        Search => 2.0,
        AddToCart => 5.0,
        RemoveFromCart => 0.0,
        CheckoutStarted => 8.0,
        OrderPlaced => 20.0,
        OrderReturned => -5.0,
        AppOpen => 1.0,
        StoreVisit => 5.0,
        MessageSent => 0.0,
        MessageOpened => 1.0,
        MessageClicked => 3.0,
        Unsubscribed => -10.0,
        SupportContact => 1.0,
        SupportResolved => 1.0,
        SurveyResponse => 3.0,
        LoyaltyRedeemed => 5.0,
        SocialInteraction => 2.0,
        Other => 0.0,
    }
}

pub use crate::engine::config::EngineConfig;

/// The engine's settings read from `[time]`, `[signals]`, `[engagement]`,
/// `[churn]` and `[clv]` with their defaults.
impl Default for EngineConfig {
    fn default() -> Self {
        // The default config is valid by construction.
        Config::default()
            .engine()
            .unwrap_or_else(|_| unreachable!("defaults are valid"))
    }
}

impl Config {
    /// The pure engine settings, validated.
    pub fn engine(&self) -> Result<EngineConfig, ConfigError> {
        let mut weights = [0.0; 20];
        for t in TouchType::ALL {
            weights[t.index()] = default_weight(*t);
        }
        for (name, w) in &self.engagement.weights {
            let t = TouchType::parse(name).ok_or_else(|| ConfigError::Key {
                key: format!("engagement.weights.{name}"),
                message: "not a touchpoint type".into(),
            })?;
            if !w.is_finite() {
                return Err(key_err(
                    &format!("engagement.weights.{name}"),
                    "must be finite",
                ));
            }
            weights[t.index()] = *w;
        }
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(key_err(key, "must be a positive number"))
            }
        };
        positive("engagement.scale", self.engagement.scale)?;
        positive("churn.r", self.churn.r)?;
        positive("churn.alpha", self.churn.alpha)?;
        positive("churn.a", self.churn.a)?;
        positive("churn.b", self.churn.b)?;
        positive("clv.p", self.clv.p)?;
        positive("clv.v", self.clv.v)?;
        if !(self.clv.q.is_finite() && self.clv.q > 1.0) {
            return Err(key_err(
                "clv.q",
                "must be a number above 1 (the population mean order value is v·p/(q − 1))",
            ));
        }
        if !(1..=1200).contains(&self.clv.horizon_months) {
            return Err(key_err("clv.horizon_months", "must be 1 to 1200 months"));
        }
        if !(self.clv.monthly_discount.is_finite() && self.clv.monthly_discount > -1.0) {
            return Err(key_err("clv.monthly_discount", "must be a number above -1"));
        }
        if !(self.engagement.channel_bonus.is_finite()) {
            return Err(key_err("engagement.channel_bonus", "must be finite"));
        }
        if !(self.signals.min_delta.is_finite() && self.signals.min_delta >= 0.0) {
            return Err(key_err("signals.min_delta", "must be a number >= 0"));
        }
        if self.engagement.half_life.0 <= 0 {
            return Err(key_err("engagement.half_life", "must be positive"));
        }
        for (key, v) in [
            ("signals.cart_timeout", self.signals.cart_timeout),
            ("signals.state_ttl", self.signals.state_ttl),
            ("signals.conversion_window", self.signals.conversion_window),
            ("http.stall_timeout", self.http.stall_timeout),
        ] {
            if v.0 <= 0 {
                return Err(key_err(key, "must be positive"));
            }
        }
        if self.kafka.input_topics.is_empty() {
            return Err(key_err("kafka.input_topics", "needs at least one topic"));
        }
        Ok(EngineConfig {
            max_out_of_orderness: self.time.max_out_of_orderness.0,
            allowed_lateness: self.time.allowed_lateness.0,
            cart_timeout: self.signals.cart_timeout.0,
            recovery_window: self.signals.recovery_window.0,
            conversion_window: self.signals.conversion_window.0,
            contact_cap: self.signals.contact_cap,
            min_delta: self.signals.min_delta,
            state_ttl: self.signals.state_ttl.0,
            survey_cooldown: self.signals.survey_cooldown.0,
            half_life: self.engagement.half_life.0,
            scale: self.engagement.scale,
            channel_bonus: self.engagement.channel_bonus,
            weights,
            r: self.churn.r,
            alpha: self.churn.alpha,
            a: self.churn.a,
            b: self.churn.b,
            gamma_gamma: crate::clv::GammaGamma {
                p: self.clv.p,
                q: self.clv.q,
                v: self.clv.v,
            },
            horizon_months: self.clv.horizon_months,
            monthly_discount: self.clv.monthly_discount,
        })
    }
}
