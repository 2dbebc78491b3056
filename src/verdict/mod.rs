//! Who a key belongs to: the key service's answer (`key_service`), kept in
//! the verdict cache (`cache`, with each worker's `key_digests`), asked for
//! once however many requests wait for it (`single_flight`), and asked for
//! again before it expires (`refresh`).

pub mod cache;
pub mod key_digests;
pub mod key_service;
pub mod refresh;
pub mod single_flight;
