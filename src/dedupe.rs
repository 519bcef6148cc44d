//! De-duplication: a repeated send (same `Idempotency-Key`, or same number, usage and code) within the
//! tenant's window is answered with the first send's answer and never reaches Tencent, including while the
//! first is still in flight (the repeat waits for it). Successful answers are kept for the window; a failed
//! first send is shared with the requests that waited on it, then forgotten so a later retry can try again.
//! In-flight coalescing always happens in this process; with the redis limiter backend, finished answers and
//! in-flight claims are also shared through Redis so a repeat reaching another replica is answered the
//! same way. Keys are keyed hashes (in Redis, an HMAC under the tenant's Tencent secret, so a reader of
//! Redis can neither aim collisions nor recover a code from a key).

use crate::clock::SharedClock;
use crate::error::GatewayError;
use crate::pipeline::Accepted;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub type Outcome = Result<Accepted, GatewayError>;

/// The value of a shared key while its first send is in flight.
pub const PENDING: &str = "pending";

/// The Redis key of a request, `smsgate:{tenant}:dedupe:<hmac>`; None when it has neither an idempotency
/// key nor a code.
pub fn shared_key(
    tenant: &crate::config::Tenant,
    idempotency_key: Option<&str>,
    e164: &str,
    usage: &str,
    code: Option<&str>,
) -> Option<String> {
    use hmac::{Hmac, Mac};
    let parts: Vec<&str> = match (idempotency_key, code) {
        (Some(key), _) => vec!["idempotency-key", key],
        (None, Some(code)) => vec!["send", e164, usage, code],
        (None, None) => return None,
    };
    let secret = tenant.tencent.credentials[0].secret_key.expose();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    for part in parts {
        mac.update(part.as_bytes());
        mac.update(&[0]);
    }
    let digest = mac.finalize().into_bytes();
    Some(format!("smsgate:{{{}}}:dedupe:{}", tenant.name, hex::encode(&digest[..16])))
}

const MIN_SWEEP: usize = 1024;

enum Slot {
    Pending(watch::Receiver<Option<Outcome>>),
    Done { outcome: Accepted, until: Duration },
}

struct Slots {
    map: HashMap<u64, Slot>,
    sweep_at: usize,
}

pub struct Dedupe {
    slots: Mutex<Slots>,
    hasher: RandomState,
    clock: SharedClock,
}

/// What a request is to the de-duplicator.
pub enum Claim {
    /// The first: send, then complete the ticket.
    First(Ticket),
    /// A repeat of a finished send: its answer.
    Replay(Outcome),
    /// A repeat of a send in flight: wait for its answer.
    Wait(watch::Receiver<Option<Outcome>>),
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
        Arc::new(Dedupe {
            slots: Mutex::new(Slots { map: HashMap::new(), sweep_at: MIN_SWEEP }),
            hasher: RandomState::new(),
            clock,
        })
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

    pub fn claim(self: &Arc<Self>, key: u64, window: Duration) -> Claim {
        let now = self.clock.monotonic();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.map.len() >= slots.sweep_at {
            slots.map.retain(|_, slot| match slot {
                Slot::Pending(_) => true,
                Slot::Done { until, .. } => *until > now,
            });
            slots.sweep_at = (slots.map.len() * 2).max(MIN_SWEEP);
        }
        match slots.map.get(&key) {
            Some(Slot::Done { outcome, until }) if *until > now => return Claim::Replay(Ok(outcome.clone())),
            Some(Slot::Pending(receiver)) => return Claim::Wait(receiver.clone()),
            _ => {}
        }
        let (sender, receiver) = watch::channel(None);
        slots.map.insert(key, Slot::Pending(receiver));
        Claim::First(Ticket { dedupe: self.clone(), key, window, sender: Some(sender) })
    }

    /// Entries held, finished or in flight.
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).map.len()
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
            let mut slots = self.dedupe.slots.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                Ok(accepted) => {
                    slots.map.insert(self.key, Slot::Done { outcome: accepted.clone(), until });
                }
                Err(_) => {
                    slots.map.remove(&self.key);
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
            self.dedupe.slots.lock().unwrap_or_else(|p| p.into_inner()).map.remove(&self.key);
        }
    }
}

/// The answer of the send a repeat waited on.
pub async fn wait(mut receiver: watch::Receiver<Option<Outcome>>) -> Outcome {
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
    use crate::pipeline::Delivery;

    fn accepted() -> Accepted {
        Accepted { delivery: Delivery::Sent, template_id: "1110".into(), receipt: None }
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
    async fn an_abandoned_ticket_releases_its_waiters_and_key() {
        let d = Dedupe::new(ManualClock::new(0));
        let Claim::First(ticket) = d.claim(7, Duration::from_secs(60)) else { panic!() };
        let Claim::Wait(waiting) = d.claim(7, Duration::from_secs(60)) else { panic!() };
        drop(ticket);
        assert_eq!(wait(waiting).await.unwrap_err().code(), "internal");
        assert!(d.is_empty());
    }
}
