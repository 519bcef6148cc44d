//! The threads that run the hook calls that may be slow, so that a slow hook holds one of these threads,
//! never the runtime that answers `/healthz` and every other tenant. An async worker runs a call itself
//! only within a small slice of its budget (`inline.rs`); what comes here is every call that overran that
//! slice (made again from scratch with the whole budget), every call of a hook that overran lately, and
//! calls that found no ready state or their lane busy. Lua states are rebuilt here too. One pool serves the
//! process (threads: the available parallelism, at least 2). Each hook (a tenant's script) has a lane: at
//! most `share` of its calls run at once (half the threads, at least one), so one tenant can never hold
//! them all; its other calls wait in its lane, and lanes take turns (round robin) when a thread frees. A
//! lane holds at most `MAX_WAITING` calls, and a call that could not start within `MAX_WAIT` is refused
//! (`503 script_busy`) instead of waiting on.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Calls one hook may have waiting for a thread.
pub(crate) const MAX_WAITING: usize = 256;
/// The longest a call waits for a thread before it is refused.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(1);

/// One hook call handed to the pool.
pub(crate) trait Job: Send {
    /// Runs the call on a pool thread.
    fn run(self: Box<Self>);
    /// Answers the caller that the call could not start in time (the hook is busy).
    fn refuse(self: Box<Self>);
    /// The caller went away: nothing to run.
    fn abandoned(&self) -> bool;
}

struct Waiting {
    job: Box<dyn Job>,
    since: Instant,
}

#[derive(Default)]
struct LaneState {
    waiting: VecDeque<Waiting>,
    running: usize,
    /// In the pool's ready queue (or about to be put there).
    listed: bool,
}

/// The calls of one hook: those waiting and how many run.
#[derive(Default)]
pub(crate) struct Lane {
    state: Mutex<LaneState>,
}

/// Calls of a hook running and waiting, for tests and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub running: usize,
    pub waiting: usize,
}

struct Pool {
    ready: Mutex<VecDeque<Arc<Lane>>>,
    wake: Condvar,
    share: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here is left half-written by a panic (jobs run outside the locks).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Threads of the pool: the available parallelism, at least two (so that a hook's share leaves room). Read
/// once: finding it reads the cgroup's files, too slow for every call.
pub(super) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()).max(2))
}

/// Calls of one hook that may run at once.
pub(super) fn share() -> usize {
    (threads() / 2).max(1)
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool: &'static Pool =
            Box::leak(Box::new(Pool { ready: Mutex::new(VecDeque::new()), wake: Condvar::new(), share: share() }));
        for i in 0..threads() {
            std::thread::Builder::new()
                .name(format!("smsgate-hook-{i}"))
                .spawn(move || pool.work())
                .expect("cannot start a hook thread");
        }
        pool
    })
}

impl Pool {
    fn list(&self, lane: Arc<Lane>) {
        lock(&self.ready).push_back(lane);
        self.wake.notify_one();
    }

    fn work(&self) {
        loop {
            let lane = {
                let mut ready = lock(&self.ready);
                loop {
                    if let Some(lane) = ready.pop_front() {
                        break lane;
                    }
                    ready = self.wake.wait(ready).unwrap_or_else(|p| p.into_inner());
                }
            };
            let (next, relist) = {
                let mut st = lock(&lane.state);
                let next = st.waiting.pop_front();
                if next.is_some() {
                    st.running += 1;
                }
                // Another of its calls may start on another thread, within its share; it goes to the back
                // of the queue so that other lanes get their turn first.
                let relist = !st.waiting.is_empty() && st.running < self.share;
                st.listed = relist;
                (next, relist)
            };
            if relist {
                self.list(lane.clone());
            }
            let Some(Waiting { job, since }) = next else { continue };
            if job.abandoned() {
                drop(job);
            } else if since.elapsed() > MAX_WAIT {
                job.refuse();
            } else {
                job.run();
            }
            let relist = {
                let mut st = lock(&lane.state);
                st.running -= 1;
                let relist = !st.waiting.is_empty() && !st.listed && st.running < self.share;
                if relist {
                    st.listed = true;
                }
                relist
            };
            if relist {
                self.list(lane);
            }
        }
    }
}

impl Lane {
    /// Queues a call; `Err` gives it back when the lane is full or stalled (its oldest call has waited
    /// past `MAX_WAIT`): the hook is busy.
    pub(crate) fn submit(self: &Arc<Self>, job: Box<dyn Job>) -> Result<(), Box<dyn Job>> {
        let pool = pool();
        let list = {
            let mut st = lock(&self.state);
            let stalled = st.waiting.front().is_some_and(|w| w.since.elapsed() > MAX_WAIT);
            if st.waiting.len() >= MAX_WAITING || stalled {
                return Err(job);
            }
            st.waiting.push_back(Waiting { job, since: Instant::now() });
            let list = !st.listed && st.running < pool.share;
            if list {
                st.listed = true;
            }
            list
        };
        if list {
            pool.list(self.clone());
        }
        Ok(())
    }

    /// Whether a new call may skip the queue and run inline: none of this hook's calls waits for a
    /// thread, and fewer than its share run on them.
    pub(crate) fn quiet(&self) -> bool {
        let st = lock(&self.state);
        st.waiting.is_empty() && st.running < share()
    }

    pub(super) fn load(&self) -> Load {
        let st = lock(&self.state);
        Load { running: st.running, waiting: st.waiting.len() }
    }
}
