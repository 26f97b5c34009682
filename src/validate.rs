//! The bad-input rules of SPEC 2 and 7: a decoded [`RawTouchpoint`] becomes
//! a [`Touchpoint`] or a [`Rejection`] with one of the SPEC reasons.
//!
//! Rules run in SPEC order and the first failing one wins: missing_field,
//! invalid_customer_id, invalid_value, invalid_score, future_timestamp.
//! (decode_error and unknown_schema come from the codecs; duplicates and
//! too_late need state and are the engine's.) The wall clock is a
//! parameter, never read here.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{Channel, EventTime, Survey, TouchType, Touchpoint};

/// Why a record was rejected; `as_str` gives the SPEC name used for the DLQ
/// header and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Not decodable as a touchpoint.
    DecodeError,
    /// Avro with a schema id we cannot resolve.
    UnknownSchema,
    /// A required field is absent or null, or `event_id` is empty.
    MissingField,
    /// `customer_id` not 1..=256 bytes.
    InvalidCustomerId,
    /// `value` not finite or negative.
    InvalidValue,
    /// `score` outside its survey's range.
    InvalidScore,
    /// More than the allowed skew ahead of the wall clock.
    FutureTimestamp,
    /// Older than watermark − allowed lateness.
    TooLate,
}

impl RejectReason {
    /// Every reason, in SPEC order.
    pub const ALL: [RejectReason; 8] = [
        RejectReason::DecodeError,
        RejectReason::UnknownSchema,
        RejectReason::MissingField,
        RejectReason::InvalidCustomerId,
        RejectReason::InvalidValue,
        RejectReason::InvalidScore,
        RejectReason::FutureTimestamp,
        RejectReason::TooLate,
    ];

    /// The SPEC name.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::DecodeError => "decode_error",
            RejectReason::UnknownSchema => "unknown_schema",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidCustomerId => "invalid_customer_id",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::InvalidScore => "invalid_score",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::TooLate => "too_late",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record: the reason and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// SPEC reason.
    pub reason: RejectReason,
    /// What exactly was wrong.
    pub message: String,
}

impl Rejection {
    /// A rejection.
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }

    /// `too_late` (SPEC 3): an event at `t` older than the watermark `wm`
    /// (the one before it) minus the allowed lateness. Made here once for
    /// replay and the service alike.
    pub fn too_late(t: i64, wm: Option<i64>, allowed_lateness: i64) -> Self {
        Rejection::new(
            RejectReason::TooLate,
            format!(
                "timestamp {t} is older than watermark {} minus allowed lateness {allowed_lateness} ms",
                wm.unwrap_or_default()
            ),
        )
    }
}

/// Wall-clock now in epoch millis: what the `future_timestamp` rule and the
/// idle-partition rule compare with (the edges' only clock; the engine
/// never reads it).
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Rejection {}

/// A touchpoint as decoded, before the rules: every field optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawTouchpoint {
    /// `event_id`
    pub event_id: Option<String>,
    /// `customer_id`
    pub customer_id: Option<String>,
    /// `channel` (unknown names already mapped to `other`)
    pub channel: Option<Channel>,
    /// `type` (unknown names already mapped to `other`)
    pub kind: Option<TouchType>,
    /// `timestamp` in epoch millis
    pub timestamp: Option<EventTime>,
    /// `value`
    pub value: Option<f64>,
    /// `currency`
    pub currency: Option<String>,
    /// `cart_id`
    pub cart_id: Option<String>,
    /// `order_id`
    pub order_id: Option<String>,
    /// `campaign_id`
    pub campaign_id: Option<String>,
    /// `session_id`
    pub session_id: Option<String>,
    /// `survey`
    pub survey: Option<Survey>,
    /// `score`
    pub score: Option<i64>,
    /// `attributes`
    pub attributes: BTreeMap<String, String>,
}

/// Largest customer id in bytes.
pub const MAX_CUSTOMER_ID_BYTES: usize = 256;

pub use crate::model::MAX_ABS_TIMESTAMP;

