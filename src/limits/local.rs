//! Per-key fixed-window rate limit (per `key_id`, per hour), counted in a
//! fixed table of shared-data slots so memory stays bounded, with a
//! compare-and-swap so that every worker of the Envoy process counts in the
//! same window.

use crate::host::Host;
use crate::tables::slots::SlotTable;
use crate::types::Window;
use std::hash::Hasher;

const SLOT_PREFIX: &str = "hokusai_auth.v1.rate.";

/// One counter table for every route; a key's count is per limit scope.
pub struct RateLimiter {
    slots: SlotTable,
}

impl RateLimiter {
    pub fn new(slots: u32) -> Self {
        Self {
            slots: SlotTable::new(SLOT_PREFIX, slots),
        }
    }

    /// Counts one request of `owner` (the key's `key_id`, else its digest)
    /// in `scope` against `limit` per hour and returns its window.
    pub fn charge<H: Host>(
        &self,
        host: &H,
        scope: &str,
        owner: &[u8],
        limit: u64,
        now_s: u64,
    ) -> Window {
        let owner = tag(scope, owner);
        let key = self.slots.key(owner);
        let counted = super::cas::update(host, &key, |bytes| step(bytes, owner, now_s, limit));
        counted.unwrap_or_else(|window| {
            // Under extreme contention, let the request through uncharged
            // rather than fail it: this is a quota, not the authentication.
            log::warn!("hokusai-auth: rate-limit slot contended; request not counted");
            window
        })
    }
}

pub const WINDOW_SECONDS: u64 = 3600;

/// 64-bit FNV-1a of scope and owner: picks the slot and tags its owner.
/// Collisions only make two keys share a count until one of them takes the
/// slot over.
pub(super) fn tag(scope: &str, owner: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(scope.as_bytes());
    h.write_u8(0xff);
    h.write(owner);
    h.finish()
}

pub fn window_end(now_s: u64) -> u64 {
    (now_s / WINDOW_SECONDS + 1) * WINDOW_SECONDS
}

/// Counts one request against `current` (the slot's bytes) and returns the
/// slot's new bytes (None when nothing changes) and the window.
fn step(current: Option<&[u8]>, owner: u64, now_s: u64, limit: u64) -> (Option<Vec<u8>>, Window) {
    let window = now_s / WINDOW_SECONDS;
    let reset_at = window_end(now_s);
    let used = current
        .and_then(decode)
        .filter(|(o, w, _)| *o == owner && *w == window)
        .map_or(0, |(_, _, n)| n);
    if used >= limit {
        let w = Window {
            limit,
            remaining: 0,
            reset_at,
            allowed: false,
        };
        return (None, w);
    }
    let used = used + 1;
    let w = Window {
        limit,
        remaining: limit - used,
        reset_at,
        allowed: true,
    };
    (Some(encode(owner, window, used)), w)
}

fn encode(owner: u64, window: u64, used: u64) -> Vec<u8> {
    [owner, window, used]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

fn decode(b: &[u8]) -> Option<(u64, u64, u64)> {
    if b.len() != 24 {
        return None;
    }
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    Some((word(0)?, word(1)?, word(2)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_limit_then_refuses() {
        let owner = tag("s", b"k_1");
        let now = 10 * WINDOW_SECONDS + 5;
        let mut slot: Option<Vec<u8>> = None;
        for i in 1..=3 {
            let (new, w) = step(slot.as_deref(), owner, now, 3);
            assert!(w.allowed);
            assert_eq!(w.remaining, 3 - i);
            assert_eq!(w.reset_at, 11 * WINDOW_SECONDS);
            slot = new;
        }
        let (new, w) = step(slot.as_deref(), owner, now, 3);
        assert!(!w.allowed && w.remaining == 0 && new.is_none());
        assert_eq!(w.retry_after(now), WINDOW_SECONDS - 5);
    }

    #[test]
    fn a_new_window_or_another_owner_starts_afresh() {
        let (slot, _) = step(None, tag("s", b"k_1"), 0, 1);
        let (_, w) = step(slot.as_deref(), tag("s", b"k_1"), 1, 1);
        assert!(!w.allowed);
        let (_, w) = step(slot.as_deref(), tag("s", b"k_1"), WINDOW_SECONDS, 1);
        assert!(w.allowed);
        let (_, w) = step(slot.as_deref(), tag("s", b"k_2"), 1, 1);
        assert!(w.allowed);
        let (_, w) = step(Some(b"junk"), tag("s", b"k_1"), 1, 1);
        assert!(w.allowed);
    }

    #[test]
    fn tags_differ_and_are_fnv1a() {
        assert_ne!(tag("s", b"k_1"), tag("s", b"k_2"));
        assert_ne!(tag("a", b"k_1"), tag("b", b"k_1"), "scopes count apart");
        assert_ne!(tag("ab", b"c"), tag("a", b"bc"));
    }
}
