//! The settings of the engine and its signals: everything they need, in
//! milliseconds and plain numbers. It lives with the signals, the lowest
//! layer that reads it; the engine re-exports it (`engine::EngineConfig`).
//! `crate::config` reads it from TOML and the environment
//! ([`crate::config::Config::engine`]).

/// Everything the pure engine needs, in milliseconds and plain numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Watermark lag behind the newest event.
    pub max_out_of_orderness: i64,
    /// How far behind the watermark an event may still count.
    pub allowed_lateness: i64,
    /// Cart inactivity before abandonment.
    pub cart_timeout: i64,
    /// Recovery window after an abandonment.
    pub recovery_window: i64,
    /// Conversion window after a campaign click.
    pub conversion_window: i64,
    /// Outbound-message cap per 7 d.
    pub contact_cap: u32,
    /// Minimum engagement change to emit.
    pub min_delta: f64,
    /// Event-time inactivity before eviction.
    pub state_ttl: i64,
    /// Minimum time between survey triggers.
    pub survey_cooldown: i64,
    /// Engagement half-life.
    pub half_life: i64,
    /// Engagement scale.
    pub scale: f64,
    /// Engagement per-channel bonus.
    pub channel_bonus: f64,
    /// Engagement weight per touchpoint type, indexed by `TouchType::index`.
    pub weights: [f64; 20],
    /// BG/NBD r.
    pub r: f64,
    /// BG/NBD alpha (days).
    pub alpha: f64,
    /// BG/NBD a.
    pub a: f64,
    /// BG/NBD b.
    pub b: f64,
    /// Gamma-Gamma order-value model.
    pub gamma_gamma: crate::clv::GammaGamma,
    /// Months of `predicted_clv`.
    pub horizon_months: u32,
    /// Monthly discount of `predicted_clv`.
    pub monthly_discount: f64,
}

impl EngineConfig {
    /// The BG/NBD model of `[churn]`.
    pub fn bgnbd(&self) -> crate::bgnbd::BgNbd {
        crate::bgnbd::BgNbd {
            r: self.r,
            alpha: self.alpha,
            a: self.a,
            b: self.b,
        }
    }

    /// The CLV model of `[churn]` and `[clv]`.
    pub fn clv(&self) -> crate::clv::ClvModel {
        crate::clv::ClvModel {
            bgnbd: self.bgnbd(),
            gamma_gamma: self.gamma_gamma,
            horizon_months: self.horizon_months,
            monthly_discount: self.monthly_discount,
        }
    }
}
