//! The plugin configuration: its checked model (`model`), parsed from the
//! JSON Envoy hands over (`parse`, with each section's raw form in `raw`),
//! and the rules that select a policy per route (`routes`).

mod field_path;
mod model;
mod parse;
mod raw;
pub mod routes;

pub use model::*;
