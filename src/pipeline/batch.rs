//! The pipeline for many numbers at once (the Tencent-compatible API's `SendSms`): each number goes through
//! the stages that consume nothing, the test numbers and de-duplication, then is admitted (spend caps,
//! limits) on its own; the admitted numbers go out in as few SendSms calls as their messages allow (one per
//! template, sign name, parameters, region and kind of number: Tencent refuses mainland and international
//! numbers in one call), and each number is settled on its own entry of Tencent's answer. The same phases as a
//! single send (`admit`, `settle`); from the admit phase on the batch runs in its own task, so a caller that
//! hangs up cancels neither the sends nor their accounting.

use super::{Admitted, Checked, Claimed, HandedOver, Services, Trail};
use crate::config::Tenant;
use crate::dedupe::{self, Outcome, Ticket};
use crate::error::GatewayError;
use crate::feedback::Memo;
use crate::phone::Masked;
use crate::providers::tencent::client::{Call, Entry};
use crate::providers::{Dispatched, Unconfirmed};
use crate::runtime::LiveTenant;
use crate::sms::{Accepted, CallExtras, Delivery, ProviderId, Via};
use crate::sms::{CallerMessage, SendRequest};
use std::sync::Arc;
use std::time::Instant;

/// One number's result: the gateway's outcome and, when Tencent judged the number in this request, its entry
/// of `SendStatusSet` as Tencent wrote it.
#[derive(Debug)]
pub(crate) struct NumberResult {
    pub outcome: Outcome,
    pub entry: Option<Entry>,
}

impl From<Outcome> for NumberResult {
    fn from(outcome: Outcome) -> Self {
        NumberResult { outcome, entry: None }
    }
}

/// A number that goes on to the consuming stages, with its de-duplication claims.
struct First {
    index: usize,
    checked: Checked,
    ticket: Option<Ticket>,
    shared_key: Option<String>,
    /// What the feedback loop remembers of the number once it is accepted.
    memo: Option<Memo>,
}

/// A number that was admitted, with its de-duplication claims.
struct Held {
    index: usize,
    admitted: Admitted,
    ticket: Option<Ticket>,
    shared_key: Option<String>,
    memo: Option<Memo>,
}

/// Numbers that share one SendSms call have the same message and kind.
#[derive(PartialEq, Eq)]
struct CallKey<'a> {
    template_id: &'a str,
    sign_name: Option<&'a str>,
    params: &'a [String],
    region: &'a str,
    extras: &'a CallExtras,
    mainland: bool,
}

