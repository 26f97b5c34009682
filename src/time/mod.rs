//! Event time, below the engine and the signals (SPEC 3 and 8): a task's
//! [`watermark`]s (one input and several), the [`merge`] of a task's
//! inputs, and the [`timers`] (a lazy queue with day buckets). Pure: no
//! I/O, no wall clock.

pub mod merge;
pub mod timers;
pub mod watermark;
