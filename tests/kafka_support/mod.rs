//! Shared helpers for the Kafka tests (`tests/kafka_*.rs`), which run the
//! real `touchstream` binary against a real broker.
//!
//! - The broker comes from `KAFKA_BOOTSTRAP`. The tests are `#[ignore]`d
//!   (a plain `cargo test` shows them as ignored); `scripts/test` starts a
//!   broker and runs them with `--include-ignored`. Run without a broker,
//!   one fails saying so.
//! - Every test uses its own topics and group ([`Scenario`]), so the tests
//!   can share one broker and run in parallel.
//! - Outputs are read with a plain assigned consumer ([`Collector`]),
//!   decoded from Confluent-framed Avro into `serde_json` values shaped
//!   like `touchstream replay`'s JSON lines, and compared with the replay
//!   of the same input ([`replay`], [`check_outputs`]).
//!
//! One file per concern; this file only declares them and re-exports their
//! items, so a test's `use kafka_support::*;` sees them all:
//!
//! | file | what it holds |
//! | --- | --- |
//! | `basics.rs` | the binary, the repo, time units, unique names, free ports, the wall clock |
//! | `broker.rs` | the broker address, client configs, topics and offsets (admin) |
//! | `produce.rs` | producing input records, JSON and Avro encodings, partitioners, `generate` |
//! | `collect.rs` | reading topics back (outputs, dead letters, changelog partitions) |
//! | `decode.rs` | output records decoded from framed Avro into replay-shaped JSON |
//! | `compare.rs` | decoded outputs against replay's events: envelope, events, order, copies |
//! | `replay.rs` | `touchstream replay` of one input or of one task's inputs |
//! | `python.rs` | `examples/consume.py`, the third-party consumer |
//! | `state.rs` | a restored changelog against the uninterrupted engine |
//! | `service.rs` | the service's config file and a running `touchstream run` |
//! | `scenario.rs` | one test's topics, group and scratch directory |
//! | `metrics.rs` | reading a `/metrics` scrape |
//! | `inputs.rs` | several input topics (SPEC 8); `use kafka_support::inputs::*;` |
#![allow(dead_code)]

mod basics;
mod broker;
mod collect;
mod compare;
mod decode;
pub mod inputs;
mod metrics;
mod produce;
mod python;
mod replay;
mod scenario;
mod service;
mod state;

// Every test binary includes all of this and uses only part of it.
#[allow(unused_imports)]
pub use self::{
    basics::*, broker::*, collect::*, compare::*, decode::*, metrics::*, produce::*, python::*,
    replay::*, scenario::*, service::*, state::*,
};
