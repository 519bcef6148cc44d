//! One provider call over the shared egress, for every provider: the request written to the account's first
//! healthy endpoint, its answer read to a bound, all inside the send's deadline; retries with back-off where
//! no second SMS can result, failover across the account's endpoints on connect failures, and the one rule
//! every provider follows: once an attempt may have gone out, the call is unconfirmed at worst, never an
//! error. A provider supplies only its requests and the reading of its answers ([`Attempt`]).

use super::breaker::{Breakers, EndpointLabels};
use super::proxy::{self, HttpsClient, WrittenBody};
use crate::clock::SharedClock;
use crate::config::{Endpoint, Upstream};
use crate::error::GatewayError;
use crate::sms::Unconfirmed;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// First back-off before a retry; doubled per retry, with full jitter, always inside the send's deadline.
const BACKOFF_BASE: Duration = Duration::from_millis(25);

/// `smsgate_upstream_retries_total{reason}`: why an attempt was made again.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A signed request, ready to send (or to show, redacted, in dry-run and `explain`).
#[derive(Clone)]
pub struct PreparedRequest {
    pub url: http::Uri,
    /// Headers in the order sent, `Authorization` included.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// The provider's redaction of its own body (numbers masked, codes hidden).
    pub(crate) redact: fn(&[u8]) -> String,
    /// The provider's redaction of its URL, for a provider that sends the number or the code in the query.
    pub(crate) redact_url: fn(&http::Uri) -> String,
}

impl PreparedRequest {
    /// The body for dry-run logs and `explain`: numbers masked, template parameters (the code) hidden.
    pub(crate) fn redacted_body(&self) -> String {
        (self.redact)(&self.body)
    }

    /// The URL for dry-run logs and `explain`, redacted as the body is.
    pub(crate) fn redacted_url(&self) -> String {
        (self.redact_url)(&self.url)
    }

    /// The headers for `explain`: a Basic `Authorization` (Twilio's, the credentials themselves) hidden; a
    /// signature (Tencent's, Aliyun's) shown, since it opens nothing else.
    pub(crate) fn redacted_headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.headers.iter().map(|(name, value)| {
            let hidden = name.eq_ignore_ascii_case("authorization") && value.starts_with("Basic ");
            (*name, if hidden { "Basic **REDACTED**" } else { value.as_str() })
        })
    }

    /// [`PreparedRequest::redact_url`] of a provider whose URL holds nothing to hide.
    pub(crate) fn plain_url(url: &http::Uri) -> String {
        url.to_string()
    }
}

/// How far one exchange got, from the transport's typed facts (was the connection made, did it begin to
/// write the body): the one source of "was anything sent?" for a call.
pub(crate) enum Exchange {
    /// Nothing of the request was written (no connection, a request that could not be built, the deadline
    /// first): nothing was sent, safe to retry or fail over. `timed_out`: the deadline passed.
    NotWritten {
        reason: String,
        timed_out: bool,
    },
    /// The request was written and no whole answer came back (reset, truncated, too large, the deadline):
    /// it may have been sent.
    NoAnswer(String),
    Answered(Answer),
}

/// A whole answer.
pub(crate) struct Answer {
    pub(crate) status: http::StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The provider's clock, from the `Date` header.
    pub(crate) fn date(&self) -> Option<i64> {
        let date = self.headers.get(http::header::DATE)?.to_str().ok()?;
        chrono::DateTime::parse_from_rfc2822(date).ok().map(|d| d.timestamp())
    }
}

