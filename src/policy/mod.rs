//! Policies: what may pass through a relay, as data with pure decision
//! functions. Services ask them; they do no I/O and know no layer.
//! Config validation builds them.

pub mod action;
pub mod bucket;
pub mod dest;
pub mod statement;
