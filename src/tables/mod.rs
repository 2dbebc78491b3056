//! Bounded tables the layers above keep their state in: per-worker memos
//! (`memo`) and the slots of Envoy's shared data (`slots`).

pub mod memo;
pub mod slots;
