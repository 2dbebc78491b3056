//! A read-modify-write of one shared-data slot with compare-and-swap, so
//! that every worker of the Envoy process changes the same count.

use crate::host::Host;

const ATTEMPTS: usize = 8;

/// Applies `step` to the slot's bytes until the write lands: `step` returns
/// the new bytes (None: nothing to write) and its result. Err carries the
/// last attempt's result, which was not stored (the slot stayed contended).
pub fn update<H: Host, R>(
    host: &H,
    key: &str,
    mut step: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, R),
) -> Result<R, R> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let (bytes, cas) = host.shared_get(key);
        let (new, result) = step(bytes.as_deref());
        match new {
            None => return Ok(result),
            Some(v) if host.shared_set(key, &v, cas) => return Ok(result),
            Some(_) => last = Some(result),
        }
    }
    match last {
        Some(result) => Err(result),
        // Unreachable with ATTEMPTS > 0; one more read decides.
        None => {
            let (bytes, _) = host.shared_get(key);
            Err(step(bytes.as_deref()).1)
        }
    }
}
