//! Hokusai API-key authentication for the MLflow client, as a proxy-wasm
//! HTTP filter. Pure logic lives in host-free modules; `plugin` and
//! `wasm_host` are the only code that knows about proxy-wasm.

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

pub mod audit;
pub mod config;
pub mod credential;
pub mod denial;
pub mod endpoints;
pub mod filter;
pub mod flight;
pub mod host;
pub mod key_digests;
pub mod logging;
pub mod memo;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod refresh;
pub mod reply;
pub mod rewrite;
pub mod rls;
pub mod routes;
pub mod sections;
pub mod slots;
pub mod validation;
pub mod verdict_cache;
pub mod whoami;

#[cfg(test)]
mod filter_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(target_arch = "wasm32")]
mod plugin;
#[cfg(target_arch = "wasm32")]
mod wasm_host;
