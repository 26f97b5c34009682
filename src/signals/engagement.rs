//! `engagement_score`: exponentially decayed weighted touches, boosted by
//! channel breadth (SPEC 4, "Engagement score").
//!
//! The decayed sum is kept incrementally relative to the customer's newest
//! event time, so an update is O(1): a newer event decays the sum to its
//! own time and adds its weight; a late one adds its weight decayed to the
//! newest time.

use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

use super::{decay, distinct_channels, Packed};
use crate::config::EngineConfig;
use crate::model::{Channel, ChannelSet, EventTime, Payload, TouchType, DAY_MS};

const CHANNEL_WINDOW: i64 = 30 * DAY_MS;

/// Engagement state of one customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngagementState {
    /// Σ weight × decay, relative to the customer's newest event time.
    sum: f64,
    /// Last emitted score.
    last_emitted: Option<f64>,
    /// Latest own-touch time per channel (one entry per channel).
    channels: ThinVec<Packed>,
}

impl EngagementState {
    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        super::thin_bytes(&self.channels)
    }

    /// Applies a touch at `t`. `newest_before` is the customer's newest
    /// event time before it (`None` for the first event).
    pub fn apply(
        &mut self,
        cfg: &EngineConfig,
        kind: TouchType,
        channel: Channel,
        t: EventTime,
        newest_before: Option<EventTime>,
    ) {
        let w = cfg.weights[kind.index()];
        match newest_before {
            None => self.sum = w,
            Some(n) if t >= n => self.sum = self.sum * decay(t - n, cfg.half_life) + w,
            Some(n) => self.sum += w * decay(n - t, cfg.half_life),
        }
        if kind.is_own() {
            match self.channels.iter_mut().find(|p| p.channel() == channel) {
                Some(p) => {
                    if t > p.time() {
                        *p = Packed::new(t, channel);
                    }
                }
                None => {
                    super::reserve_compact(&mut self.channels);
                    self.channels.push(Packed::new(t, channel))
                }
            }
        }
    }

    /// Channels of own touches in the 30 d before `newest`, sorted.
    pub fn recent_channels(&self, newest: EventTime) -> ChannelSet {
        distinct_channels(
            self.channels
                .iter()
                .filter(|p| newest - p.time() < CHANNEL_WINDOW)
                .map(|p| p.channel()),
        )
    }

    /// The score at the customer's newest event time.
    pub fn score(&self, cfg: &EngineConfig, newest: EventTime) -> f64 {
        let n = self
            .channels
            .iter()
            .filter(|p| newest - p.time() < CHANNEL_WINDOW)
            .count() as f64;
        let raw = self.sum.max(0.0) * (1.0 + cfg.channel_bonus * (n - 1.0));
        let raw = raw.max(0.0);
        100.0 * (1.0 - (-raw / cfg.scale).exp())
    }

    /// Computes the score after an event and returns a payload when it is
    /// the first or moved by at least `min_delta` since the last emitted one.
    pub fn evaluate(&mut self, cfg: &EngineConfig, newest: EventTime) -> Option<Payload> {
        let score = self.score(cfg, newest);
        let emit = match self.last_emitted {
            None => true,
            Some(prev) => (score - prev).abs() >= cfg.min_delta,
        };
        if !emit {
            return None;
        }
        let previous = self.last_emitted.replace(score);
        Some(Payload::EngagementScore {
            score,
            previous,
            channels: self.recent_channels(newest),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_matches_spec() {
        let cfg = EngineConfig::default();
        let mut s = EngagementState::default();
        s.apply(&cfg, TouchType::PageView, Channel::Web, 0, None);
        s.apply(
            &cfg,
            TouchType::AddToCart,
            Channel::MobileApp,
            7 * DAY_MS,
            Some(0),
        );
        // raw = 1 * 0.5 + 5 = 5.5; two channels: × 1.1.
        let expect = 100.0 * (1.0 - (-(5.5f64 * 1.1) / 10.0).exp());
        assert!((s.score(&cfg, 7 * DAY_MS) - expect).abs() < 1e-12);
        // A late page_view one half-life before the newest time.
        s.apply(&cfg, TouchType::PageView, Channel::Web, 0, Some(7 * DAY_MS));
        let expect = 100.0 * (1.0 - (-(6.0f64 * 1.1) / 10.0).exp());
        assert!((s.score(&cfg, 7 * DAY_MS) - expect).abs() < 1e-12);
    }

    #[test]
    fn raw_floored_at_zero() {
        let cfg = EngineConfig::default();
        let mut s = EngagementState::default();
        s.apply(&cfg, TouchType::Unsubscribed, Channel::Email, 0, None);
        assert_eq!(s.score(&cfg, 0), 0.0);
    }
}
