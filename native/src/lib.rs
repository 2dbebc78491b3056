//! The Hokusai MLflow auth filter as an Envoy dynamic module: the same core
//! as the wasm build (`hokusai_mlflow_auth`), behind a second `Host`. Envoy
//! loads `libhokusai_mlflow_auth_native.so` by the module name
//! `hokusai_mlflow_auth_native`. `abi` is the only code that knows Envoy's
//! C ABI, and the only `unsafe`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(not(test))]
mod abi;
pub mod coalesce;
pub mod envoy;
pub mod grpc;
pub mod host;
pub mod main_thread;
pub mod module;
pub mod shared;
mod sync;
#[cfg(test)]
mod tests;
