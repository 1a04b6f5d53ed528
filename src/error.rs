//! The library's error type, classified so the CLI can pick an exit code:
//! configuration problems are the user's to fix (2), everything else is a
//! runtime failure (1).

use std::io;
use std::net::SocketAddr;

use crate::config::ConfigError;

/// Errors from loading a config or starting relays.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address could not be bound.
    #[error("relay {relay:?}: cannot listen on {addr}: {reason}")]
    Bind {
        /// Relay name.
        relay: String,
        /// The address that failed.
        addr: SocketAddr,
        /// A human explanation of the OS error.
        reason: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Logging could not be set up (e.g. the log file cannot be opened).
    #[error("{0}")]
    Log(#[source] io::Error),
}

impl Error {
    /// The process exit code for this error: 2 for bad config, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::Bind { .. } | Error::Log(_) => 1,
        }
    }
}
