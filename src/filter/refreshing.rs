//! Refresh-ahead in the request flow (see `crate::verdict::refresh`): a cache hit in
//! the last part of its verdict's TTL queues one re-validation and goes on;
//! the host starts it outside the request and hands its answer back to
//! `Worker::complete_refresh`.

use super::{Stream, Worker};
use crate::host::Host;
use crate::observability::metrics::Counter;
use crate::types::Digest;
use crate::types::{Refresh, RefreshJob};
use crate::verdict::cache::Cached;
use crate::verdict::key_service::{self, Verdict};
use crate::verdict::refresh;
use std::rc::Rc;

/// How long past its timeout a job's answer is still awaited before the
/// key may be queued again.
const ANSWER_GRACE_MS: u64 = 1000;

impl Stream {
    /// Queues a re-validation of the key if its valid verdict is about to
    /// expire and none is under way (here or, as the shared slot says,
    /// done by another worker already).
    pub(super) fn refresh_if_due<H: Host>(
        &self,
        host: &H,
        key: &str,
        forwarded_for: Option<&[u8]>,
        (digest, cached, expires_at_ms): (Digest, &Cached, u64),
    ) {
        let worker = Rc::clone(&self.worker);
        let ahead_ms = worker.cfg.cache.refresh_ahead_ms;
        if !matches!(cached, Cached::Allowed(_))
            || !refresh::due(expires_at_ms, self.now_ms, ahead_ms)
        {
            return;
        }
        let auth = &worker.cfg.policy_at(self.policy).auth;
        let until_ms = self
            .now_ms
            .saturating_add(auth.timeout.as_millis() as u64 + ANSWER_GRACE_MS);
        let Ok(mut refreshing) = worker.refreshing.try_borrow_mut() else {
            return;
        };
        // The cheap check first: while a job is under way, no shared read.
        if !refreshing.begin(digest, expires_at_ms, self.now_ms, until_ms) {
            return;
        }
        if worker
            .cache
            .refreshed_elsewhere(host, &digest, expires_at_ms, self.now_ms)
        {
            refreshing.end(&digest);
            return;
        }
        let client_ip = key_service::client_ip(forwarded_for, host.peer_address().as_deref());
        let (headers, body) = key_service::request(auth, key, client_ip.as_deref());
        let job = RefreshJob {
            refresh: Refresh {
                digest,
                policy: self.policy,
            },
            cluster: auth.cluster.clone(),
            headers,
            body,
            timeout: auth.timeout,
        };
        if host.queue_refresh(job) {
            host.count(Counter::CacheRefresh);
        } else {
            refreshing.end(&digest);
        }
    }
}

impl Worker {
    /// A re-validation's answer (status None: none came): a valid or
    /// invalid verdict replaces the cached one; anything else leaves it to
    /// expire as it would have.
    pub fn complete_refresh<H: Host>(
        &self,
        host: &H,
        refresh: &Refresh,
        status: Option<u16>,
        body: &[u8],
    ) {
        if let Ok(mut r) = self.refreshing.try_borrow_mut() {
            r.end(&refresh.digest);
        }
        let verdict = key_service::verdict(status, body.len(), body);
        match verdict {
            Verdict::Allowed(_) | Verdict::Invalid => {
                self.cache
                    .store(host, &refresh.digest, &verdict, host.now_ms());
            }
            Verdict::Unavailable(_) | Verdict::RateLimited => {
                host.count(Counter::CacheRefreshFailed)
            }
        }
    }
}
