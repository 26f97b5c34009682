//! touchstream: omnichannel customer touchpoints in, live per-customer
//! signals out.
//!
//! The crate is a pure event-time [`engine`] with its [`signals`] over
//! [`time`] (watermarks, the merge of inputs, timers), and the
//! edges around it: [`codec`]s, [`validate`], the `replay`, `generate` and
//! `fit-churn` commands (in [`cli`]), and the Kafka service.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bgnbd;
pub mod cli;
pub mod clv;
pub mod codec;
pub mod config;
pub mod engine;
pub mod generate;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod signals;
pub mod time;
pub mod validate;