/// Limits for the time rules.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock now in epoch millis.
    pub now: EventTime,
    /// Allowed skew ahead of `now` (SPEC: 1 h).
    pub max_future: i64,
}

/// Applies the SPEC rules in order.
pub fn validate(raw: RawTouchpoint, clock: Clock) -> Result<Touchpoint, Rejection> {
    use RejectReason::*;
    let missing = |name: &str| {
        Rejection::new(
            MissingField,
            format!("required field `{name}` is missing or null"),
        )
    };
    let event_id = raw.event_id.ok_or_else(|| missing("event_id"))?;
    if event_id.is_empty() {
        return Err(Rejection::new(MissingField, "`event_id` is empty"));
    }
    let customer_id = raw.customer_id.ok_or_else(|| missing("customer_id"))?;
    let channel = raw.channel.ok_or_else(|| missing("channel"))?;
    let kind = raw.kind.ok_or_else(|| missing("type"))?;
    let timestamp = raw.timestamp.ok_or_else(|| missing("timestamp"))?;
    if customer_id.is_empty() || customer_id.len() > MAX_CUSTOMER_ID_BYTES {
        return Err(Rejection::new(
            InvalidCustomerId,
            format!(
                "`customer_id` must be 1..=256 bytes, got {}",
                customer_id.len()
            ),
        ));
    }
    if let Some(v) = raw.value {
        if !v.is_finite() || v < 0.0 {
            return Err(Rejection::new(
                InvalidValue,
                format!("`value` must be finite and >= 0, got {v}"),
            ));
        }
    }
    if let Some(score) = raw.score {
        let Some(survey) = raw.survey else {
            return Err(Rejection::new(
                InvalidScore,
                format!("`score` {score} without a `survey`"),
            ));
        };
        let (lo, hi) = survey.score_range();
        if score < i64::from(lo) || score > i64::from(hi) {
            return Err(Rejection::new(
                InvalidScore,
                format!("`score` {score} outside {lo}..={hi} for survey `{survey}`"),
            ));
        }
    }
    // Beyond 2^43 ms the engine cannot represent a time; such a value is
    // in the future of any real clock.
    if timestamp >= MAX_ABS_TIMESTAMP {
        return Err(Rejection::new(
            FutureTimestamp,
            format!(
                "`timestamp` {timestamp} is beyond the supported range (below 2^43 ms, 2248-09-26)"
            ),
        ));
    }
    if timestamp > clock.now.saturating_add(clock.max_future) {
        return Err(Rejection::new(
            FutureTimestamp,
            format!(
                "`timestamp` {timestamp} is more than {} ms ahead of the wall clock {}",
                clock.max_future, clock.now
            ),
        ));
    }
    Ok(Touchpoint {
        event_id,
        customer_id,
        channel,
        kind,
        timestamp,
        value: raw.value,
        currency: raw.currency,
        cart_id: raw.cart_id,
        order_id: raw.order_id,
        campaign_id: raw.campaign_id,
        session_id: raw.session_id,
        survey: raw.survey,
        score: raw.score.map(|s| s as i32),
        attributes: raw.attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> RawTouchpoint {
        RawTouchpoint {
            event_id: Some("e".into()),
            customer_id: Some("c".into()),
            channel: Some(Channel::Web),
            kind: Some(TouchType::PageView),
            timestamp: Some(1_000),
            ..Default::default()
        }
    }

    const CLOCK: Clock = Clock {
        now: 10_000_000,
        max_future: 3_600_000,
    };

    fn reason(raw: RawTouchpoint) -> Option<RejectReason> {
        validate(raw, CLOCK).err().map(|r| r.reason)
    }

    #[test]
    fn rules_in_order() {
        assert_eq!(reason(good()), None);
        assert_eq!(
            reason(RawTouchpoint {
                event_id: Some(String::new()),
                ..good()
            }),
            Some(RejectReason::MissingField)
        );
        assert_eq!(
            reason(RawTouchpoint {
                timestamp: None,
                ..good()
            }),
            Some(RejectReason::MissingField)
        );
        // missing beats invalid customer id
        assert_eq!(
            reason(RawTouchpoint {
                customer_id: Some(String::new()),
                timestamp: None,
                ..good()
            }),
            Some(RejectReason::MissingField)
        );
        assert_eq!(
            reason(RawTouchpoint {
                customer_id: Some("x".repeat(257)),
                ..good()
            }),
            Some(RejectReason::InvalidCustomerId)
        );
        assert_eq!(
            reason(RawTouchpoint {
                customer_id: Some("x".repeat(256)),
                ..good()
            }),
            None
        );
        // invalid customer id beats invalid value
        assert_eq!(
            reason(RawTouchpoint {
                customer_id: Some(String::new()),
                value: Some(-1.0),
                ..good()
            }),
            Some(RejectReason::InvalidCustomerId)
        );
        assert_eq!(
            reason(RawTouchpoint {
                value: Some(f64::NAN),
                ..good()
            }),
            Some(RejectReason::InvalidValue)
        );
        assert_eq!(
            reason(RawTouchpoint {
                value: Some(f64::INFINITY),
                ..good()
            }),
            Some(RejectReason::InvalidValue)
        );
        assert_eq!(
            reason(RawTouchpoint {
                value: Some(0.0),
                ..good()
            }),
            None
        );
        assert_eq!(
            reason(RawTouchpoint {
                value: Some(-1.0),
                survey: Some(Survey::Nps),
                score: Some(11),
                ..good()
            }),
            Some(RejectReason::InvalidValue)
        );
        assert_eq!(
            reason(RawTouchpoint {
                survey: Some(Survey::Nps),
                score: Some(11),
                ..good()
            }),
            Some(RejectReason::InvalidScore)
        );
        assert_eq!(
            reason(RawTouchpoint {
                survey: Some(Survey::Csat),
                score: Some(0),
                ..good()
            }),
            Some(RejectReason::InvalidScore)
        );
        assert_eq!(
            reason(RawTouchpoint {
                survey: Some(Survey::Ces),
                score: Some(7),
                ..good()
            }),
            None
        );
        assert_eq!(
            reason(RawTouchpoint {
                score: Some(3),
                ..good()
            }),
            Some(RejectReason::InvalidScore)
        );
        assert_eq!(
            reason(RawTouchpoint {
                survey: Some(Survey::Nps),
                score: Some(-1),
                timestamp: Some(CLOCK.now + 3_600_001),
                ..good()
            }),
            Some(RejectReason::InvalidScore)
        );
        assert_eq!(
            reason(RawTouchpoint {
                timestamp: Some(CLOCK.now + 3_600_001),
                ..good()
            }),
            Some(RejectReason::FutureTimestamp)
        );
        assert_eq!(
            reason(RawTouchpoint {
                timestamp: Some(CLOCK.now + 3_600_000),
                ..good()
            }),
            None
        );
        assert_eq!(
            reason(RawTouchpoint {
                timestamp: Some(i64::MAX),
                ..good()
            }),
            Some(RejectReason::FutureTimestamp)
        );
        let far = Clock {
            now: i64::MAX / 2,
            max_future: 0,
        };
        for beyond in [MAX_ABS_TIMESTAMP, MAX_ABS_TIMESTAMP + 1] {
            assert_eq!(
                validate(
                    RawTouchpoint {
                        timestamp: Some(beyond),
                        ..good()
                    },
                    far
                )
                .unwrap_err()
                .reason,
                RejectReason::FutureTimestamp
            );
        }
        // The edges the packed 6-byte times hold.
        for edge in [MAX_ABS_TIMESTAMP - 1, -MAX_ABS_TIMESTAMP] {
            let tp = validate(
                RawTouchpoint {
                    timestamp: Some(edge),
                    ..good()
                },
                far,
            )
            .expect("inside the range");
            let p = crate::signals::Packed::new(tp.timestamp, crate::model::Channel::Other);
            assert_eq!(p.time(), edge);
        }
    }
}
