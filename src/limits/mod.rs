//! A key's hourly rate limit: counted in this Envoy (`local`), or by the
//! rate limit service for a whole fleet (`global`), spent from leases.

mod cas;
pub mod global;
pub mod lease;
pub mod local;
