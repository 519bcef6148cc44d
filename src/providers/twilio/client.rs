//! Sends one Twilio message (`Messages.json`) over the shared transport: Basic credentials, Logto's form,
//! retried and failed over by [`Transport::call`], each answer read by [`classify::judge`].

use super::{api, classify};
use crate::clock::SharedClock;
use crate::config::{Endpoint, TwilioAccount};
use crate::error::{GatewayError, UpstreamClass};
use crate::net::transport::{Answer, Attempt, Step, Transport};
use crate::providers::{Dispatched, OutboundSms, PreparedRequest};

/// The most of an answer that is read: a message resource is about 1 KiB of fields plus the text we sent
/// (at most 1,600 characters, several bytes each); 32 KiB leaves room for Twilio to add fields.
const ANSWER_LIMIT: usize = 32 * 1024;

/// Cheap to clone: clones share the transport.
#[derive(Clone)]
pub(crate) struct TwilioClient {
    transport: Transport,
    clock: SharedClock,
}

impl TwilioClient {
    pub(crate) fn new(transport: Transport, clock: SharedClock) -> TwilioClient {
        TwilioClient { transport, clock }
    }

    /// The request for `sms` to `endpoint`. Pure: no I/O, no clock.
    pub(crate) fn prepare_at(account: &TwilioAccount, endpoint: &Endpoint, sms: &OutboundSms) -> PreparedRequest {
        let content = account.templates.resolve(&sms.usage).unwrap_or_default();
        let text = api::body(content, sms.params.first().map_or("", String::as_str));
        let body = api::form(
            &sms.phone_e164,
            &account.messaging_service_sid,
            &text,
            account.disable_risk_check,
            account.status_callback.as_deref(),
        );
        let base = endpoint.url.as_str().trim_end_matches('/');
        let url = format!("{base}{}", api::messages_path(&account.account_sid));
        PreparedRequest {
            url: url.parse().unwrap_or_else(|_| endpoint.uri.clone()),
            headers: vec![
                ("Host", endpoint.host.clone()),
                ("Authorization", api::basic_auth(&account.account_sid, account.auth_token.expose())),
                ("Content-Type", api::CONTENT_TYPE.to_owned()),
                ("Accept", api::ACCEPT.to_owned()),
            ],
            body: body.into(),
            redact: api::redact,
            redact_url: PreparedRequest::plain_url,
        }
    }
}

impl crate::providers::Provider for TwilioClient {
    type Account = TwilioAccount;
    type State = ();

    fn prepare(&self, account: &TwilioAccount, _: &(), sms: &OutboundSms) -> PreparedRequest {
        let endpoint = &account.upstream.endpoints[self.transport.pick(&account.upstream)];
        TwilioClient::prepare_at(account, endpoint, sms)
    }

    async fn deliver(&self, account: &TwilioAccount, _: &(), sms: &OutboundSms) -> Result<Dispatched, GatewayError> {
        let mut call = SendCall { client: self, account, sms };
        self.transport.call(&account.upstream, &mut call).await
    }
}

/// One Messages create in the making.
struct SendCall<'a> {
    client: &'a TwilioClient,
    account: &'a TwilioAccount,
    sms: &'a OutboundSms,
}

impl Attempt for SendCall<'_> {
    type Output = Dispatched;

    fn request(&mut self, endpoint: &Endpoint) -> PreparedRequest {
        TwilioClient::prepare_at(self.account, endpoint, self.sms)
    }

    fn judge(&mut self, answer: Answer) -> Step<Dispatched> {
        let request_id = answer.headers.get(api::REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
        match classify::judge(answer.status, request_id, &answer.body, self.client.clock.unix_seconds()) {
            Ok(Dispatched::Unconfirmed(unconfirmed)) => Step::MaybeSent(unconfirmed),
            Ok(sent) => Step::Done(Ok(sent)),
            Err(error) if error.upstream().is_some_and(|u| u.class == UpstreamClass::TransientNotSent) => {
                Step::Retry(error, "throttled")
            }
            Err(error) => Step::Done(Err(error)),
        }
    }

    fn answer_limit(&self) -> usize {
        ANSWER_LIMIT
    }
}
