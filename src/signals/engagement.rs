//! `engagement_score`: exponentially decayed weighted touches, boosted by
//! channel breadth (SPEC 4, "Engagement score").
//!
//! The decayed sum is kept incrementally relative to the customer's newest
//! event time, so an update is O(1): a newer event decays the sum to its
//! own time and adds its weight; a late one adds its weight decayed to the
//! newest time. The channels of the last 30 d are not stored here: they
//! are those of the customer's own touches that attribution keeps anyway
//! (see [`super::attribution::Touches::recent_channels`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::decay;
use crate::model::{Channel, ChannelSet, EventTime, Payload, TouchType, DAY_MS};
use crate::signals::config::EngineConfig;

/// The largest score: the float just below 100.
const BELOW_100: f64 = 99.999_999_999_999_99;

/// Channels count when an own touch on them is younger than this.
pub const CHANNEL_WINDOW: i64 = 30 * DAY_MS;

/// Engagement state of one customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngagementState {
    /// Σ weight × decay, relative to the customer's newest event time.
    sum: f64,
    /// Last emitted score (NaN before the first; persisted as null).
    #[serde(serialize_with = "nan_as_none", deserialize_with = "none_as_nan")]
    last_emitted: f64,
}

impl Default for EngagementState {
    fn default() -> Self {
        EngagementState {
            sum: 0.0,
            last_emitted: f64::NAN,
        }
    }
}

fn nan_as_none<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    (!v.is_nan()).then_some(*v).serialize(s)
}

fn none_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl EngagementState {
    /// Applies a touch at `t`. `newest_before` is the customer's newest
    /// event time before it (`None` for the first event).
    pub fn apply(
        &mut self,
        cfg: &EngineConfig,
        kind: TouchType,
        t: EventTime,
        newest_before: Option<EventTime>,
    ) {
        let w = cfg.weights[kind.index()];
        match newest_before {
            None => self.sum = w,
            Some(n) if t >= n => self.sum = self.sum * decay(t - n, cfg.half_life) + w,
            Some(n) => self.sum += w * decay(n - t, cfg.half_life),
        }
    }

    /// The score at the customer's newest event time, given the channels
    /// of its own touches in the 30 d before it.
    pub fn score(&self, cfg: &EngineConfig, channels: ChannelSet) -> f64 {
        let n = channels.len() as f64;
        let raw = self.sum.max(0.0) * (1.0 + cfg.channel_bonus * (n - 1.0));
        let raw = raw.max(0.0);
        // In [0, 100) as SPEC says: for a very large raw, e^(−raw/scale)
        // is below 1e-16 and 1 − it rounds to 1.
        (100.0 * (1.0 - (-raw / cfg.scale).exp())).min(BELOW_100)
    }

    /// Computes the score after an event and returns a payload when it is
    /// the first or moved by at least `min_delta` since the last emitted one.
    pub fn evaluate(&mut self, cfg: &EngineConfig, channels: ChannelSet) -> Option<Payload> {
        let score = self.score(cfg, channels);
        let prev = self.last_emitted;
        if !prev.is_nan() && (score - prev).abs() < cfg.min_delta {
            return None;
        }
        self.last_emitted = score;
        Some(Payload::EngagementScore {
            score,
            previous: (!prev.is_nan()).then_some(prev),
            channels,
        })
    }
}

/// Whether an own touch on `channel` at `t` counts at `newest`.
pub fn in_window(newest: EventTime, t: EventTime) -> bool {
    newest.saturating_sub(t) < CHANNEL_WINDOW
}

/// Adds the channel of a touch not yet recorded, if it counts.
pub fn with_touch(
    mut set: ChannelSet,
    newest: EventTime,
    t: EventTime,
    channel: Channel,
) -> ChannelSet {
    if in_window(newest, t) {
        set.insert(channel);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_matches_spec() {
        let cfg = EngineConfig::default();
        let mut s = EngagementState::default();
        let two: ChannelSet = [Channel::Web, Channel::MobileApp].into_iter().collect();
        s.apply(&cfg, TouchType::PageView, 0, None);
        s.apply(&cfg, TouchType::AddToCart, 7 * DAY_MS, Some(0));
        // raw = 1 * 0.5 + 5 = 5.5; two channels: × 1.1.
        let expect = 100.0 * (1.0 - (-(5.5f64 * 1.1) / 10.0).exp());
        assert!((s.score(&cfg, two) - expect).abs() < 1e-12);
        // A late page_view one half-life before the newest time.
        s.apply(&cfg, TouchType::PageView, 0, Some(7 * DAY_MS));
        let expect = 100.0 * (1.0 - (-(6.0f64 * 1.1) / 10.0).exp());
        assert!((s.score(&cfg, two) - expect).abs() < 1e-12);
    }

    #[test]
    fn score_stays_below_100_however_large_raw() {
        let cfg = EngineConfig::default();
        let mut s = EngagementState::default();
        for i in 0..40 {
            s.apply(&cfg, TouchType::OrderPlaced, i, (i > 0).then_some(i - 1));
        }
        let score = s.score(&cfg, ChannelSet::EMPTY);
        assert!(score < 100.0 && score > 99.99, "{score}");
        assert_eq!(BELOW_100, f64::from_bits(100f64.to_bits() - 1));
    }

    #[test]
    fn raw_floored_at_zero() {
        let cfg = EngineConfig::default();
        let mut s = EngagementState::default();
        s.apply(&cfg, TouchType::Unsubscribed, 0, None);
        assert_eq!(s.score(&cfg, ChannelSet::EMPTY), 0.0);
    }
}
