//! A mock Twilio Messages API on 127.0.0.1:0 (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`). Like
//! the mock Tencent it speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) to answer, stall, or
//! drop a connection on cue; it checks each request's Basic credentials and decodes its form with code of
//! its own ([`super::twilio_verify`], not smsgate's), and records what it received.
//!
//! By default it answers as Twilio does: 201 with a created Message (`sid` `SM` + 32 hex, fresh per request,
//! `status: accepted`) and a `Twilio-Request-Id` header; 401 `{"code":20003}` when the credentials are not
//! the account's (as Twilio does; [`MockTwilio::lenient_auth`] turns that off), 404 `{"code":20404}` for
//! another path or account. Queued [`TwilioReply`]s change the next answers.

use super::twilio_verify::{check_basic_auth, decode_form};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How the mock answers the next request.
#[derive(Debug, Clone)]
pub(crate) enum TwilioReply {
    /// 201 with a created message, `status: accepted` (the default).
    Created,
    /// 201 with a message created in this state (`failed`, `queued`...) and `error_code` (JSON null if None).
    CreatedAs(&'static str, Option<u32>),
    /// Twilio's error answer `{"code", "message", "more_info", "status"}` with this HTTP status and code.
    Error(u16, u32),
    /// A non-Twilio answer (a proxy's HTML page): HTTP status, content type, body.
    Raw(u16, &'static str, &'static str),
    /// Answer Created after this long.
    Slow(Duration),
    /// Read the whole request, then close the connection without answering.
    Drop,
    /// A created message's head with its whole `Content-Length`, half of its body, then close.
    Truncated,
}

impl TwilioReply {
    /// HTTP 429 with code 20429 (the account's API concurrency throttle).
    pub(crate) const THROTTLED: TwilioReply = TwilioReply::Error(429, 20429);
}

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub(crate) struct TwilioSeen {
    pub method: String,
    /// The request target as sent (path and any query).
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The form body's pairs in the order sent, decoded by [`decode_form`].
    pub form: Vec<(String, String)>,
    /// Whether `Authorization` is Basic with exactly the mock's account SID and auth token.
    pub auth_valid: bool,
    /// The message SID the mock answered (or began to answer) with, when it created one.
    pub sid: Option<String>,
}

impl TwilioSeen {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str).unwrap_or("")
    }

    /// The value of form field `name` (the first, when repeated).
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The form's field names, in the order sent.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.form.iter().map(|(k, _)| k.as_str()).collect()
    }
}

#[derive(Default)]
struct State {
    replies: VecDeque<TwilioReply>,
    seen: Vec<TwilioSeen>,
    /// Requests answered so far (SIDs and request ids are made from it).
    count: u64,
    /// Answer requests with bad credentials as if they were good.
    lenient: bool,
}

#[derive(Clone)]
pub(crate) struct MockTwilio {
    pub addr: SocketAddr,
    account_sid: String,
    auth_token: String,
    state: Arc<Mutex<State>>,
}

