//! On-the-wire formats: parsers and encoders over bytes, with no policy
//! and (but for the PROXY header read, which must consume exactly its own
//! bytes from a socket) no I/O. Every parser here faces untrusted peers
//! and has a fuzz target.

pub mod client_hello;
pub mod http_head;
pub mod oss_error;
pub mod proxy_protocol;
