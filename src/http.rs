//! HTTP on one port: `/metrics` (Prometheus text), `/healthz` (the process
//! is alive) and `/readyz` (every assigned partition is restored and
//! consuming). Runs on its own small tokio runtime thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    if s.health.failed.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "failed\n")
    } else {
        (StatusCode::OK, "ok\n")
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
