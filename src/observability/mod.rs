//! What the filter tells the operator: its stats (`metrics`) and its log
//! lines at Envoy's levels (`logging`).

pub mod logging;
pub mod metrics;
