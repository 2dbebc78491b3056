//! The identity assertion: who the caller is, signed by the filter for
//! MLflow (`jws`), once per verdict and worker (`tokens`), so that a header
//! written by anyone but the gateway is worthless upstream.

pub mod jws;
pub mod tokens;
