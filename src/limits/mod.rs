//! A key's hourly rate limit: counted in this Envoy (`local`), or by the
//! rate limit service for a whole fleet (`global`).

pub mod global;
pub mod local;