impl MockTwilio {
    /// Starts a mock for the account `account_sid` whose credentials are `account_sid:auth_token`.
    pub(crate) async fn start(account_sid: &str, auth_token: &str) -> MockTwilio {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock = MockTwilio {
            addr: listener.local_addr().unwrap(),
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            state: Arc::default(),
        };
        let server = mock.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(server.clone().connection(stream));
            }
        });
        mock
    }

    /// `http://127.0.0.1:<port>`: the section's `endpoint`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The path of the account's Messages resource.
    pub(crate) fn messages_path(&self) -> String {
        format!("/2010-04-01/Accounts/{}/Messages.json", self.account_sid)
    }

    /// Queues how the next request (after those already queued) is answered.
    pub(crate) fn reply(&self, reply: TwilioReply) {
        self.state.lock().unwrap().replies.push_back(reply);
    }

    /// From now on, requests with bad credentials are answered as if they were good (still recorded with
    /// `auth_valid: false`).
    pub(crate) fn lenient_auth(&self) {
        self.state.lock().unwrap().lenient = true;
    }

    /// Every request received, in order.
    pub(crate) fn seen(&self) -> Vec<TwilioSeen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The requests answered with a created message (or the start of one: `Slow`, `Truncated`).
    pub(crate) fn sent(&self) -> Vec<TwilioSeen> {
        self.seen().into_iter().filter(|s| s.sid.is_some()).collect()
    }

    async fn connection(self, stream: TcpStream) {
        let mut stream = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_owned();
            let target = parts.next().unwrap_or("");
            // A plain-http request through a proxy arrives in absolute form (`http://host:port/path`).
            let path = match target.strip_prefix("http://").and_then(|rest| rest.find('/').map(|i| &rest[i..])) {
                Some(path) => path.to_owned(),
                None => target.to_owned(),
            };
            let mut headers = HashMap::new();
            loop {
                line.clear();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let trimmed = line.trim_end();
                if trimmed.is_empty() {
                    break;
                }
                if let Some((name, value)) = trimmed.split_once(':') {
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                }
            }
            let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0; length];
            if stream.read_exact(&mut body).await.is_err() {
                return;
            }
            let auth_valid = check_basic_auth(
                headers.get("authorization").map(String::as_str).unwrap_or(""),
                &self.account_sid,
                &self.auth_token,
            );
            let form = decode_form(&body);
            let (reply, n) = {
                let mut state = self.state.lock().unwrap();
                state.count += 1;
                let reply = if method != "POST" || path != self.messages_path() {
                    TwilioReply::Error(404, 20404)
                } else if !auth_valid && !state.lenient {
                    TwilioReply::Error(401, 20003)
                } else {
                    state.replies.pop_front().unwrap_or(TwilioReply::Created)
                };
                let n = state.count;
                let creates = matches!(
                    reply,
                    TwilioReply::Created | TwilioReply::CreatedAs(..) | TwilioReply::Slow(_) | TwilioReply::Truncated
                );
                let sid = creates.then(|| format!("SM{:08x}{:024x}", self.addr.port(), n));
                state.seen.push(TwilioSeen { method, path, form: form.clone(), headers, body, auth_valid, sid });
                (reply, n)
            };
            let sid = format!("SM{:08x}{:024x}", self.addr.port(), n);
            let request_id = format!("RQ{:08x}{:024x}", self.addr.port(), n);
            let created = |status: &str, error_code: Option<u32>| self.message(&form, &sid, status, error_code);
            let (status, content_type, text) = match reply {
                TwilioReply::Drop => return,
                TwilioReply::Created => (201, "application/json", created("accepted", None)),
                TwilioReply::CreatedAs(state, code) => (201, "application/json", created(state, code)),
                TwilioReply::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    (201, "application/json", created("accepted", None))
                }
                TwilioReply::Truncated => {
                    let text = created("accepted", None);
                    let head = format!(
                        "HTTP/1.1 201 CREATED\r\ncontent-type: application/json\r\ntwilio-request-id: {request_id}\r\ncontent-length: {}\r\n\r\n",
                        text.len()
                    );
                    let stream = stream.get_mut();
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&text.as_bytes()[..text.len() / 2]).await;
                    let _ = stream.flush().await;
                    return;
                }
                TwilioReply::Error(status, code) => (
                    status,
                    "application/json",
                    serde_json::json!({"code": code, "message": format!("mock Twilio says {code}"),
                        "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status})
                    .to_string(),
                ),
                TwilioReply::Raw(status, content_type, text) => (status, content_type, text.to_owned()),
            };
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ntwilio-request-id: {request_id}\r\ncontent-length: {}\r\n\r\n",
                text.len()
            );
            let stream = stream.get_mut();
            if stream.write_all(head.as_bytes()).await.is_err()
                || stream.write_all(text.as_bytes()).await.is_err()
                || stream.flush().await.is_err()
            {
                return;
            }
        }
    }

    /// A Message resource as Twilio answers a create (fields of its documented answer).
    fn message(&self, form: &[(String, String)], sid: &str, status: &str, error_code: Option<u32>) -> String {
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str()).to_owned();
        serde_json::json!({
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": field("Body"),
            "date_created": "Tue, 02 Jan 2024 03:04:05 +0000", "date_sent": null,
            "date_updated": "Tue, 02 Jan 2024 03:04:05 +0000", "direction": "outbound-api",
            "error_code": error_code, "error_message": error_code.map(|_| "mock failure"), "from": null,
            "messaging_service_sid": field("MessagingServiceSid"), "num_media": "0", "num_segments": "1",
            "price": null, "price_unit": "USD", "sid": sid, "status": status,
            "subresource_uris": {"media": format!("/2010-04-01/Accounts/{}/Messages/{sid}/Media.json", self.account_sid)},
            "to": field("To"), "uri": format!("/2010-04-01/Accounts/{}/Messages/{sid}.json", self.account_sid)
        })
        .to_string()
    }
}
