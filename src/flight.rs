//! Single-flight: requests that miss the cache on the same key while a
//! callout for it is under way wait for that callout instead of making
//! their own. Per worker (each Envoy worker runs its own VM instance).

use crate::cache::Digest;
use std::collections::HashMap;

#[derive(Default)]
pub struct Flights {
    waiting: HashMap<Digest, Vec<u32>>,
}

impl Flights {
    pub fn in_flight(&self, d: &Digest) -> bool {
        self.waiting.contains_key(d)
    }

    /// A callout for `d` has been dispatched by its leader.
    pub fn start(&mut self, d: Digest) {
        self.waiting.entry(d).or_default();
    }

    /// Context `ctx` waits for the callout in flight for `d`.
    pub fn wait(&mut self, d: &Digest, ctx: u32) -> bool {
        match self.waiting.get_mut(d) {
            Some(w) => {
                w.push(ctx);
                true
            }
            None => false,
        }
    }

    /// The callout for `d` is over: the contexts that waited for it.
    pub fn land(&mut self, d: &Digest) -> Vec<u32> {
        self.waiting.remove(d).unwrap_or_default()
    }

    /// A waiting context went away before the answer came.
    pub fn leave(&mut self, d: &Digest, ctx: u32) {
        if let Some(w) = self.waiting.get_mut(d) {
            w.retain(|c| *c != ctx);
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
        assert!(!f.in_flight(&d));
        assert!(!f.wait(&d, 5), "nothing to wait for");
        f.start(d);
        assert!(f.in_flight(&d));
        assert!(f.wait(&d, 2) && f.wait(&d, 3) && f.wait(&d, 4));
        f.leave(&d, 3);
        assert_eq!(f.land(&d), vec![2, 4]);
        assert!(f.land(&d).is_empty());
        assert!(f.is_empty());
    }
}
