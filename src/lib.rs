//! ossrelay: a relay for private access to Alibaba Cloud OSS intranet
//! endpoints and other S3-compatible storage.
//!
//! The library is the engine; the `ossrelay` binary is its CLI. The usual
//! flow is [`config::Config::load`] → [`server::Server::bind`] →
//! [`server::Server::serve`], or [`run`] for all three.

pub mod acl;
#[cfg(feature = "store")]
pub mod check;
pub mod config;
#[cfg(feature = "store")]
pub mod demo;
pub mod dns;
pub mod error;
pub mod gateway;
pub mod hosts;
pub mod observe;
pub mod pattern;
pub mod relay;
pub mod resolve;
#[cfg(feature = "store")]
pub mod s3client;
pub mod server;
pub mod stone;
#[cfg(feature = "store")]
pub mod store;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

pub use error::Error;

/// Binds every relay in `config` with the system resolver and serves until
/// `shutdown` completes, then drains.
pub async fn run(config: config::Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let resolver: Arc<dyn resolve::Resolve> = Arc::new(resolve::SystemResolver::new());
    let server = server::Server::bind(&config, resolver)?;
    server.serve(shutdown).await;
    Ok(())
}