impl Services {
    /// Sends one caller message to many numbers. `trails` holds one trail per request, in order; the
    /// results are in the same order.
    pub(crate) async fn send_batch(
        self: &Arc<Self>,
        tenant: &Arc<LiveTenant>,
        requests: Vec<SendRequest>,
        message: &CallerMessage,
        trails: &mut Vec<Trail>,
    ) -> Vec<NumberResult> {
        let mut results: Vec<Option<NumberResult>> = (0..requests.len()).map(|_| None).collect();
        let mut waits = Vec::new();
        let mut firsts = Vec::new();
        // A number twice in one request is sent once, whatever its spelling (`+86…`, `86…`, bare, spaced) and
        // whatever the parameters (with or without a code to de-duplicate on): each later copy is answered
        // with the first's result.
        let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut copies = Vec::new();
        for (index, request) in requests.into_iter().enumerate() {
            let trail = &mut trails[index];
            let checked = match self.check_with(tenant, request, Some(message), trail).await {
                Ok(checked) => checked,
                Err(e) => {
                    results[index] = Some(Err(e).into());
                    continue;
                }
            };
            match seen.entry(checked.phone.e164().to_owned()) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    trail.replayed = true;
                    copies.push((index, *first.get()));
                    continue;
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(index);
                }
            }
            if trail.test_number {
                let accepted = Accepted {
                    delivery: Delivery::TestNumber,
                    template_id: checked.sms.template_id,
                    receipt: None,
                    provider: None,
                };
                results[index] = Some(Ok(accepted).into());
                continue;
            }
            // Before de-duplication, spend caps and limits: a number in a blocked range consumes nothing.
            let memo = match self.feedback.admit(tenant, &checked.phone, checked.vouched) {
                Ok(memo) => memo,
                Err(e) => {
                    results[index] = Some(Err(e).into());
                    continue;
                }
            };
            let (ticket, shared_key) = match self.claim_everywhere(tenant, &checked, trail).await {
                Claimed::First { ticket, shared_key } => (ticket, shared_key),
                Claimed::Replay(outcome) => {
                    results[index] = Some(outcome.into());
                    continue;
                }
                // Awaited once this batch's own sends are settled: the first may be a number of this batch.
                Claimed::Wait(first) => {
                    waits.push((index, first));
                    continue;
                }
            };
            firsts.push(First { index, checked, ticket, shared_key, memo });
        }

        let indexes: Vec<usize> = firsts.iter().map(|f| f.index).collect();
        let (services, owned_tenant) = (self.clone(), tenant.clone());
        let mut owned = std::mem::take(trails);
        let task = tokio::spawn(async move {
            let settled = services.commit_batch(&owned_tenant, firsts, &mut owned).await;
            (settled, owned)
        });
        match task.await {
            Ok((settled, owned)) => {
                *trails = owned;
                for (index, result) in settled {
                    results[index] = Some(result);
                }
            }
            Err(e) => {
                *trails = (0..results.len()).map(|_| Trail::default()).collect();
                for index in indexes {
                    results[index] = Some(Err(GatewayError::Internal(format!("send task failed: {e}"))).into());
                }
            }
        }
        for (index, first) in waits {
            results[index] = Some(dedupe::wait(first).await.into());
        }
        for (index, first) in copies {
            results[index] =
                results[first].as_ref().map(|r| NumberResult { outcome: r.outcome.clone(), entry: r.entry.clone() });
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(GatewayError::Internal("a number was left unanswered".into())).into()))
            .collect()
    }

    /// Admit each number, deliver the admitted ones call by call, settle each on its own entry.
    async fn commit_batch(
        self: &Arc<Self>,
        tenant: &Arc<LiveTenant>,
        firsts: Vec<First>,
        trails: &mut [Trail],
    ) -> Vec<(usize, NumberResult)> {
        let mut settled = Vec::with_capacity(firsts.len());
        let mut admitted: Vec<Held> = Vec::new();
        for First { index, checked, ticket, shared_key, memo } in firsts {
            match self.admit(tenant, checked, &mut trails[index]).await {
                Ok(a) => admitted.push(Held { index, admitted: a, ticket, shared_key, memo }),
                Err(e) => {
                    let outcome = Err(e);
                    self.finish(tenant, ticket, shared_key, &outcome).await;
                    settled.push((index, outcome.into()));
                }
            }
        }
        // A number whose route starts elsewhere than Tencent goes out on its own, through its route.
        let (admitted, elsewhere): (Vec<Held>, Vec<Held>) = admitted
            .into_iter()
            .partition(|h| self.providers.order(tenant, h.admitted.checked.via).first() == ProviderId::Tencent);
        for Held { index, admitted, ticket, shared_key, memo } in elsewhere {
            let trail = &mut trails[index];
            let outcome = self.deliver_admitted(tenant, admitted, trail).await;
            self.remember_accepted(tenant.spec(), memo, &trail.request_id, &outcome);
            self.finish(tenant, ticket, shared_key, &outcome).await;
            settled.push((index, outcome.into()));
        }
        // Group by call, in the order the numbers came.
        let mut calls: Vec<Vec<usize>> = Vec::new();
        for (k, held) in admitted.iter().enumerate() {
            let key = call_key(&held.admitted.checked);
            match calls.iter_mut().find(|call| call_key(&admitted[call[0]].admitted.checked) == key) {
                Some(call) => call.push(k),
                None => calls.push(vec![k]),
            }
        }
        let mut slots: Vec<Option<Held>> = admitted.into_iter().map(Some).collect();
        for call in calls {
            let members: Vec<Held> = call.iter().filter_map(|&k| slots[k].take()).collect();
            for (index, result) in self.call(tenant, members, trails).await {
                settled.push((index, result));
            }
        }
        settled
    }

    /// One SendSms call for numbers that share a message, and the settlement of each.
    async fn call(
        self: &Arc<Self>,
        tenant: &Arc<LiveTenant>,
        members: Vec<Held>,
        trails: &mut [Trail],
    ) -> Vec<(usize, NumberResult)> {
        let mut settled = Vec::with_capacity(members.len());
        let Some(account) = tenant.tencent.as_ref() else { return settled };
        if account.upstream.dry_run {
            for Held { index, admitted, ticket, shared_key, memo } in members {
                let outcome = self.dry_run(tenant, admitted, ProviderId::Tencent, &mut trails[index]).await;
                self.remember_accepted(tenant.spec(), memo, &trails[index].request_id, &outcome);
                self.finish(tenant, ticket, shared_key, &outcome).await;
                settled.push((index, outcome.into()));
            }
            return settled;
        }
        let Some(first) = members.first() else { return settled };
        let first_index = first.index;
        let sms = first.admitted.checked.sms.clone();
        let numbers: Vec<&str> = members.iter().map(|h| h.admitted.checked.sms.phone_e164.as_str()).collect();
        let started = Instant::now();
        let guard = HandedOver {
            request_id: trails[first_index].request_id.clone(),
            tenant: tenant.name.clone(),
            phone: match numbers.len() {
                1 => Masked(numbers[0]).to_string(),
                n => format!("{} and {} more", Masked(numbers[0]), n - 1),
            },
            finished: false,
        };
        let result =
            Box::pin(self.providers.tencent.deliver_many(account, &tenant.providers.tencent, &sms, &numbers)).await;
        guard.finish();
        let took = started.elapsed();
        let now = self.clock.unix_seconds();
        let mut entries: Vec<Option<Entry>> = match &result {
            Ok(Call::Answered(entries)) => entries.iter().cloned().map(Some).collect(),
            Ok(Call::Unconfirmed(_)) | Err(_) => Vec::new(),
        };
        for Held { index, admitted, ticket, shared_key, memo } in members {
            let Admitted { checked, reservation } = admitted;
            let (number_result, entry) = match &result {
                Err(e) => (Err(e.clone()), None),
                Ok(Call::Unconfirmed(unconfirmed)) => (Ok(Dispatched::Unconfirmed(unconfirmed.clone())), None),
                Ok(Call::Answered(_)) => {
                    // Tencent's entry for this number: the first not yet taken with its E.164 form.
                    let found = entries
                        .iter_mut()
                        .find(|e| e.as_ref().is_some_and(|e| e.phone_number == checked.sms.phone_e164))
                        .and_then(Option::take);
                    match found {
                        Some(entry) => (entry.judge(now), Some(entry)),
                        // Tencent took the call and did not say what became of this number: it may have gone.
                        None => (
                            Ok(Dispatched::Unconfirmed(Unconfirmed {
                                reason: "Tencent's answer has no entry for this number".into(),
                                upstream: None,
                            })),
                            None,
                        ),
                    }
                }
            };
            let trail = &mut trails[index];
            trail.upstream_latency = Some(took);
            trail.provider = Some(ProviderId::Tencent);
            let rest =
                Via::from_iter(self.providers.order(tenant, checked.via).iter().filter(|p| *p != ProviderId::Tencent));
            let (provider, template_id, number_result, entry) = match number_result {
                // Tencent sent nothing, for a reason of its own: the number's route goes on.
                Err(e) if e.fails_over() && !rest.is_empty() => {
                    trail.failed_over.push((ProviderId::Tencent, e.upstream().map_or(e.code(), |u| u.label)));
                    let delivered =
                        Box::pin(self.providers.deliver(tenant, &tenant.providers, rest, &checked.sms)).await;
                    trail.failed_over.extend(delivered.failed_over);
                    trail.provider = Some(delivered.provider);
                    (delivered.provider, delivered.template_id, delivered.result, None)
                }
                result => (ProviderId::Tencent, checked.sms.template_id, result, entry),
            };
            trail.template_id = Some(template_id.clone());
            let outcome = self.settle(reservation, template_id, provider, number_result, trail).await;
            self.remember_accepted(tenant.spec(), memo, &trail.request_id, &outcome);
            self.finish(tenant, ticket, shared_key, &outcome).await;
            settled.push((index, NumberResult { outcome, entry }));
        }
        settled
    }

    /// A first send's answer goes to its de-duplication claims: shared through Redis, and to the requests
    /// waiting in this process.
    async fn finish(&self, tenant: &Tenant, ticket: Option<Ticket>, shared_key: Option<String>, outcome: &Outcome) {
        if let Some(key) = shared_key {
            self.share_outcome(tenant, &key, outcome).await;
        }
        if let Some(ticket) = ticket {
            ticket.complete(outcome);
        }
    }
}

fn call_key(checked: &Checked) -> CallKey<'_> {
    let sms = &checked.sms;
    CallKey {
        template_id: &sms.template_id,
        sign_name: sms.sign_name.as_deref(),
        params: &sms.params,
        region: &sms.region,
        extras: &sms.extras,
        mainland: checked.phone.is_mainland_china(),
    }
}
