//! Refresh-ahead in the native build: workers queue re-validations here and
//! wake Envoy's main thread (the filter config's scheduler), which starts
//! them as callouts of the filter config, so that they outlive the requests
//! that asked for them; their answers are judged there and stored in the
//! process-wide cache that every worker reads.

use crate::envoy::Wake;
use hokusai_mlflow_auth::{Refresh, RefreshJob, RefreshQueue};
use std::sync::{Mutex, MutexGuard, OnceLock};

#[derive(Default)]
pub struct MainThread {
    /// Queued by any worker; under way by the config callout's id.
    refreshes: Mutex<RefreshQueue<u64>>,
    /// The config's scheduler (set once, on the main thread).
    waker: OnceLock<Box<dyn Wake>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MainThread {
    pub fn set_waker(&self, waker: Box<dyn Wake>) {
        let _ = self.waker.set(waker);
    }

    /// From any worker: false if there is no main thread to run it, or too
    /// many wait already.
    pub fn queue(&self, job: RefreshJob) -> bool {
        let Some(waker) = self.waker.get() else {
            return false;
        };
        if !lock(&self.refreshes).queue(job) {
            return false;
        }
        waker.wake();
        true
    }

    pub fn take_jobs(&self) -> Vec<RefreshJob> {
        lock(&self.refreshes).take_jobs()
    }

    pub fn started(&self, id: u64, refresh: Refresh) {
        lock(&self.refreshes).started(id, refresh);
    }

    pub fn answered(&self, id: u64) -> Option<Refresh> {
        lock(&self.refreshes).answered(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::CountWakes as Count;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    fn job(n: u8) -> RefreshJob {
        RefreshJob {
            refresh: Refresh {
                digest: [n; 32],
                policy: 0,
            },
            cluster: "auth".into(),
            headers: vec![],
            body: vec![],
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn jobs_wake_the_main_thread_and_answers_find_their_key() {
        let m = MainThread::default();
        assert!(!m.queue(job(1)), "no main thread yet");
        let woken = Arc::new(AtomicUsize::new(0));
        m.set_waker(Box::new(Count(Arc::clone(&woken))));
        assert!(m.queue(job(1)) && m.queue(job(2)));
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        let jobs = m.take_jobs();
        assert_eq!(jobs.len(), 2);
        assert!(m.take_jobs().is_empty());
        m.started(7, jobs[1].refresh);
        assert_eq!(m.answered(7), Some(jobs[1].refresh));
        assert_eq!(m.answered(7), None);
    }
}
