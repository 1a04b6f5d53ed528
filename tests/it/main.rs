//! Integration tests: one binary, shared helpers in `helpers`. Everything
//! binds 127.0.0.1:0 (or 127.0.0.x:0) and waits on readiness, never on sleep.

mod admin;
#[cfg(feature = "store")]
mod check;
mod cli;
mod dns;
mod gateway;
mod helpers;
mod layers;
mod logging;
mod ops;
mod pki;
mod policy;
mod pool;
mod proxy_protocol;
mod reload;
#[cfg(feature = "sftp")]
mod sftp;
mod stone_diff;
#[cfg(feature = "store")]
mod store;
#[cfg(feature = "store")]
mod system;
mod tcp;
mod tls;
mod udp;
