//! Hokusai API-key authentication for the MLflow client: the filter's logic,
//! host-free, shipped twice: as a proxy-wasm HTTP filter (`wasm/`, compiled
//! for wasm32 only) and as an Envoy dynamic module (the `native/` crate).
//! The folders are layers, each using only those below it:
//!
//! - `types` (the shared vocabulary), `tables`, `observability`: the bottom;
//! - `host`: the one trait through which everything talks to Envoy;
//! - `config`: the checked configuration and its parsing;
//! - `request`: a request's own facts (its key, path, endpoint, scopes);
//! - `verdict`: who a key belongs to (key service, cache, single-flight,
//!   refresh-ahead); `limits`: the local and global rate limits;
//! - `outcome`: what the client is told (denials, whoami) and the audit line;
//! - `filter`: the request state machine that runs the steps in order.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo
    )
)]

mod assertion;
mod config;
mod filter;
mod host;
mod limits;
mod observability;
mod outcome;
mod request;
mod tables;
mod types;
mod verdict;

#[cfg(test)]
mod tests;
#[cfg(target_arch = "wasm32")]
mod wasm;

pub use config::Config;
pub use filter::{Flow, Stream, Worker};
pub use host::{Headers, Host};
pub use observability::logging::{install as install_logger, EnvoyLog};
pub use observability::metrics::{Counter, StatIds, StatKind};
pub use outcome::denial::Denial;
pub use types::{GrpcCall, Refresh, RefreshJob, Reply};
pub use verdict::refresh::RefreshQueue;
