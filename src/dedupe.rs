//! De-duplication: a repeated send (same `Idempotency-Key`, or same number, usage and code) within the
//! tenant's window is answered with the first send's answer and never reaches Tencent, including while the
//! first is still in flight (the repeat waits for it). Successful answers are kept for the window; a failed
//! first send is shared with the requests that waited on it, then forgotten so a later retry can try again.
//! In-flight coalescing always happens in this process; with the redis limiter backend, finished answers and
//! in-flight claims are also shared through Redis so a repeat reaching another replica is answered the
//! same way. Keys are keyed hashes (in Redis, an HMAC under the deployment's `limits_backend.key`, so a
//! reader of Redis can neither aim collisions nor recover a number or a code from a key).

use crate::clock::SharedClock;
use crate::error::GatewayError;
use crate::sms::Accepted;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub(crate) type Outcome = Result<Accepted, GatewayError>;

/// The value of a shared key while its first send is in flight.
pub(crate) const PENDING: &str = "pending";

/// The Redis key of a request, `smsgate:{tenant}:dedupe:<hmac>` (under the deployment's storage key); None
/// when it has neither an idempotency key nor a code.
pub(crate) fn shared_key(
    storage: &crate::policy::StorageKey,
    tenant: &crate::config::Tenant,
    idempotency_key: Option<&str>,
    e164: &str,
    usage: &str,
    code: Option<&str>,
) -> Option<String> {
    let parts: Vec<&str> = match (idempotency_key, code) {
        (Some(key), _) => vec!["dedupe", &tenant.name, "idempotency-key", key],
        (None, Some(code)) => vec!["dedupe", &tenant.name, "send", e164, usage, code],
        (None, None) => return None,
    };
    let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    let digest = storage.digest(&parts);
    Some(format!("smsgate:{{{}}}:dedupe:{}", tenant.name, hex::encode(&digest[..16])))
}

/// A shard sweeps finished entries whenever it has grown to this many since its last sweep (or twice its
/// live count then): amortized O(1) per insert.
const MIN_SWEEP: usize = 256;
/// Shards: a send holds one shard's lock for one lookup or insert, and a resize or sweep stalls only the
/// requests of that shard, for 1/64 of the time a single map would (a 5-minute window at thousands of sends
/// per second holds millions of entries).
const SHARDS: usize = 64;

enum Slot {
    Pending(watch::Receiver<Option<Outcome>>),
    /// Boxed: a finished entry is a pointer in the table, not the whole answer.
    Done {
        outcome: Box<Accepted>,
        until: Duration,
    },
}

/// The keys are already uniform hashes (keyed SipHash of the request), so the table needs no hashing of its own.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap = HashMap<u64, Slot, std::hash::BuildHasherDefault<KeyHasher>>;

struct Shard {
    map: KeyMap,
    sweep_at: usize,
}

impl Shard {
    fn sweep(&mut self, now: Duration) {
        self.map.retain(|_, slot| match slot {
            Slot::Pending(_) => true,
            Slot::Done { until, .. } => *until > now,
        });
        self.sweep_at = (self.map.len() * 2).max(MIN_SWEEP);
        if self.map.capacity() > 4 * self.map.len().max(MIN_SWEEP) {
            self.map.shrink_to_fit();
        }
    }
}

pub struct Dedupe {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: SharedClock,
}

/// What a request is to the de-duplicator.
pub(crate) enum Claim {
    /// The first: send, then complete the ticket.
    First(Ticket),
    /// A repeat of a finished send: its answer.
    Replay(Outcome),
    /// A repeat of a send in flight: wait for its answer.
    Wait(watch::Receiver<Option<Outcome>>),
}

/// What [`Dedupe::claim_admitted`] made of a request.
pub enum Admission<T> {
    /// A repeat of a finished send: its answer.
    Replay(Outcome),
    /// A repeat of a send in flight: wait for its answer.
    Wait(watch::Receiver<Option<Outcome>>),
    /// The first of its key, admitted.
    First(Ticket, T),
}

/// Held by the first request of a key until its answer is known.
pub struct Ticket {
    dedupe: Arc<Dedupe>,
    key: u64,
    window: Duration,
    sender: Option<watch::Sender<Option<Outcome>>>,
}

