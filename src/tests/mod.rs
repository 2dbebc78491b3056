//! Tests across modules: the request state machine against a fake host
//! (`filter`), and properties over generated input (`fuzz`).

mod filter;
mod fleet_simulation;
mod fuzz;
