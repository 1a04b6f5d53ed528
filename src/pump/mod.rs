//! The pump: moving a pair's bytes once both ends are connected. Socket to
//! socket through a pooled buffer first and then zero-copy [`splice`] on
//! Linux ([`copy`]), or through any `AsyncRead`/`AsyncWrite` pair when TLS
//! or rewriting sits in the way ([`stream`]). Half-close is passed
//! through, idle time is bounded, and every byte is counted on a
//! [`copy::Meter`].
//!
//! The pump knows nothing about modes, policy or upstreams; it may use
//! only the foundation modules (`observe` for close reasons).

pub mod copy;
pub mod dump;
#[cfg(target_os = "linux")]
pub mod exact;
mod pool;
pub mod rewrite;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod stream;
