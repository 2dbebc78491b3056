//! Single-flight across workers: identical callouts (same cluster, headers
//! and body, so the same key and service) made while one is under way wait
//! for that one. The core already coalesces the requests of one worker;
//! this joins the workers, which in the native build share one process. A
//! flight is known by a digest of the request, never by the key itself.
//! No lock is held across a call into Envoy: wakers are made before the
//! lock is taken and woken after it is released.

use crate::envoy::{CalloutReply, Wake};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

pub type CalloutDigest = [u8; 32];

/// The digest of a callout request.
pub fn callout_digest(cluster: &str, headers: &[(&str, &str)], body: &[u8]) -> CalloutDigest {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(cluster.as_bytes());
    for (name, value) in headers {
        part(name.as_bytes());
        part(value.as_bytes());
    }
    part(body);
    h.finalize().into()
}

/// A stream on another worker waiting for a flight's answer.
pub struct Joiner {
    reply: Mutex<Option<CalloutReply>>,
    waker: Box<dyn Wake>,
}

impl Joiner {
    /// The answer, once the flight landed (None before, or if it was taken).
    pub fn take_reply(&self) -> Option<CalloutReply> {
        self.reply.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What a stream's callout became.
pub enum Role {
    /// Make the callout, and `land` its answer.
    Lead,
    /// Wait to be woken with another stream's answer.
    Join(Arc<Joiner>),
}

type Flights = HashMap<CalloutDigest, Vec<Arc<Joiner>>>;

#[derive(Default)]
pub struct Callouts {
    flights: Mutex<Flights>,
}

impl Callouts {
    /// The one registry of this process.
    pub fn process() -> &'static Callouts {
        static CALLOUTS: OnceLock<Callouts> = OnceLock::new();
        CALLOUTS.get_or_init(Callouts::default)
    }

    fn lock(&self) -> MutexGuard<'_, Flights> {
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leads a new flight for `fp`, or joins the one under way (with a
    /// waker from `waker`; a stream that cannot get one leads its own).
    pub fn lead_or_join(
        &self,
        fp: CalloutDigest,
        waker: impl FnOnce() -> Option<Box<dyn Wake>>,
    ) -> Role {
        if let std::collections::hash_map::Entry::Vacant(e) = self.lock().entry(fp) {
            e.insert(Vec::new());
            return Role::Lead;
        }
        let Some(waker) = waker() else {
            return Role::Lead;
        };
        let joiner = Arc::new(Joiner {
            reply: Mutex::new(None),
            waker,
        });
        let mut flights = self.lock();
        match flights.get_mut(&fp) {
            Some(joiners) => {
                joiners.push(Arc::clone(&joiner));
                Role::Join(joiner)
            }
            // Landed meanwhile: lead a flight of its own.
            None => {
                flights.insert(fp, Vec::new());
                Role::Lead
            }
        }
    }

    /// The flight for `fp` is over: each joiner gets `reply` and is woken.
    /// The number woken.
    pub fn land(&self, fp: &CalloutDigest, reply: &CalloutReply) -> usize {
        let joiners = self.lock().remove(fp).unwrap_or_default();
        for j in &joiners {
            *j.reply.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply.clone());
            j.waker.wake();
        }
        joiners.len()
    }

    /// A joiner went away before the answer came.
    pub fn leave(&self, fp: &CalloutDigest, joiner: &Arc<Joiner>) {
        if let Some(joiners) = self.lock().get_mut(fp) {
            joiners.retain(|j| !Arc::ptr_eq(j, joiner));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::CountWakes as Count;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_leads_the_others_join_and_all_are_woken_once() {
        let c = Callouts::default();
        let woken = Arc::new(AtomicUsize::new(0));
        let fp = callout_digest("auth", &[(":path", "/v")], b"{}");
        let waker = || Some(Box::new(Count(Arc::clone(&woken))) as Box<dyn Wake>);
        assert!(matches!(c.lead_or_join(fp, waker), Role::Lead));
        let joined: Vec<_> = (0..3)
            .map(|_| match c.lead_or_join(fp, waker) {
                Role::Join(j) => j,
                Role::Lead => panic!("a second leader"),
            })
            .collect();
        c.leave(&fp, &joined[2]);
        let reply = CalloutReply {
            status: Some(200),
            body: b"ok".to_vec(),
        };
        assert_eq!(c.land(&fp, &reply), 2);
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        assert_eq!(joined[0].take_reply(), Some(reply));
        assert_eq!(joined[2].take_reply(), None, "it left before the answer");
        assert!(
            matches!(c.lead_or_join(fp, waker), Role::Lead),
            "landed: a new flight"
        );
    }

    #[test]
    fn different_requests_fly_apart_and_no_waker_means_lead() {
        let c = Callouts::default();
        let a = callout_digest("auth", &[], b"a");
        let b = callout_digest("auth", &[], b"b");
        assert_ne!(a, b);
        assert_ne!(
            callout_digest("a", &[("b", "")], b""),
            callout_digest("a", &[], b"b")
        );
        assert!(matches!(c.lead_or_join(a, || None), Role::Lead));
        assert!(matches!(c.lead_or_join(b, || None), Role::Lead));
        assert!(matches!(c.lead_or_join(a, || None), Role::Lead));
    }
}