impl Dedupe {
    pub fn new(clock: SharedClock) -> Arc<Dedupe> {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { map: KeyMap::default(), sweep_at: MIN_SWEEP })).collect();
        Arc::new(Dedupe { shards, hasher: RandomState::new(), clock })
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Shard> {
        // Middle bits pick the shard: the table itself uses the low bits for the bucket and the top 7 bits as
        // its tag, which must stay uniform within a shard.
        self.shards[(key >> 32) as usize % SHARDS].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key of a request: its idempotency key when it has one, else its number, usage and code; None
    /// when it has neither (native `params` without a key are never de-duplicated).
    pub fn key(
        &self,
        tenant: &str,
        idempotency_key: Option<&str>,
        e164: &str,
        usage: &str,
        code: Option<&str>,
    ) -> Option<u64> {
        match (idempotency_key, code) {
            (Some(key), _) => Some(self.hasher.hash_one((tenant, "idempotency-key", key))),
            (None, Some(code)) => Some(self.hasher.hash_one((tenant, "send", e164, usage, code))),
            (None, None) => None,
        }
    }

    pub(crate) fn claim(self: &Arc<Self>, key: u64, window: Duration) -> Claim {
        match self.claim_admitted(key, window, || Ok::<(), std::convert::Infallible>(())) {
            Ok(Admission::Replay(outcome)) => Claim::Replay(outcome),
            Ok(Admission::Wait(first)) => Claim::Wait(first),
            Ok(Admission::First(ticket, ())) => Claim::First(ticket),
        }
    }

    /// [`Dedupe::claim`] for a request that `admit` must let through before it is the first of its key:
    /// a repeat is answered without calling `admit`, and a request it refuses leaves nothing behind (a
    /// denial costs no bookkeeping). `admit` runs under the key's lock, so a repeat arriving meanwhile on
    /// another thread still waits for this request's answer: it must not wait on anything.
    pub fn claim_admitted<T, E>(
        self: &Arc<Self>,
        key: u64,
        window: Duration,
        admit: impl FnOnce() -> Result<T, E>,
    ) -> Result<Admission<T>, E> {
        let now = self.clock.monotonic();
        let mut shard = self.shard(key);
        if shard.map.len() >= shard.sweep_at {
            shard.sweep(now);
        }
        match shard.map.get(&key) {
            Some(Slot::Done { outcome, until }) if *until > now => {
                return Ok(Admission::Replay(Ok((**outcome).clone())))
            }
            Some(Slot::Pending(receiver)) => return Ok(Admission::Wait(receiver.clone())),
            _ => {}
        }
        let admitted = admit()?;
        let (sender, receiver) = watch::channel(None);
        shard.map.insert(key, Slot::Pending(receiver));
        Ok(Admission::First(Ticket { dedupe: self.clone(), key, window, sender: Some(sender) }, admitted))
    }

    /// Drops finished entries whose window has passed, one shard at a time, yielding between shards (a
    /// background task calls this, so memory follows the window even without new sends).
    pub async fn sweep(&self) {
        for shard in self.shards.iter() {
            let now = self.clock.monotonic();
            shard.lock().unwrap_or_else(|p| p.into_inner()).sweep(now);
            tokio::task::yield_now().await;
        }
    }

    /// Entries held, finished or in flight.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ticket {
    /// Records the first send's answer and hands it to every request waiting on it.
    pub fn complete(mut self, outcome: &Outcome) {
        let until = self.dedupe.clock.monotonic() + self.window;
        {
            let mut shard = self.dedupe.shard(self.key);
            match outcome {
                Ok(accepted) => {
                    shard.map.insert(self.key, Slot::Done { outcome: Box::new(accepted.clone()), until });
                }
                Err(_) => {
                    shard.map.remove(&self.key);
                }
            }
        }
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(Some(outcome.clone()));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Not completed (the send task died): forget the key so the next request sends afresh.
        if self.sender.is_some() {
            self.dedupe.shard(self.key).map.remove(&self.key);
        }
    }
}

