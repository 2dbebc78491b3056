//! The locks of the state the workers share (`coalesce`, `shared`): std's,
//! or loom's when the protocol is model-checked (`--cfg loom`,
//! `scripts/loom.sh`). A re-export: the normal build is std's, unchanged.
//! `Arc` stays std's (the joiner handles cross into `host`), and so does
//! `OnceLock`: the process-wide singletons are outside the model, which
//! runs on instances.

#[cfg(all(loom, test))]
pub use loom::sync::{Mutex, MutexGuard};
#[cfg(not(all(loom, test)))]
pub use std::sync::{Mutex, MutexGuard};
