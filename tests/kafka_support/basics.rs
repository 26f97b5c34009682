//! What every broker test shares: the binary and the repository, time
//! units and the test epoch, names no other test uses, free ports and the
//! wall clock.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_touchstream");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

pub const SEC: i64 = 1_000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;
/// 2026-01-05T00:00:00Z.
pub const T0: i64 = 1_767_571_200_000;

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{}-{:x}-{n}",
        std::process::id(),
        (nanos as u64) & 0xffff_ffff_ffff
    )
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

pub fn wall_ms() -> i64 {
    touchstream::cli::wall_clock_ms()
}
