//! `order_attributed` (SPEC 4, SPEC 7 "Attribution").
//!
//! Keeps, sorted by time, the customer's own touches (not `message_sent`)
//! that an order which is not too late can still be attributed over: an
//! order at or after the lateness horizon (watermark − allowed lateness)
//! sees every touch after the horizon, but of those at or before it only
//! the newest 64 can be among its last 64. So: every touch after the
//! horizon, plus the 64 newest at or before it, within 30 d — exact, and
//! bounded by [`KEEP`] against bursts (more than 190 own touches inside the
//! allowed lateness). An order is attributed over the touches before it in
//! (order − 30 d, order], the last 64 by time, under five models; weights
//! are summed per channel.

use super::engagement::in_window;
use super::{decay, Lane, Lanes, Packed};
use crate::model::{AttributionModels, Channel, ChannelSet, EventTime, Weights, DAY_MS};

/// Look-back window.
pub const WINDOW: i64 = 30 * DAY_MS;
/// Touches an order is attributed over at most.
pub const MAX_TOUCHES: usize = 64;
/// Touches kept at most (a bound against bursts; see the module docs).
pub const KEEP: usize = 254;
/// Half-life of the time-decay model.
pub const HALF_LIFE: i64 = 7 * DAY_MS;

/// A read-only view of a customer's touches ([`Lane::Touches`]) and the
/// channels dropped from them ([`Lane::Dropped`]: the latest time per
/// channel of touches dropped by the [`KEEP`] cap or forgotten while quiet
/// whose channel has no later touch kept; the engagement channel count
/// still needs them. Empty for nearly everyone).
#[derive(Debug, Clone, Copy)]
pub struct Touches<'a> {
    touches: &'a [Packed],
    dropped: &'a [Packed],
}

fn add(w: &mut Weights, c: Channel, v: f64) {
    w.add(c, v);
}

impl Lanes {
    /// The customer's touches.
    pub fn touches(&self) -> Touches<'_> {
        Touches {
            touches: self.lane(Lane::Touches),
            dropped: self.lane(Lane::Dropped),
        }
    }

    /// Records an own touch (orders included, after they are attributed).
    /// `late_horizon`: watermark − allowed lateness; no order older than it
    /// can arrive.
    pub fn record_touch(&mut self, t: EventTime, channel: Channel, late_horizon: EventTime) {
        // Beyond 30 d before the horizon a touch matters neither to an
        // order nor to the engagement channel count.
        let horizon = late_horizon.saturating_sub(WINDOW);
        self.insert_sorted(Lane::Touches, Packed::new(t, channel));
        self.prune_until(Lane::Touches, horizon);
        let settled = self
            .lane(Lane::Touches)
            .partition_point(|p| p.time() <= late_horizon);
        if settled > MAX_TOUCHES {
            self.drop_oldest(settled - MAX_TOUCHES, None);
        }
        let n = self.lane(Lane::Touches).len();
        if n > KEEP {
            self.drop_oldest(n - KEEP, None);
        }
        if !self.lane(Lane::Dropped).is_empty() {
            self.retain(Lane::Dropped, |q| q.time() > horizon);
        }
    }

    /// Forgets the touches of a customer who has been quiet: those at or
    /// before `horizon` can no longer matter to an order (one that old is
    /// too late), but the channel count at the customer's `newest` event
    /// (snapshot) still needs the channels of the last 30 d before it, so
    /// each of those channels keeps its latest time in the dropped lane.
    pub fn forget_touches(&mut self, horizon: EventTime, newest: EventTime) {
        let n = self
            .lane(Lane::Touches)
            .partition_point(|p| p.time() <= horizon);
        if n > 0 {
            self.drop_oldest(n, Some(newest));
        }
    }

    /// Drops the `n` oldest touches; a dropped touch whose channel has no
    /// later touch kept is remembered in the dropped lane (its latest time
    /// per channel), if it lies in the 30 d before `newest` when that is
    /// given.
    fn drop_oldest(&mut self, n: usize, newest: Option<EventTime>) {
        for i in 0..n {
            let touches = self.lane(Lane::Touches);
            let p = touches[i];
            let c = p.channel();
            if newest.is_some_and(|nw| !in_window(nw, p.time()))
                || touches[i + 1..].iter().any(|q| q.channel() == c)
            {
                continue;
            }
            match self
                .lane_mut(Lane::Dropped)
                .iter_mut()
                .find(|q| q.channel() == c)
            {
                Some(q) => *q = (*q).max(p),
                None => self.push(Lane::Dropped, p),
            }
        }
        self.remove_front(Lane::Touches, n);
    }
}

