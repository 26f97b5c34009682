//! HTTP on one port: `/metrics` (Prometheus text), `/healthz` (the process
//! is alive: no fatal error, and the service loop turned recently) and
//! `/readyz` (every assigned partition is restored and consuming). Runs on
//! its own small tokio runtime thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use thiserror::Error;

use crate::metrics::Metrics;

/// Readiness and liveness shared with the service loop.
#[derive(Debug, Default)]
pub struct Health {
    /// Every assigned partition is restored and consuming.
    pub ready: AtomicBool,
    /// The service hit a fatal error and is shutting down.
    pub failed: AtomicBool,
    /// When the service loop last turned (ms on a monotonic clock; 0 = not
    /// started yet, e.g. still waiting for the brokers).
    beat: AtomicU64,
    /// `/healthz` fails after this long without a beat (ms; 0 = never).
    stall_ms: AtomicU64,
}

/// Milliseconds on a monotonic clock (never 0), immune to wall-clock steps.
fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl Health {
    /// Health whose `/healthz` fails after `stall_ms` without a beat.
    pub fn with_stall_timeout(stall_ms: u64) -> Self {
        let h = Health::default();
        h.stall_ms.store(stall_ms, Ordering::Relaxed);
        h
    }

    /// The service loop is turning.
    pub fn beat(&self) {
        self.beat.store(monotonic_ms(), Ordering::Relaxed);
    }

    /// Why the process is not alive, if it is not.
    pub fn liveness(&self) -> Result<(), String> {
        liveness(
            self.failed.load(Ordering::Relaxed),
            self.beat.load(Ordering::Relaxed),
            monotonic_ms(),
            self.stall_ms.load(Ordering::Relaxed),
        )
    }
}

/// Liveness from its inputs: failed, or no beat for longer than `stall_ms`.
fn liveness(failed: bool, beat: u64, now: u64, stall_ms: u64) -> Result<(), String> {
    if failed {
        return Err("failed".into());
    }
    let since = now.saturating_sub(beat);
    if beat > 0 && stall_ms > 0 && since > stall_ms {
        return Err(format!(
            "stalled: the service loop has not turned for {} s",
            since / 1000
        ));
    }
    Ok(())
}

/// Why the HTTP server could not start.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The listen address is invalid.
    #[error("http.listen `{0}` is not a socket address")]
    Address(String),
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.ready.load(Ordering::Relaxed) && !s.health.failed.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds `listen` and serves in a background thread; returns the bound
/// address (useful with port 0).
pub fn spawn(
    listen: &str,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<SocketAddr, HttpError> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| HttpError::Address(listen.to_string()))?;
    let std_listener = std::net::TcpListener::bind(addr).map_err(|source| HttpError::Bind {
        addr: listen.to_string(),
        source,
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|source| HttpError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let local = std_listener
        .local_addr()
        .map_err(|source| HttpError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health });
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(%e, "HTTP runtime failed to start.");
                    return;
                }
            };
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app).await {
                            tracing::error!(%e, "HTTP server stopped.");
                        }
                    }
                    Err(e) => tracing::error!(%e, "HTTP listener failed."),
                }
            });
        })
        .map_err(|source| HttpError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_fails_when_failed_or_stalled_not_before_the_first_beat() {
        assert_eq!(liveness(false, 0, 1_000_000, 60_000), Ok(()), "not started");
        assert_eq!(liveness(false, 10_000, 70_000, 60_000), Ok(()));
        let e = liveness(false, 10_000, 70_001, 60_000).unwrap_err();
        assert!(e.starts_with("stalled") && e.contains("60 s"), "{e}");
        assert_eq!(liveness(false, 10, 1_000_000_000, 0), Ok(()), "0 = never");
        assert_eq!(liveness(true, 10_000, 10_001, 60_000), Err("failed".into()));
        let h = Health::with_stall_timeout(60_000);
        assert_eq!(h.liveness(), Ok(()));
        h.beat();
        assert_eq!(h.liveness(), Ok(()));
        h.failed.store(true, Ordering::Relaxed);
        assert!(h.liveness().is_err());
    }
}
