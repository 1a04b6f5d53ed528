//! The repeaters: TCP ([`tcp`]) and UDP ([`udp`]), and the byte pump that
//! moves a TCP pair's data ([`copy`], zero-copy via [`splice`] on Linux).

pub mod copy;
pub mod dump;
pub mod health;
pub mod ident;
mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod rewrite;
mod script;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod stream;
pub mod tcp;
pub mod udp;
mod udp_batch;
mod wrapped;