impl Touches<'_> {
    /// Number of touches kept.
    pub fn len(&self) -> usize {
        self.touches.len()
    }

    /// Whether no touch is kept.
    pub fn is_empty(&self) -> bool {
        self.touches.is_empty()
    }

    /// Channels of the own touches recorded in the 30 d before `newest`.
    pub fn recent_channels(&self, newest: EventTime) -> ChannelSet {
        let mut set = ChannelSet::EMPTY;
        for p in self.touches.iter().rev() {
            if !in_window(newest, p.time()) {
                break; // sorted by time: every earlier touch is older still
            }
            set.insert(p.channel());
        }
        for p in self.dropped {
            if in_window(newest, p.time()) {
                set.insert(p.channel());
            }
        }
        set
    }

    /// The weights of an order at `t` placed on `order_channel`.
    pub fn attribute(&self, t: EventTime, order_channel: Channel) -> AttributionModels {
        let end = self.touches.partition_point(|p| p.time() <= t);
        let start = self.touches[..end].partition_point(|p| p.time() <= t - WINDOW);
        let start = start.max(end.saturating_sub(MAX_TOUCHES));
        let touches = &self.touches[start..end];
        let mut m = AttributionModels {
            last_touch: Weights::new(),
            first_touch: Weights::new(),
            linear: Weights::new(),
            time_decay: Weights::new(),
            position_based: Weights::new(),
        };
        let (Some(first), Some(last)) = (touches.first(), touches.last()) else {
            for w in [
                &mut m.last_touch,
                &mut m.first_touch,
                &mut m.linear,
                &mut m.time_decay,
                &mut m.position_based,
            ] {
                add(w, order_channel, 1.0);
            }
            return m;
        };
        add(&mut m.last_touch, last.channel(), 1.0);
        add(&mut m.first_touch, first.channel(), 1.0);
        // Per channel: sum first, divide once, so that a channel holding
        // every touch gets exactly 1.0 under every model.
        let n = touches.len();
        let mut count = [0u32; 12];
        let mut middle = [0u32; 12];
        let mut decayed = [0.0f64; 12];
        let mut total = 0.0f64;
        for (i, p) in touches.iter().enumerate() {
            let c = p.channel() as usize;
            count[c] += 1;
            if i > 0 && i + 1 < n {
                middle[c] += 1;
            }
            let d = decay(t - p.time(), HALF_LIFE);
            decayed[c] += d;
            total += d;
        }
        for c in Channel::ALL.iter().copied() {
            let k = c as usize;
            if count[k] > 0 {
                add(&mut m.linear, c, f64::from(count[k]) / n as f64);
                add(&mut m.time_decay, c, decayed[k] / total);
            }
        }
        match n {
            1 => add(&mut m.position_based, first.channel(), 1.0),
            2 => {
                add(&mut m.position_based, first.channel(), 0.5);
                add(&mut m.position_based, last.channel(), 0.5);
            }
            _ => {
                add(&mut m.position_based, first.channel(), 0.4);
                add(&mut m.position_based, last.channel(), 0.4);
                for c in Channel::ALL.iter().copied() {
                    let k = c as usize;
                    if middle[k] > 0 {
                        let share = f64::from(middle[k]) / (n - 2) as f64;
                        add(&mut m.position_based, c, 0.2 * share);
                    }
                }
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(w: &Weights) -> f64 {
        w.iter().map(|(_, v)| v).sum()
    }

    #[test]
    fn models_sum_to_one_and_no_touch_case() {
        let mut a = Lanes::default();
        let m = a.touches().attribute(1000, Channel::Store);
        for w in [
            &m.last_touch,
            &m.first_touch,
            &m.linear,
            &m.time_decay,
            &m.position_based,
        ] {
            assert_eq!(w.get(Channel::Store), Some(1.0));
            assert_eq!(w.len(), 1);
        }
        a.record_touch(0, Channel::Email, i64::MIN);
        a.record_touch(DAY_MS, Channel::Web, i64::MIN);
        a.record_touch(2 * DAY_MS, Channel::Social, i64::MIN);
        a.record_touch(3 * DAY_MS, Channel::Web, i64::MIN);
        let m = a.touches().attribute(10 * DAY_MS, Channel::Web);
        for w in [
            &m.last_touch,
            &m.first_touch,
            &m.linear,
            &m.time_decay,
            &m.position_based,
        ] {
            assert!((sum(w) - 1.0).abs() < 1e-12, "{w:?}");
        }
        assert_eq!(m.first_touch.get(Channel::Email), Some(1.0));
        assert_eq!(m.last_touch.get(Channel::Web), Some(1.0));
        assert!((m.position_based.get(Channel::Web).unwrap_or(0.0) - 0.5).abs() < 1e-12); // 0.4 last + 0.1 middle
        assert!((m.position_based.get(Channel::Email).unwrap_or(0.0) - 0.4).abs() < 1e-12);
        assert!((m.position_based.get(Channel::Social).unwrap_or(0.0) - 0.1).abs() < 1e-12);
        assert!((m.linear.get(Channel::Web).unwrap_or(0.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn one_channel_gets_exactly_one_under_every_model() {
        let mut a = Lanes::default();
        for i in 0..10 {
            a.record_touch(i * 3_600_123 + 7, Channel::Web, i64::MIN);
        }
        let m = a.touches().attribute(40 * 3_600_000, Channel::Store);
        for w in [
            &m.last_touch,
            &m.first_touch,
            &m.linear,
            &m.time_decay,
            &m.position_based,
        ] {
            assert_eq!(w.iter().collect::<Vec<_>>(), vec![("web", 1.0)]);
        }
    }

    #[test]
    fn window_is_half_open_and_capped_at_64() {
        let mut a = Lanes::default();
        a.record_touch(0, Channel::Email, i64::MIN);
        a.record_touch(1, Channel::Web, i64::MIN);
        // Order exactly 30 d after the first touch: (order − 30 d, order] excludes it.
        let m = a.touches().attribute(WINDOW, Channel::Web);
        assert_eq!(m.first_touch.get(Channel::Web), Some(1.0));
        let mut b = Lanes::default();
        for i in 0..80 {
            b.record_touch(
                i,
                if i < 16 { Channel::Email } else { Channel::Web },
                i64::MIN,
            );
        }
        let m = b.touches().attribute(100, Channel::Web);
        assert_eq!(
            m.first_touch.get(Channel::Web),
            Some(1.0),
            "only the last 64"
        );
    }
}
