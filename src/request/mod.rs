//! A request's own facts, read before any verdict: where its key is
//! (`credential`), its path and the MLflow path it maps to (`rewrite`), the
//! MLflow endpoint it calls (`endpoints`) and the scopes that endpoint needs
//! (`scopes`).

pub mod credential;
pub mod endpoints;
pub mod rewrite;
pub mod scopes;
