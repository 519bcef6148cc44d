//! Per-tenant lanes for background work (outgoing webhooks, ReportConversion): each tenant has its own
//! bounded queue (in jobs and in bytes) and its own workers, so a tenant whose receiver hangs or whose queue
//! is full delays and drops only its own work. A lane's workers are spawned when work arrives and end when
//! its queue is empty; an idle lane holds nothing. Never on the request path: pushing never waits.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

/// One tenant's share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Share {
    /// Jobs waiting at most.
    pub(crate) jobs: usize,
    /// Bytes of waiting jobs at most (as their producer counts them).
    pub bytes: usize,
    /// Jobs in progress at once.
    pub workers: usize,
}

type Work<J> = Arc<dyn Fn(J) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

struct Lane<J> {
    queue: VecDeque<(J, usize)>,
    bytes: usize,
    workers: usize,
}

impl<J> Default for Lane<J> {
    fn default() -> Self {
        Lane { queue: VecDeque::new(), bytes: 0, workers: 0 }
    }
}

struct Inner<J> {
    share: Share,
    lanes: Mutex<HashMap<Arc<str>, Lane<J>>>,
    /// Set by `start`: the runtime workers run on and what they do with a job.
    work: OnceLock<(tokio::runtime::Handle, Work<J>)>,
}

/// Lanes of jobs of type `J`, one per tenant.
pub(crate) struct Lanes<J> {
    inner: Arc<Inner<J>>,
}

impl<J: Send + 'static> Lanes<J> {
    pub(crate) fn new(share: Share) -> Lanes<J> {
        let share = Share { jobs: share.jobs.max(1), bytes: share.bytes.max(1), workers: share.workers.max(1) };
        Lanes { inner: Arc::new(Inner { share, lanes: Mutex::default(), work: OnceLock::new() }) }
    }

    /// Queues `job` (`bytes` long) in `tenant`'s lane; false when that lane is full (the job is dropped).
    pub(crate) fn push(&self, tenant: &Arc<str>, job: J, bytes: usize) -> bool {
        let share = self.inner.share;
        if bytes > share.bytes {
            return false;
        }
        let mut lanes = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let lane = lanes.entry(tenant.clone()).or_default();
        if lane.queue.len() >= share.jobs || lane.bytes + bytes > share.bytes {
            return false;
        }
        lane.queue.push_back((job, bytes));
        lane.bytes += bytes;
        let spawn = self.inner.work.get().is_some() && lane.workers < share.workers;
        if spawn {
            lane.workers += 1;
        }
        drop(lanes);
        if spawn {
            spawn_worker(&self.inner, tenant.clone());
        }
        true
    }

    /// Starts serving the lanes on the current runtime with `work` (once; later calls do nothing). Jobs
    /// queued before are served now.
    pub(crate) fn start<F, Fut>(&self, work: F)
    where
        F: Fn(J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let work: Work<J> = Arc::new(move |job| Box::pin(work(job)));
        if self.inner.work.set((tokio::runtime::Handle::current(), work)).is_err() {
            return;
        }
        let mut lanes = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let mut starts = Vec::new();
        for (tenant, lane) in lanes.iter_mut() {
            while lane.workers < self.inner.share.workers.min(lane.queue.len()) {
                lane.workers += 1;
                starts.push(tenant.clone());
            }
        }
        drop(lanes);
        for tenant in starts {
            spawn_worker(&self.inner, tenant);
        }
    }

    /// Jobs waiting in `tenant`'s lane (tests, metrics).
    #[cfg(test)]
    pub(crate) fn waiting(&self, tenant: &str) -> usize {
        let lanes = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.get(tenant).map_or(0, |l| l.queue.len())
    }
}

/// One worker of `tenant`'s lane: takes its jobs one at a time until the lane is empty, then ends (and an
/// empty lane without workers is removed).
fn spawn_worker<J: Send + 'static>(inner: &Arc<Inner<J>>, tenant: Arc<str>) {
    let Some((handle, work)) = inner.work.get() else { return };
    let (inner, work) = (inner.clone(), work.clone());
    handle.spawn(async move {
        loop {
            let job = {
                let mut lanes = inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
                let Some(lane) = lanes.get_mut(&tenant) else { return };
                match lane.queue.pop_front() {
                    Some((job, bytes)) => {
                        lane.bytes -= bytes;
                        job
                    }
                    None => {
                        lane.workers -= 1;
                        if lane.workers == 0 {
                            lanes.remove(&tenant);
                        }
                        return;
                    }
                }
            };
            work(job).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;

    /// A tenant whose jobs never finish holds its own workers only: another tenant's jobs run at once, and a
    /// full lane refuses that tenant's jobs only.
    #[tokio::test]
    async fn a_stuck_tenant_holds_and_fills_only_its_own_lane() {
        let lanes = Lanes::new(Share { jobs: 3, bytes: 1_000, workers: 2 });
        let done = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(Notify::new());
        let (d, f) = (done.clone(), finished.clone());
        lanes.start(move |job: (&'static str, usize)| {
            let (d, f) = (d.clone(), f.clone());
            async move {
                if job.0 == "stuck" {
                    std::future::pending::<()>().await;
                }
                d.fetch_add(job.1, Ordering::SeqCst);
                f.notify_one();
            }
        });
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        for _ in 0..2 {
            assert!(lanes.push(&a, ("stuck", 0), 10));
        }
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        for _ in 0..3 {
            assert!(lanes.push(&a, ("stuck", 0), 10));
        }
        // Two workers hold two jobs; three wait; the sixth is refused.
        assert!(!lanes.push(&a, ("stuck", 0), 10), "a's lane is full");
        assert_eq!(lanes.waiting("a"), 3);
        assert!(lanes.push(&b, ("ok", 1), 10), "b's lane is its own");
        finished.notified().await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
        // Bytes bound a lane too.
        assert!(!lanes.push(&b, ("ok", 1), 1_001));
    }
}
