//! Observability: the per-connection access record and the log line formats.

pub mod access;
pub mod batch;
pub mod logfmt;
pub mod metrics;
pub mod stats;
pub mod time;
