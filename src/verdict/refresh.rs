//! Refresh-ahead: a valid verdict used in the last part of its TTL starts
//! one re-validation that belongs to no request, and the request goes on
//! with the verdict it has. The answer replaces the cached verdict (a key
//! revoked meanwhile stops passing as soon as it lands, and at the latest
//! when the old verdict expires); a failed re-validation changes nothing.
//! A steady stream of one key then never waits for a callout after its
//! first. Each host runs the jobs outside any request: the wasm build from
//! its root context, the native build on Envoy's main thread.

use crate::types::{Digest, Refresh, RefreshJob};
use std::collections::HashMap;
use std::hash::Hash;

/// Whether a verdict expiring at `expires_at_ms` is in its refresh window.
pub fn due(expires_at_ms: u64, now_ms: u64, ahead_ms: u64) -> bool {
    ahead_ms > 0 && expires_at_ms.saturating_sub(now_ms) <= ahead_ms
}

/// The keys a worker has asked to re-validate, each until its job's answer
/// is due (then it may ask again) or a newer verdict is in the cache (the
/// answer may land in another worker's cache, as in the native build): one
/// job per key and verdict at a time. Bounded.
pub struct Refreshing {
    /// Key → (ask again after, the expiry of the verdict it was asked for).
    until_ms: HashMap<Digest, (u64, u64)>,
    capacity: usize,
}

impl Refreshing {
    pub fn new(capacity: usize) -> Self {
        Refreshing {
            until_ms: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// True if `d`, whose verdict expires at `expires_at_ms`, may start a
    /// job now (and notes it until `until_ms`).
    pub fn begin(&mut self, d: Digest, expires_at_ms: u64, now_ms: u64, until_ms: u64) -> bool {
        let asked = |&(until, expiry): &(u64, u64)| now_ms < until && expiry == expires_at_ms;
        if self.until_ms.get(&d).is_some_and(asked) {
            return false;
        }
        if self.until_ms.len() >= self.capacity {
            self.until_ms.retain(|_, (until, _)| now_ms < *until);
        }
        if self.until_ms.len() >= self.capacity && !self.until_ms.contains_key(&d) {
            return false;
        }
        self.until_ms.insert(d, (until_ms, expires_at_ms));
        true
    }

    /// The job for `d` was answered (or never started).
    pub fn end(&mut self, d: &Digest) {
        self.until_ms.remove(d);
    }
}

/// At most this many re-validations wait for the host to start them.
const MAX_QUEUED_JOBS: usize = 1024;

/// The host's side of refresh-ahead: jobs requests queued, waiting to be
/// started outside any request, and those under way by the id of their
/// callout (`I`: the wasm build's token, the native build's callout id), so
/// that an answer finds its key. Each host keeps one where its jobs run (a
/// VM's root context; Envoy's main thread) behind its own cell or lock.
pub struct RefreshQueue<I> {
    jobs: Vec<RefreshJob>,
    in_flight: HashMap<I, Refresh>,
}

impl<I> Default for RefreshQueue<I> {
    fn default() -> Self {
        RefreshQueue {
            jobs: Vec::new(),
            in_flight: HashMap::new(),
        }
    }
}

impl<I: Eq + Hash> RefreshQueue<I> {
    /// False when too many wait already: the request goes on, unrefreshed.
    pub fn queue(&mut self, job: RefreshJob) -> bool {
        if self.jobs.len() >= MAX_QUEUED_JOBS {
            return false;
        }
        self.jobs.push(job);
        true
    }

    pub fn take_jobs(&mut self) -> Vec<RefreshJob> {
        std::mem::take(&mut self.jobs)
    }

    /// A job was started as the callout `id`.
    pub fn started(&mut self, id: I, refresh: Refresh) {
        self.in_flight.insert(id, refresh);
    }

    /// The re-validation the callout `id` answers, if it is one.
    pub fn answered(&mut self, id: &I) -> Option<Refresh> {
        self.in_flight.remove(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_only_in_the_last_part_of_the_ttl() {
        assert!(!due(10_000, 1_000, 2_000));
        assert!(due(10_000, 8_000, 2_000));
        assert!(due(10_000, 9_999, 2_000));
        assert!(!due(10_000, 9_999, 0), "0: off");
    }

    #[test]
    fn one_job_per_key_until_answered_or_overdue_and_bounded() {
        let mut r = Refreshing::new(2);
        assert!(r.begin([1; 32], 9, 0, 100));
        assert!(!r.begin([1; 32], 9, 50, 150), "one at a time");
        assert!(r.begin([1; 32], 9, 100, 200), "overdue: may ask again");
        r.end(&[1; 32]);
        assert!(r.begin([1; 32], 9, 101, 200));
        assert!(
            r.begin([1; 32], 19, 102, 200),
            "a newer verdict: answered elsewhere"
        );
        assert!(r.begin([2; 32], 9, 101, 200));
        assert!(!r.begin([3; 32], 9, 101, 200), "full of live jobs");
        assert!(r.begin([3; 32], 9, 300, 400), "expired ones make room");
    }

    #[test]
    fn the_queue_is_bounded_and_answers_find_their_job() {
        let job = |n: u8| RefreshJob {
            refresh: Refresh {
                digest: [n; 32],
                policy: 0,
            },
            cluster: "auth".into(),
            headers: vec![],
            body: vec![],
            timeout: std::time::Duration::from_secs(1),
        };
        let mut q = RefreshQueue::<u32>::default();
        for n in 0..MAX_QUEUED_JOBS {
            assert!(q.queue(job(n as u8)));
        }
        assert!(!q.queue(job(0)), "full");
        let jobs = q.take_jobs();
        assert_eq!(jobs.len(), MAX_QUEUED_JOBS);
        assert!(q.take_jobs().is_empty() && q.queue(job(1)));
        q.started(7, jobs[1].refresh);
        assert_eq!(q.answered(&7), Some(jobs[1].refresh));
        assert_eq!(q.answered(&7), None);
    }
}
