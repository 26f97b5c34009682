//! Engine and codec benchmarks (criterion), plus a state-size measurement.
//!
//! - `engine/on_touchpoint`: touchpoints per second through the pure engine
//!   (every signal on), one core, decoding excluded.
//! - `decode/json`, `decode/avro`: bytes → validated touchpoint.
//! - `baseline/hashmap_update`: a plain per-customer HashMap counter over
//!   the same input, so that engine figures can be read as a ratio to it
//!   measured in the same run on the same (shared, noisy) machine.
//! - state size: bytes of state per customer after replaying generated
//!   traffic for `TOUCHSTREAM_BENCH_CUSTOMERS` customers (default 1,000,000)
//!   over `TOUCHSTREAM_BENCH_DAYS` days (default 30), then of the same
//!   customers after `TOUCHSTREAM_BENCH_QUIET_DAYS` days (default 100) with
//!   no touchpoint, the watermark advancing (every timer due fires).
//!
//! `TOUCHSTREAM_BENCH_INPUT_CUSTOMERS` (default 20,000) sets the customers
//! of the throughput input: with few customers the state stays in the CPU
//! caches, with many it does not — the engine is memory-bound.
//!
//! Run: `cargo bench --bench engine` (add `-- --quick` for a short run).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The allocator the `touchstream` binary uses (mimalloc), counting the
/// bytes it really hands out (its size classes included), so the state
/// size below is measured, not estimated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Counting is on only while the state size is measured.
static COUNTING: AtomicBool = AtomicBool::new(false);

fn count() -> bool {
    COUNTING.load(Ordering::Relaxed)
}

