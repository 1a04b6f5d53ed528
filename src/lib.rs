//! ossrelay: a relay for private access to Alibaba Cloud OSS intranet
//! endpoints and other S3-compatible storage.
//!
//! The library is the engine; the `ossrelay` binary is its CLI. The usual
//! flow is [`config::Config::load`] → [`server::Server::bind`] →
//! [`server::Server::serve`], or [`run`] for all three. See
//! docs/ARCHITECTURE.md for the layers.

// The four layers, top to bottom; data flows one way through them and no
// module imports a layer above its own (tests/it/layers.rs checks this).
pub mod connector;
pub mod listener;
pub mod pump;
pub mod service;

// The foundation every layer may use: settings, policies, wire formats,
// observation. None of these imports a layer.
pub mod acl;
pub mod config;
pub mod error;
pub mod observe;
pub mod pattern;
pub mod policy;
pub mod resolve;
pub mod sockopt;
pub mod tls;
pub mod wire;

// The application: the server that wires the layers together, and the
// tools around the relay.
pub mod admin;
#[cfg(feature = "store")]
pub mod check;
#[cfg(feature = "store")]
pub mod demo;
pub mod dns;
pub mod hosts;
pub mod notify;
#[cfg(feature = "store")]
pub mod s3client;
pub mod server;
pub mod stone;
#[cfg(feature = "store")]
pub mod store;

use std::future::Future;
use std::sync::Arc;

pub use error::Error;

/// Binds every relay in `config` with the system resolver and serves until
/// `shutdown` completes, then drains.
pub async fn run(config: config::Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    run_reloading(config, shutdown, None).await
}

/// [`run`], re-reading the config file on each `reload` request (SIGHUP).
pub async fn run_reloading(
    config: config::Config,
    shutdown: impl Future<Output = ()>,
    reload: Option<server::Reload>,
) -> Result<(), Error> {
    let resolver: Arc<dyn resolve::Resolve> = Arc::new(resolve::SystemResolver::new());
    let server = server::Server::bind(&config, resolver)?;
    server.serve_reloading(shutdown, reload).await;
    Ok(())
}
