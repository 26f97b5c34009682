//! [`Millis`]: how every duration of the configuration is written
//! (humantime text or integer milliseconds) and read.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written as `"5s"`, `"1h"`, `"7d"`, `"250ms"` (humantime syntax)
/// or as an integer number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub i64);

impl Millis {
    /// As a std duration (negative values clamp to zero).
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0.max(0) as u64)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(ms) if ms >= 0 => Ok(Millis(ms)),
            Raw::Int(_) => Err(serde::de::Error::custom("a duration must not be negative")),
            Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"5s"`, `"1h"`, `"7d"`, `"1h 30m"`, `"250ms"`.
pub fn parse_duration(s: &str) -> Result<Millis, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like \"5s\", \"1h\" or \"7d\": {e}"))?;
    if !d.is_zero() && d.as_millis() == 0 {
        return Err(format!("`{s}` is below the 1 ms resolution of durations"));
    }
    i64::try_from(d.as_millis())
        .map(Millis)
        .map_err(|_| format!("`{s}` is too long"))
}