/// What a provider made of one answer.
pub(crate) enum Step<T> {
    /// The call's outcome (an `Err`: nothing was sent, and trying again would not help).
    Done(Result<T, GatewayError>),
    /// Nothing was sent and another attempt may work (the provider throttled its API): retried with
    /// back-off inside the deadline, counted under `reason`.
    Retry(GatewayError, &'static str),
    /// The provider took the request and its answer does not say the message went nowhere.
    MaybeSent(Unconfirmed),
    /// Nothing was sent; send again at once without counting an attempt (Tencent: re-signed with its clock,
    /// or with the other key pair). The provider bounds how often it asks.
    Again,
}

/// One provider call: the request of each attempt and the reading of each answer. Stateful: a provider
/// learns from an answer what its next request should be.
pub(crate) trait Attempt {
    /// What a call comes to when something may have gone out.
    type Output: From<Unconfirmed>;
    /// The request of the next attempt, to `endpoint`.
    fn request(&mut self, endpoint: &Endpoint) -> PreparedRequest;
    /// What an answer means.
    fn judge(&mut self, answer: Answer) -> Step<Self::Output>;
    /// The most of an answer that is read: what the provider can legitimately send, so a real answer is
    /// never cut (a cut answer is `maybe sent`, never a retry).
    fn answer_limit(&self) -> usize;
}

/// The outbound HTTP every provider shares: one pooled client for direct egress, one per proxy and trust
/// roots, and the endpoint breakers. Cheap to clone: clones share all of it.
#[derive(Clone)]
pub(crate) struct Transport {
    /// Direct, built-in roots: the common case.
    http: HttpsClient,
    /// Through a proxy or with extra roots: one client per distinct egress.
    routes: Arc<proxy::Routes>,
    pub(crate) breakers: Arc<Breakers>,
    clock: SharedClock,
    retries: Family<ReasonLabels, Counter>,
}

impl Transport {
    pub(crate) fn new(
        clock: SharedClock,
        retries: Family<ReasonLabels, Counter>,
        breakers_open: Family<EndpointLabels, Gauge>,
    ) -> Transport {
        Transport {
            http: proxy::https_client(None, None),
            routes: Arc::default(),
            breakers: Arc::new(Breakers::observed(breakers_open)),
            clock,
            retries,
        }
    }

    /// The index of the endpoint the next send of `upstream` goes to: its first whose breaker is closed.
    pub(crate) fn pick(&self, upstream: &Upstream) -> usize {
        self.breakers.pick(&upstream.endpoints, 0, self.clock.monotonic())
    }

    /// Whether every endpoint of `upstream` is known to be down (each breaker open): a route skips the
    /// provider while another can take the send, and comes back to it when a breaker lets a trial through.
    pub(crate) fn all_down(&self, upstream: &Upstream) -> bool {
        self.breakers.next_closed(&upstream.endpoints, 0, self.clock.monotonic()).is_none()
    }

    /// One call within `upstream`'s deadline, retrying only where no second SMS can result (connect failures,
    /// the provider's API throttles) unless the account opted into retrying maybe-sent failures; failing over
    /// across endpoints on connect failures. The result is the last attempt's (never a stale error after a
    /// success), except that once an attempt may have gone out the call is unconfirmed at worst. An `Err`
    /// means nothing was sent by any attempt.
    pub(crate) async fn call<A: Attempt>(
        &self,
        upstream: &Upstream,
        attempt: &mut A,
    ) -> Result<A::Output, GatewayError> {
        let deadline = tokio::time::Instant::now() + upstream.timeout;
        let mut attempts = 0;
        let mut endpoint = self.pick(upstream);
        // The first attempt that may have gone out: from then on the call is unconfirmed at worst.
        let mut maybe_sent: Option<Unconfirmed> = None;
        let finish = |last: Result<A::Output, GatewayError>, maybe_sent: Option<Unconfirmed>| match (last, maybe_sent) {
            (Err(_), Some(earlier)) => Ok(A::Output::from(earlier)),
            (last, _) => last,
        };
        loop {
            attempts += 1;
            let target = &upstream.endpoints[endpoint];
            let request = attempt.request(target);
            let exchange = self.exchange(upstream, target, request, deadline, attempt.answer_limit()).await;
            let unconfirmed = |unconfirmed: Unconfirmed, maybe_sent: &mut Option<Unconfirmed>| {
                if !upstream.retry_maybe_sent {
                    return Err(unconfirmed);
                }
                maybe_sent.get_or_insert(unconfirmed.clone());
                Ok((Ok(A::Output::from(unconfirmed)), "maybe_sent"))
            };
            let (last, reason) = match exchange {
                Exchange::NotWritten { timed_out: true, .. } => {
                    return finish(Err(GatewayError::UpstreamTimeout), maybe_sent)
                }
                Exchange::NotWritten { reason, .. } => {
                    self.breakers.failure(target, self.clock.monotonic());
                    let error = GatewayError::UpstreamUnavailable { reason, upstream: None };
                    match self.breakers.next_closed(&upstream.endpoints, endpoint + 1, self.clock.monotonic()) {
                        Some(next) => endpoint = next,
                        // Every endpoint is known to be down: this send made its one attempt.
                        None => return finish(Err(error), maybe_sent),
                    }
                    (Err(error), "connect")
                }
                Exchange::NoAnswer(reason) => {
                    self.breakers.success(target);
                    match unconfirmed(Unconfirmed { reason, upstream: None }, &mut maybe_sent) {
                        Ok(step) => step,
                        Err(unconfirmed) => return Ok(unconfirmed.into()),
                    }
                }
                Exchange::Answered(answer) => {
                    self.breakers.success(target);
                    match attempt.judge(answer) {
                        Step::Done(result) => return finish(result, maybe_sent),
                        Step::Again => {
                            attempts -= 1;
                            continue;
                        }
                        Step::Retry(error, reason) => (Err(error), reason),
                        Step::MaybeSent(maybe) => match unconfirmed(maybe, &mut maybe_sent) {
                            Ok(step) => step,
                            Err(unconfirmed) => return Ok(unconfirmed.into()),
                        },
                    }
                }
            };
            if attempts >= upstream.max_attempts {
                return finish(last, maybe_sent);
            }
            let backoff = BACKOFF_BASE.saturating_mul(1 << (attempts - 1).min(8));
            let pause = backoff.mul_f64(fastrand::f64());
            if tokio::time::Instant::now() + pause >= deadline {
                return finish(last, maybe_sent);
            }
            self.retries.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
            tokio::time::sleep(pause).await;
        }
    }

