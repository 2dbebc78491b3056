//! Single-flight across workers: identical callouts (same cluster, headers
//! and body, so the same key and service) made while one is under way wait
//! for that one. The core already coalesces the requests of one worker;
//! this joins the workers, which in the native build share one process. A
//! flight is known by a digest of the request, never by the key itself.
//! No lock is held across a call into Envoy: wakers are made before the
//! lock is taken and woken after it is released.

use crate::envoy::{CalloutReply, Wake};
use crate::sync::{Mutex, MutexGuard};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

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

/// A flight under way: the streams waiting for it, and how many lead it
/// (more than one when a stream that could not get a waker made its own
/// callout beside it).
#[derive(Default)]
struct Flight {
    joiners: Vec<Arc<Joiner>>,
    leaders: usize,
}

type Flights = HashMap<CalloutDigest, Flight>;

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
    /// waker from `waker`; a stream that cannot get one leads beside it).
    /// Every lead is landed once.
    pub fn lead_or_join(
        &self,
        fp: CalloutDigest,
        waker: impl FnOnce() -> Option<Box<dyn Wake>>,
    ) -> Role {
        if let std::collections::hash_map::Entry::Vacant(e) = self.lock().entry(fp) {
            e.insert(Flight {
                joiners: Vec::new(),
                leaders: 1,
            });
            return Role::Lead;
        }
        let joiner = waker().map(|waker| {
            Arc::new(Joiner {
                reply: Mutex::new(None),
                waker,
            })
        });
        let mut flights = self.lock();
        // Landed meanwhile: a new flight, led by this stream.
        let flight = flights.entry(fp).or_default();
        match joiner {
            Some(joiner) if flight.leaders > 0 => {
                flight.joiners.push(Arc::clone(&joiner));
                Role::Join(joiner)
            }
            _ => {
                flight.leaders += 1;
                Role::Lead
            }
        }
    }

    /// A lead of the flight for `fp` is over: the joiners get `reply` and
    /// are woken, unless it is no answer and another lead is still under
    /// way (they wait for that one). The number woken.
    pub fn land(&self, fp: &CalloutDigest, reply: &CalloutReply) -> usize {
        let joiners = {
            let mut flights = self.lock();
            let Some(flight) = flights.get_mut(fp) else {
                return 0;
            };
            flight.leaders = flight.leaders.saturating_sub(1);
            if flight.leaders == 0 {
                flights.remove(fp).map(|f| f.joiners).unwrap_or_default()
            } else if reply.status.is_some() {
                std::mem::take(&mut flight.joiners)
            } else {
                Vec::new()
            }
        };
        for j in &joiners {
            *j.reply.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply.clone());
            j.waker.wake();
        }
        joiners.len()
    }

    /// A joiner went away before the answer came.
    pub fn leave(&self, fp: &CalloutDigest, joiner: &Arc<Joiner>) {
        if let Some(flight) = self.lock().get_mut(fp) {
            flight.joiners.retain(|j| !Arc::ptr_eq(j, joiner));
        }
    }

    /// No flight under way and no joiner held.
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.lock().is_empty()
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
        assert!(c.is_idle(), "landed: nobody left waiting");
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