// SAFETY: every call is forwarded to mimalloc unchanged; only counts are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc(layout);
        if count() && !p.is_null() {
            LIVE.fetch_add(
                mimalloc::MiMalloc.usable_size(p) as isize,
                Ordering::Relaxed,
            );
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc_zeroed(layout);
        if count() && !p.is_null() {
            LIVE.fetch_add(
                mimalloc::MiMalloc.usable_size(p) as isize,
                Ordering::Relaxed,
            );
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if count() {
            LIVE.fetch_sub(
                mimalloc::MiMalloc.usable_size(p) as isize,
                Ordering::Relaxed,
            );
        }
        mimalloc::MiMalloc.dealloc(p, layout)
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !count() {
            return mimalloc::MiMalloc.realloc(p, layout, new_size);
        }
        let old = mimalloc::MiMalloc.usable_size(p);
        let q = mimalloc::MiMalloc.realloc(p, layout, new_size);
        if !q.is_null() {
            LIVE.fetch_sub(old as isize, Ordering::Relaxed);
            LIVE.fetch_add(
                mimalloc::MiMalloc.usable_size(q) as isize,
                Ordering::Relaxed,
            );
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

use criterion::{black_box, BatchSize, Criterion, Throughput};
use touchstream::codec;
use touchstream::config::EngineConfig;
use touchstream::engine::Engine;
use touchstream::generate::{stream, GenConfig};
use touchstream::model::Touchpoint;
use touchstream::model::DAY_MS;
use touchstream::validate::{validate, Clock};

fn input(customers: u32, days: u32) -> Vec<Touchpoint> {
    stream(&GenConfig {
        customers,
        days,
        ..GenConfig::default()
    })
    .collect()
}

fn bench_engine(c: &mut Criterion, tps: &[Touchpoint]) {
    let cfg = Arc::new(EngineConfig::default());
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(tps.len() as u64));
    g.sample_size(10);
    g.bench_function("on_touchpoint", |b| {
        b.iter_batched(
            || Engine::new(cfg.clone()),
            |mut e| {
                let mut out = Vec::with_capacity(1024);
                for tp in tps {
                    e.on_touchpoint(tp, &mut out);
                    out.clear();
                }
                e
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
    let mut g = c.benchmark_group("baseline");
    g.throughput(Throughput::Elements(tps.len() as u64));
    g.sample_size(10);
    g.bench_function("hashmap_update", |b| {
        b.iter_batched(
            HashMap::<String, (i64, u32)>::new,
            |mut m| {
                for tp in tps {
                    match m.get_mut(tp.customer_id.as_str()) {
                        Some(e) => {
                            e.0 = e.0.max(tp.timestamp);
                            e.1 += 1;
                        }
                        None => {
                            m.insert(tp.customer_id.clone(), (tp.timestamp, 1));
                        }
                    }
                }
                m
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_decode(c: &mut Criterion, tps: &[Touchpoint]) {
    let clock = Clock {
        now: i64::MAX / 4,
        max_future: 0,
    };
    let json: Vec<String> = tps.iter().map(codec::json::encode).collect();
    let schema = codec::avro::touchpoint_schema().expect("schema");
    let avro: Vec<Vec<u8>> = tps
        .iter()
        .map(|tp| {
            apache_avro::to_avro_datum(&schema, codec::avro::touchpoint_value(tp)).expect("encode")
        })
        .collect();
    let reader = codec::avro::DatumReader::new(&schema).expect("reader");
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(tps.len() as u64));
    g.sample_size(10);
    g.bench_function("json", |b| {
        b.iter(|| {
            let mut ok = 0;
            for l in &json {
                ok += codec::json::decode(l.as_bytes())
                    .and_then(|r| validate(r, clock))
                    .is_ok() as usize;
            }
            black_box(ok)
        })
    });
    g.bench_function("avro", |b| {
        b.iter(|| {
            let mut ok = 0;
            for d in &avro {
                ok += reader.decode(d).and_then(|r| validate(r, clock)).is_ok() as usize;
            }
            black_box(ok)
        })
    });
    g.finish();
}

/// Inline sizes of the customer struct and its parts.
fn layout() -> String {
    use std::mem::size_of;
    use touchstream::engine::state::Customer;
    use touchstream::signals::*;
    format!(
        "Customer {} B inline (engagement {}, cart {}, churn {}, survey {}, lists {})",
        size_of::<Customer>(),
        size_of::<engagement::EngagementState>(),
        size_of::<cart::CartState>(),
        size_of::<churn::ChurnState>(),
        size_of::<survey::SurveyState>(),
        size_of::<touchstream::signals::Lanes>(),
    )
}

fn state_size() {
    println!("layout: {}", layout());
    let customers: u32 = std::env::var("TOUCHSTREAM_BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let days: u32 = std::env::var("TOUCHSTREAM_BENCH_DAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let started = Instant::now();
    // Whatever is allocated before this point is never freed while counting
    // (so LIVE cannot underflow on it): the measurement starts empty.
    COUNTING.store(true, Ordering::Relaxed);
    let heap_before = LIVE.load(Ordering::Relaxed);
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    let mut out = Vec::new();
    let mut n = 0u64;
    for tp in stream(&GenConfig {
        customers,
        days,
        ..GenConfig::default()
    }) {
        e.on_touchpoint(&tp, &mut out);
        out.clear();
        n += 1;
    }
    let heap = settle(&mut e, &mut out, heap_before);
    report(
        &e,
        heap,
        &format!("{n} touchpoints over {days} days"),
        started,
    );
    // The same customers once they have gone quiet: the watermark moves on
    // a day at a time with no touchpoint, so every timer due fires (churn
    // levels move, quiet customers shed what can no longer matter).
    let quiet: i64 = std::env::var("TOUCHSTREAM_BENCH_QUIET_DAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    if let (true, Some(wm)) = (quiet > 0, e.watermark()) {
        let started = Instant::now();
        COUNTING.store(true, Ordering::Relaxed);
        for d in 1..=quiet {
            e.advance_watermark(wm + d * DAY_MS, &mut out);
            out.clear();
        }
        let heap = settle(&mut e, &mut out, heap_before);
        report(
            &e,
            heap,
            &format!("the same customers after {quiet} quiet days"),
            started,
        );
    }
}

/// Ends a measurement: frees what the engine's caller holds, drains the
/// changed customers as the service does at every checkpoint (which
/// empties the engine's list of them), stops counting and returns the heap
/// the engine holds.
fn settle(
    e: &mut Engine,
    out: &mut Vec<touchstream::model::DerivedEvent>,
    heap_before: isize,
) -> usize {
    out.clear();
    out.shrink_to_fit();
    drop(e.drain_changes());
    let heap = (LIVE.load(Ordering::Relaxed) - heap_before).max(0) as usize;
    COUNTING.store(false, Ordering::Relaxed);
    heap
}

/// Prints the measured heap per customer, the estimate's average, median
/// and 90th percentile, and where the estimated bytes go.
fn report(e: &Engine, heap: usize, what: &str, started: Instant) {
    let bytes = e.approx_state_bytes();
    let rows = e.snapshot();
    let sample = || {
        rows.iter()
            .step_by(97)
            .filter_map(|row| e.customer(&row.customer_id))
    };
    let mut sizes: Vec<usize> = sample().map(|c| c.approx_bytes()).collect();
    sizes.sort_unstable();
    let at = |q: usize| sizes.get(sizes.len() * q / 100).copied().unwrap_or(0);
    // Where the estimated bytes go, on average per customer.
    let mut parts = [0usize; 5];
    let mut with_rare = 0usize;
    for c in sample() {
        use touchstream::signals::Lane;
        parts[0] += c.lists.lane_bytes(Lane::Dedup);
        parts[1] += c.lists.lane_bytes(Lane::Touches) + c.lists.lane_bytes(Lane::Dropped);
        parts[2] += c.lists.lane_bytes(Lane::Messages);
        if let Some(r) = &c.rare {
            with_rare += 1;
            parts[3] += std::mem::size_of_val(&**r) + r.cart.heap_bytes() + r.survey.heap_bytes();
        }
        parts[4] += c.id().len();
    }
    let k = sizes.len().max(1);
    println!(
        "breakdown (estimate, per customer): lists: dedup {} B, attribution {} B, fatigue {} B; rare {} B ({:.0} % of customers), id {} B, struct {} B, timers ~{} B",
        parts[0] / k,
        parts[1] / k,
        parts[2] / k,
        parts[3] / k,
        100.0 * with_rare as f64 / k as f64,
        parts[4] / k,
        std::mem::size_of::<touchstream::engine::state::Customer>(),
        e.timer_queue_bytes() / e.customers().max(1),
    );
    println!(
        "state_size: {} customers, {what}, {} pending timers: {:.0} bytes/customer of heap measured (index, slots, timers, allocator size classes included); per-customer estimate {:.0} on average, median {}, 90th percentile {} ({:.1} s)",
        e.customers(),
        e.pending_timers(),
        heap as f64 / e.customers().max(1) as f64,
        bytes as f64 / e.customers().max(1) as f64,
        at(50),
        at(90),
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let quick_state = std::env::args().any(|a| a == "--state-only");
    // `cargo test --all-targets` runs benches without `--bench`: then only
    // check that they work, on tiny inputs.
    let smoke = !std::env::args().any(|a| a == "--bench");
    if smoke {
        std::env::set_var("TOUCHSTREAM_BENCH_CUSTOMERS", "200");
    }
    if !quick_state {
        let customers = if smoke {
            200
        } else {
            std::env::var("TOUCHSTREAM_BENCH_INPUT_CUSTOMERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(20_000)
        };
        let tps = input(customers, 30);
        println!(
            "input: {} generated touchpoints for {customers} customers over 30 days",
            tps.len()
        );
        let mut c = Criterion::default().configure_from_args();
        let only = std::env::var("TOUCHSTREAM_BENCH_ONLY").unwrap_or_default();
        if only.is_empty() || only == "engine" {
            bench_engine(&mut c, &tps);
        }
        if only.is_empty() || only == "decode" {
            bench_decode(&mut c, &tps);
        }
        c.final_summary();
    }
    state_size();
}
