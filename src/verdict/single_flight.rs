//! Single-flight: requests that miss the cache on the same key while a
//! callout for it is under way wait for that callout instead of making
//! their own. Per worker (each Envoy worker runs its own VM instance). A
//! waiter is a stream's context id and whatever the caller needs to resume
//! it (`W`).

use crate::types::Digest;
use std::collections::HashMap;

pub struct Flights<W> {
    waiting: HashMap<Digest, Vec<(u32, W)>>,
}

impl<W> Default for Flights<W> {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
        }
    }
}

impl<W> Flights<W> {
    /// A callout for `d` has been dispatched by its leader.
    pub fn lead(&mut self, d: Digest) {
        self.waiting.entry(d).or_default();
    }

    /// Context `ctx` waits for the callout in flight for `d`; false (and
    /// `waiter` dropped) when there is none to wait for.
    pub fn join(&mut self, d: &Digest, ctx: u32, waiter: W) -> bool {
        match self.waiting.get_mut(d) {
            Some(w) => {
                w.push((ctx, waiter));
                true
            }
            None => false,
        }
    }

    /// The callout for `d` is over: the streams that waited for it.
    pub fn land(&mut self, d: &Digest) -> Vec<(u32, W)> {
        self.waiting.remove(d).unwrap_or_default()
    }

    /// A waiting context went away before the answer came.
    pub fn leave(&mut self, d: &Digest, ctx: u32) {
        if let Some(w) = self.waiting.get_mut(d) {
            w.retain(|(c, _)| *c != ctx);
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_land_together_once() {
        let mut f = Flights::default();
        let d = [1; 32];
        assert!(!f.join(&d, 5, ()), "nothing to wait for");
        f.lead(d);
        assert!(f.join(&d, 2, ()) && f.join(&d, 3, ()) && f.join(&d, 4, ()));
        f.leave(&d, 3);
        let landed: Vec<u32> = f.land(&d).into_iter().map(|(c, ())| c).collect();
        assert_eq!(landed, vec![2, 4]);
        assert!(f.land(&d).is_empty());
        assert!(f.is_empty());
    }
}