/// The protocol model-checked with loom (`scripts/loom.sh`): every
/// interleaving of two or three workers, with the locks as loom's.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Notify;
    use loom::thread;

    const FP: CalloutDigest = [1; 32];

    fn answer(n: u8) -> CalloutReply {
        CalloutReply {
            status: Some(200),
            body: vec![n],
        }
    }

    /// A stream's waker: counts its wakes, and lets the stream's worker
    /// wait for one (the model's `on_scheduled`). A wake never made is a
    /// deadlock loom reports.
    #[derive(Clone)]
    struct Waker(loom::sync::Arc<(AtomicUsize, Notify)>);

    impl Wake for Waker {
        fn wake(&self) {
            self.0 .0.fetch_add(1, Ordering::SeqCst);
            self.0 .1.notify();
        }
    }

    impl Waker {
        fn new() -> Self {
            Waker(loom::sync::Arc::new((AtomicUsize::new(0), Notify::new())))
        }
        fn make(&self) -> impl FnOnce() -> Option<Box<dyn Wake>> {
            let w = self.clone();
            move || Some(Box::new(w) as Box<dyn Wake>)
        }
        fn wakes(&self) -> usize {
            self.0 .0.load(Ordering::SeqCst)
        }
        /// Parks until the answer is there, as `on_scheduled` does (loom's
        /// `Notify` wakes spuriously too: it parks again). A wake-up lost
        /// leaves it parked for ever: loom reports the deadlock.
        fn answer_of(&self, joiner: &Joiner) -> CalloutReply {
            loop {
                self.0 .1.wait();
                if let Some(reply) = joiner.take_reply() {
                    assert_eq!(joiner.take_reply(), None, "an answer delivered twice");
                    return reply;
                }
            }
        }
    }

    /// A stream on another worker asks for `FP`: it waits for the flight's
    /// answer, or (landed meanwhile) leads and lands its own.
    fn worker(
        c: &Arc<Callouts>,
        w: &Waker,
        own: CalloutReply,
    ) -> thread::JoinHandle<Option<CalloutReply>> {
        let (c, w) = (Arc::clone(c), w.clone());
        thread::spawn(move || match c.lead_or_join(FP, w.make()) {
            Role::Join(j) => Some(w.answer_of(&j)),
            Role::Lead => {
                // Only a third worker can have joined it meanwhile.
                assert!(c.land(&FP, &own) <= 1);
                None
            }
        })
    }

    /// (a), (c): the leader lands `reply` (an answer, or none: its stream
    /// died or its callout was refused) while another worker joins.
    fn lead_join_land(reply: CalloutReply) {
        loom::model(move || {
            let c = Arc::new(Callouts::default());
            assert!(matches!(c.lead_or_join(FP, || None), Role::Lead));
            let w = Waker::new();
            let joiner = worker(&c, &w, answer(9));
            let landed = c.land(&FP, &reply);
            let got = joiner.join().unwrap();
            assert_eq!(got.is_some(), landed == 1);
            if let Some(got) = got {
                assert_eq!(got, reply);
            }
            assert_eq!(w.wakes(), landed, "woken once if it joined, else never");
            assert!(c.is_idle(), "a waiter left behind");
        });
    }

    #[test]
    fn a_joiner_gets_the_answer_once_and_is_woken_once() {
        lead_join_land(answer(1));
    }

    #[test]
    fn a_joiner_of_an_abandoned_flight_is_woken_with_no_answer() {
        lead_join_land(CalloutReply::default());
    }

    /// (b): a joiner whose stream goes away while the leader lands.
    #[test]
    fn a_joiner_that_leaves_is_woken_at_most_once_and_not_kept() {
        loom::model(|| {
            let c = Arc::new(Callouts::default());
            assert!(matches!(c.lead_or_join(FP, || None), Role::Lead));
            let w = Waker::new();
            let gone = {
                let (c, w) = (Arc::clone(&c), w.clone());
                thread::spawn(move || match c.lead_or_join(FP, w.make()) {
                    Role::Join(j) => {
                        c.leave(&FP, &j);
                        true
                    }
                    Role::Lead => {
                        c.land(&FP, &CalloutReply::default());
                        false
                    }
                })
            };
            let landed = c.land(&FP, &answer(1));
            let joined = gone.join().unwrap();
            assert!(landed <= usize::from(joined));
            // Landed before it left: one wake for a stream that is gone,
            // which Envoy's scheduler drops. Left first: none.
            assert_eq!(w.wakes(), landed);
            assert!(c.is_idle(), "a waiter left behind");
        });
    }

    /// (b) with three workers: one joiner waits, another leaves.
    #[test]
    fn one_joiner_leaving_does_not_cost_another_its_answer() {
        loom::model(|| {
            let c = Arc::new(Callouts::default());
            assert!(matches!(c.lead_or_join(FP, || None), Role::Lead));
            let (w1, w2) = (Waker::new(), Waker::new());
            let waits = worker(&c, &w1, answer(9));
            let gone = {
                let (c, w) = (Arc::clone(&c), w2.clone());
                thread::spawn(move || match c.lead_or_join(FP, w.make()) {
                    Role::Join(j) => c.leave(&FP, &j),
                    Role::Lead => {
                        c.land(&FP, &CalloutReply::default());
                    }
                })
            };
            let landed = c.land(&FP, &answer(1));
            gone.join().unwrap();
            let got = waits.join().unwrap();
            assert!(landed <= 2);
            assert_eq!(w1.wakes(), usize::from(got.is_some()));
            assert!(w2.wakes() <= 1);
            if let Some(got) = got {
                assert!(got == answer(1) || got == CalloutReply::default());
            }
            assert!(c.is_idle(), "a waiter left behind");
        });
    }

    /// (d): two flights landing at once, a joiner on one of them.
    #[test]
    fn flights_for_different_requests_do_not_cross() {
        loom::model(|| {
            let c = Arc::new(Callouts::default());
            let other: CalloutDigest = [2; 32];
            assert!(matches!(c.lead_or_join(FP, || None), Role::Lead));
            assert!(matches!(c.lead_or_join(other, || None), Role::Lead));
            let w = Waker::new();
            let joiner = worker(&c, &w, answer(9));
            let lands = {
                let c = Arc::clone(&c);
                thread::spawn(move || c.land(&other, &answer(2)))
            };
            let landed = c.land(&FP, &answer(1));
            assert_eq!(lands.join().unwrap(), 0, "nobody joined the other flight");
            let got = joiner.join().unwrap();
            assert_eq!(got.is_some(), landed == 1);
            if let Some(got) = got {
                assert_eq!(got, answer(1));
            }
            assert_eq!(w.wakes(), landed);
            assert!(c.is_idle(), "a waiter left behind");
        });
    }

    /// A stream that gets no waker leads a callout of its own beside the
    /// flight; when it gives up, the flight's joiners still get the
    /// flight's answer (before the fix: "no answer", a 503, whenever the
    /// second leader landed first).
    #[test]
    fn a_second_leader_giving_up_does_not_answer_the_flights_joiners() {
        loom::model(|| {
            let c = Arc::new(Callouts::default());
            assert!(matches!(c.lead_or_join(FP, || None), Role::Lead));
            let w = Waker::new();
            let Role::Join(j) = c.lead_or_join(FP, w.make()) else {
                panic!("the flight is under way");
            };
            let waits = {
                let w = w.clone();
                thread::spawn(move || w.answer_of(&j))
            };
            let second = {
                let c = Arc::clone(&c);
                thread::spawn(move || {
                    assert!(matches!(c.lead_or_join(FP, || None), Role::Lead));
                    c.land(&FP, &CalloutReply::default());
                })
            };
            c.land(&FP, &answer(1));
            second.join().unwrap();
            assert_eq!(
                waits.join().unwrap(),
                answer(1),
                "answered by another's abandon"
            );
            assert_eq!(w.wakes(), 1);
            assert!(c.is_idle(), "a waiter left behind");
        });
    }
}
