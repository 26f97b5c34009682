//! The `[http]` section (the /metrics, /healthz, /readyz listener) and
//! its defaults.

use serde::Deserialize;

use super::Millis;

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address for /metrics, /healthz, /readyz.
    pub listen: String,
    /// `/healthz` fails once the service loop has not turned for this long
    /// (a wedged process; Kubernetes then restarts it).
    pub stall_timeout: Millis,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:9464".into(),
            stall_timeout: Millis(600_000),
        }
    }
}
