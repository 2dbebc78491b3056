//! Per-key fixed-window rate limit (per `key_id`, per hour), counted in a
//! fixed table of shared-data slots so memory stays bounded.

/// The state of a key's window after this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// Unix seconds at which the window ends.
    pub reset_at: u64,
    pub allowed: bool,
}

impl Window {
    pub fn retry_after(&self, now_s: u64) -> u64 {
        self.reset_at.saturating_sub(now_s).max(1)
    }
}

pub const WINDOW_SECONDS: u64 = 3600;

/// 64-bit FNV-1a: picks the slot and tags its owner. Collisions only make
/// two keys share a count until one of them takes the slot over.
pub fn tag(id: &[u8]) -> u64 {
    id.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Counts one request against `current` (the slot's bytes) and returns the
/// slot's new bytes (None when nothing changes) and the window.
pub fn step(
    current: Option<&[u8]>,
    owner: u64,
    now_s: u64,
    limit: u64,
) -> (Option<Vec<u8>>, Window) {
    let window = now_s / WINDOW_SECONDS;
    let reset_at = (window + 1) * WINDOW_SECONDS;
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
        let owner = tag(b"k_1");
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
        let (slot, _) = step(None, tag(b"k_1"), 0, 1);
        let (_, w) = step(slot.as_deref(), tag(b"k_1"), 1, 1);
        assert!(!w.allowed);
        let (_, w) = step(slot.as_deref(), tag(b"k_1"), WINDOW_SECONDS, 1);
        assert!(w.allowed);
        let (_, w) = step(slot.as_deref(), tag(b"k_2"), 1, 1);
        assert!(w.allowed);
        let (_, w) = step(Some(b"junk"), tag(b"k_1"), 1, 1);
        assert!(w.allowed);
    }

    #[test]
    fn tags_differ() {
        assert_ne!(tag(b"k_1"), tag(b"k_2"));
    }
}
