//! Sends one Aliyun `SendSms` over the shared transport: signed (V3, a fresh nonce and date per attempt) for
//! the endpoint it goes to, retried and failed over by [`Transport::call`], each answer read by
//! [`classify::judge`].

use super::{api, classify, sign};
use crate::clock::SharedClock;
use crate::config::{AliyunAccount, Endpoint};
use crate::error::{GatewayError, UpstreamClass};
use crate::net::transport::{Answer, Attempt, Step, Transport};
use crate::providers::{Dispatched, OutboundSms, PreparedRequest, Unconfirmed};

/// The most of an answer that is read: a SendSms answer is a few short fields (error answers add a
/// `Recommend` URL and a `HostId`); 16 KiB leaves room for Aliyun to add some.
const ANSWER_LIMIT: usize = 16 * 1024;

/// Cheap to clone: clones share the transport.
#[derive(Clone)]
pub(crate) struct AliyunClient {
    transport: Transport,
    clock: SharedClock,
}

impl From<Unconfirmed> for Dispatched {
    fn from(unconfirmed: Unconfirmed) -> Dispatched {
        Dispatched::Unconfirmed(unconfirmed)
    }
}

impl AliyunClient {
    pub(crate) fn new(transport: Transport, clock: SharedClock) -> AliyunClient {
        AliyunClient { transport, clock }
    }

    /// `sms` signed for `endpoint` at `now_unix` with `nonce`. Pure: no I/O, no clock.
    pub(crate) fn prepare_at(
        account: &AliyunAccount,
        endpoint: &Endpoint,
        sms: &OutboundSms,
        now_unix: i64,
        nonce: &str,
    ) -> PreparedRequest {
        let template_code = account.templates_for(sms.mainland_china).resolve(&sms.usage).unwrap_or_default();
        let phone = api::phone_number(&sms.phone_e164);
        let param = api::template_param(sms.params.first().map_or("", String::as_str));
        let params = sign::SendSms {
            phone_numbers: &phone,
            sign_name: &account.sign_name,
            template_code,
            template_param: &param,
            out_id: None,
        };
        let signed = sign::send_sms(
            &account.access_key_id,
            account.access_key_secret.expose(),
            &endpoint.host,
            &params,
            &sign::x_acs_date(now_unix),
            nonce,
        );
        let mut parts = endpoint.uri.clone().into_parts();
        parts.path_and_query = signed.path_and_query.parse().ok();
        let url = http::Uri::from_parts(parts).unwrap_or_else(|_| endpoint.uri.clone());
        PreparedRequest {
            url,
            headers: signed.headers,
            body: signed.body,
            redact: |_| String::new(),
            redact_url: redacted_url,
        }
    }
}

/// The URL with the numbers masked and the template's variables (the code) hidden.
fn redacted_url(url: &http::Uri) -> String {
    let origin = match (url.scheme_str(), url.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => String::new(),
    };
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    format!("{origin}{}", api::redacted_query(path))
}

impl crate::providers::Provider for AliyunClient {
    type Account = AliyunAccount;
    type State = ();

    fn prepare(&self, account: &AliyunAccount, _: &(), sms: &OutboundSms) -> PreparedRequest {
        let endpoint = &account.upstream.endpoints[self.transport.pick(&account.upstream)];
        AliyunClient::prepare_at(account, endpoint, sms, self.clock.unix_seconds(), &sign::nonce())
    }

    async fn deliver(&self, account: &AliyunAccount, _: &(), sms: &OutboundSms) -> Result<Dispatched, GatewayError> {
        let mut call = SendCall { client: self, account, sms, resigned: false };
        self.transport.call(&account.upstream, &mut call).await
    }
}

/// One SendSms in the making.
struct SendCall<'a> {
    client: &'a AliyunClient,
    account: &'a AliyunAccount,
    sms: &'a OutboundSms,
    /// Signed again once already after a clock or nonce refusal.
    resigned: bool,
}

impl Attempt for SendCall<'_> {
    type Output = Dispatched;

    fn request(&mut self, endpoint: &Endpoint) -> PreparedRequest {
        // A fresh nonce every attempt: Aliyun refuses a nonce it has seen.
        AliyunClient::prepare_at(self.account, endpoint, self.sms, self.client.clock.unix_seconds(), &sign::nonce())
    }

    fn judge(&mut self, answer: Answer) -> Step<Dispatched> {
        match classify::judge(answer.status, &answer.body, self.client.clock.unix_seconds()) {
            Ok(Dispatched::Unconfirmed(unconfirmed)) => Step::MaybeSent(unconfirmed),
            Ok(sent) => Step::Done(Ok(sent)),
            Err(error) => match error.upstream().map(|u| u.class) {
                // A nonce seen before or a date too far off: signed afresh once (nothing was sent).
                Some(UpstreamClass::Clock) if !self.resigned => {
                    self.resigned = true;
                    Step::Again
                }
                Some(UpstreamClass::TransientNotSent) => Step::Retry(error, "throttled"),
                _ => Step::Done(Err(error)),
            },
        }
    }

    fn answer_limit(&self) -> usize {
        ANSWER_LIMIT
    }
}