    /// The client that reaches `endpoint`: the shared direct one, or the one of its proxy and roots.
    fn client_for(&self, upstream: &Upstream, endpoint: &Endpoint) -> Option<HttpsClient> {
        if endpoint.proxy.is_none() && upstream.roots.is_none() {
            return None;
        }
        Some(self.routes.client(endpoint.proxy.as_ref(), upstream.roots.as_ref()))
    }

    /// One request to `endpoint`, its answer read up to `limit` bytes, all before `deadline`; how far it got.
    pub(crate) async fn exchange(
        &self,
        upstream: &Upstream,
        endpoint: &Endpoint,
        request: PreparedRequest,
        deadline: tokio::time::Instant,
        limit: usize,
    ) -> Exchange {
        let routed = self.client_for(upstream, endpoint);
        let http = routed.as_ref().unwrap_or(&self.http);
        let mut builder = http::Request::post(request.url);
        for (name, value) in &request.headers {
            // `Host` is written as signed; the client adds one only when the request has none.
            builder = builder.header(*name, value);
        }
        if let Some(proxy) = endpoint.proxy.as_ref().filter(|_| endpoint.url.scheme() == "http") {
            // Plain http goes to the proxy itself: the request carries the proxy's credentials (through a
            // CONNECT tunnel, only the CONNECT does).
            if let Some(authorization) = &proxy.authorization {
                builder = builder.header(http::header::PROXY_AUTHORIZATION, authorization.expose());
            }
        }
        let (body, written) = WrittenBody::new(request.body);
        // A provider that signs the user agent sets it itself.
        if !request.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("user-agent")) {
            builder = builder.header(http::header::USER_AGENT, concat!("smsgate/", env!("CARGO_PKG_VERSION")));
        }
        let request = match builder.body(body) {
            Ok(request) => request,
            Err(e) => {
                return Exchange::NotWritten {
                    reason: format!("connect: request could not be built: {e}"),
                    timed_out: false,
                }
            }
        };
        let was_written = || written.load(Ordering::Acquire);
        let attempt = async {
            let response = match http.request(request).await {
                Ok(response) => response,
                Err(e) if e.is_connect() || !was_written() => {
                    return Exchange::NotWritten { reason: format!("connect: {}", chain(&e)), timed_out: false }
                }
                Err(e) => return Exchange::NoAnswer(format!("transport: {}", chain(&e))),
            };
            let (head, body) = response.into_parts();
            match Limited::new(body, limit).collect().await {
                Ok(collected) => Exchange::Answered(Answer {
                    status: head.status,
                    headers: head.headers,
                    body: collected.to_bytes().to_vec(),
                }),
                Err(e) if e.is::<LengthLimitError>() => Exchange::NoAnswer(format!(
                    "answer over {limit} bytes, more than the provider can legitimately send"
                )),
                Err(e) => Exchange::NoAnswer(format!("transport: reading the answer: {}", chain(&*e))),
            }
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(exchange) => exchange,
            Err(_) if was_written() => Exchange::NoAnswer("no answer within the deadline".into()),
            Err(_) => Exchange::NotWritten {
                reason: "the deadline passed before the request was written".into(),
                timed_out: true,
            },
        }
    }
}

/// An error and its sources, `: `-separated. The chain carries no secret: only addresses and protocol errors.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        reason.push_str(&format!(": {s}"));
        source = s.source();
    }
    reason
}