/// The answer of the send a repeat waited on.
pub(crate) async fn wait(mut receiver: watch::Receiver<Option<Outcome>>) -> Outcome {
    loop {
        if let Some(outcome) = receiver.borrow_and_update().clone() {
            return outcome;
        }
        if receiver.changed().await.is_err() {
            return Err(GatewayError::Internal("the duplicated send ended without an answer".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::sms::Delivery;

    fn accepted() -> Accepted {
        Accepted { delivery: Delivery::Sent, template_id: "1110".into(), receipt: None, provider: None }
    }

    #[tokio::test]
    async fn repeats_replay_or_wait_and_failures_are_forgotten() {
        let clock = ManualClock::new(0);
        let d = Dedupe::new(clock.clone());
        let key = d.key("acme", None, "+8613800138000", "SignIn", Some("123456")).unwrap();
        assert_ne!(Some(key), d.key("acme", None, "+8613800138000", "SignIn", Some("123457")));
        assert_ne!(Some(key), d.key("beta", None, "+8613800138000", "SignIn", Some("123456")));
        assert_eq!(d.key("acme", None, "+8613800138000", "SignIn", None), None);

        let Claim::First(ticket) = d.claim(key, Duration::from_secs(60)) else { panic!("first") };
        let Claim::Wait(waiting) = d.claim(key, Duration::from_secs(60)) else { panic!("in flight") };
        let waiter = tokio::spawn(wait(waiting));
        ticket.complete(&Ok(accepted()));
        assert!(waiter.await.unwrap().is_ok());
        assert!(matches!(d.claim(key, Duration::from_secs(60)), Claim::Replay(Ok(_))));
        clock.advance(Duration::from_secs(61));
        let Claim::First(ticket) = d.claim(key, Duration::from_secs(60)) else { panic!("expired") };
        ticket.complete(&Err(GatewayError::UpstreamTimeout));
        assert!(matches!(d.claim(key, Duration::from_secs(60)), Claim::First(_)), "errors are not kept");
    }

    #[tokio::test]
    async fn finished_entries_are_swept_after_their_window() {
        let clock = ManualClock::new(0);
        let d = Dedupe::new(clock.clone());
        for key in 0..10_000u64 {
            let key = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let Claim::First(ticket) = d.claim(key, Duration::from_secs(60)) else { panic!() };
            ticket.complete(&Ok(accepted()));
        }
        assert_eq!(d.len(), 10_000);
        clock.advance(Duration::from_secs(59));
        d.sweep().await;
        assert_eq!(d.len(), 10_000, "still inside the window");
        clock.advance(Duration::from_secs(2));
        d.sweep().await;
        assert!(d.is_empty());
    }

    #[tokio::test]
    async fn a_refused_admission_leaves_nothing_and_a_repeat_is_not_admitted_again() {
        let d = Dedupe::new(ManualClock::new(0));
        let window = Duration::from_secs(60);
        let refused = d.claim_admitted(9, window, || Err::<(), _>("denied"));
        assert!(matches!(refused, Err("denied")));
        assert!(d.is_empty(), "a denial leaves no entry");
        let Ok(Admission::First(ticket, 1)) = d.claim_admitted(9, window, || Ok::<_, ()>(1)) else { panic!() };
        let mut called = false;
        let repeat = d.claim_admitted(9, window, || {
            called = true;
            Ok::<_, ()>(2)
        });
        assert!(matches!(repeat, Ok(Admission::Wait(_))));
        ticket.complete(&Ok(accepted()));
        assert!(matches!(d.claim_admitted(9, window, || Ok::<_, ()>(3)), Ok(Admission::Replay(Ok(_)))));
        assert!(!called, "a repeat is never admitted");
    }

    #[tokio::test]
    async fn an_abandoned_ticket_releases_its_waiters_and_key() {
        let d = Dedupe::new(ManualClock::new(0));
        let Claim::First(ticket) = d.claim(7, Duration::from_secs(60)) else { panic!() };
        let Claim::Wait(waiting) = d.claim(7, Duration::from_secs(60)) else { panic!() };
        drop(ticket);
        assert_eq!(wait(waiting).await.unwrap_err().code(), "internal");
        assert!(d.is_empty());
    }
}
