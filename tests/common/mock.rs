//! A mock Tencent SMS endpoint on 127.0.0.1:0 (SendSms and ReportConversion). It speaks just enough HTTP/1.1
//! (keep-alive, Content-Length bodies) to answer, stall, or drop a connection on cue, verifies each
//! request's TC3 signature with an implementation of its own (not smsgate's), and records what it received.
//! Every accepted number gets its own SerialNo (`2019:0`, `2019:1`, ...), and every entry echoes the request's
//! `SessionContext`, as Tencent's do.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How the mock answers the next request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// `SendStatusSet` with `Code: Ok` for every number.
    Ok,
    /// A per-number failure code.
    PerNumber(&'static str),
    /// The error envelope (whole request refused), with this HTTP status.
    Envelope(u16, &'static str),
    /// A non-Tencent answer, such as a proxy's HTML error page.
    Raw(u16, &'static str, &'static str),
    /// Answer Ok after this long.
    Slow(Duration),
    /// Close the connection without answering.
    Drop,
    /// Answer Ok with a `Content-Length` of the whole answer, write half of it, and close: a cut answer.
    Truncated,
}

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
    pub signature_valid: bool,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str).unwrap_or("")
    }
}

#[derive(Default)]
struct State {
    replies: VecDeque<Reply>,
    seen: Vec<Seen>,
    /// Tencent's clock: when set, timestamps more than 5 minutes off get `AuthFailure.SignatureExpire`.
    clock: Option<i64>,
    /// Refuse requests whose signature does not verify, as Tencent does.
    strict: bool,
    /// SerialNos issued so far.
    serials: usize,
    /// Error codes for the next ReportConversion calls (none queued: answered OK).
    report_replies: VecDeque<&'static str>,
    /// ReportConversion calls are recorded and never answered (a hanging endpoint).
    hang_reports: bool,
}

#[derive(Clone)]
pub(crate) struct MockTencent {
    pub addr: SocketAddr,
    secret_key: String,
    state: Arc<Mutex<State>>,
    /// Serves https (with a certificate of the test CA) instead of http.
    tls: bool,
}

impl MockTencent {
    /// Starts a mock that checks signatures made with `secret_key`. With no reply queued it answers Ok.
    pub(crate) async fn start(secret_key: &str) -> MockTencent {
        MockTencent::serve(0, secret_key, None).await
    }

    /// The same on a given loopback port (0: any), such as one that refused connections until now.
    pub(crate) async fn start_on(port: u16, secret_key: &str) -> MockTencent {
        MockTencent::serve(port, secret_key, None).await
    }

    /// The same mock over TLS, with a server certificate for 127.0.0.1 signed by `ca`.
    pub(crate) async fn start_tls(secret_key: &str, ca: &super::tls::TestCa) -> MockTencent {
        MockTencent::serve(0, secret_key, Some(ca.acceptor())).await
    }

    async fn serve(port: u16, secret_key: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> MockTencent {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let mock = MockTencent {
            addr: listener.local_addr().unwrap(),
            secret_key: secret_key.to_owned(),
            state: Arc::default(),
            tls: tls.is_some(),
        };
        let server = mock.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                match &tls {
                    None => drop(tokio::spawn(server.connection(stream))),
                    Some(acceptor) => {
                        let accepting = acceptor.accept(stream);
                        tokio::spawn(async move {
                            if let Ok(stream) = accepting.await {
                                server.connection(stream).await;
                            }
                        });
                    }
                }
            }
        });
        mock
    }

    pub(crate) fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub(crate) fn reply(&self, reply: Reply) {
        self.state.lock().unwrap().replies.push_back(reply);
    }

    /// Sets Tencent's clock and enforces the 5-minute timestamp window against it.
    pub(crate) fn set_clock(&self, unix: i64) {
        self.state.lock().unwrap().clock = Some(unix);
    }

    /// Answers `AuthFailure.SignatureFailure` to requests whose signature does not verify.
    pub(crate) fn strict_signatures(&self) {
        self.state.lock().unwrap().strict = true;
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The requests of one action (`SendSms`, `ReportConversion`).
    pub(crate) fn seen_action(&self, action: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.header("x-tc-action") == action).collect()
    }

    /// Answers the next ReportConversion call with this error code.
    pub(crate) fn reply_report(&self, code: &'static str) {
        self.state.lock().unwrap().report_replies.push_back(code);
    }

    /// From now on, ReportConversion calls are recorded and never answered.
    pub(crate) fn hang_reports(&self) {
        self.state.lock().unwrap().hang_reports = true;
    }

    async fn connection<S: AsyncRead + AsyncWrite + Unpin>(self, stream: S) {
        let mut stream = BufReader::new(stream);
        loop {
            let mut headers = HashMap::new();
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
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
            let signature_valid = verify(&headers, &body, &self.secret_key);
            let timestamp: i64 = headers.get("x-tc-timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
            let action = headers.get("x-tc-action").cloned().unwrap_or_default();
            if action == "PullSmsSendStatus" || action == "ReportConversion" {
                let text = {
                    let mut state = self.state.lock().unwrap();
                    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    state.seen.push(Seen { headers: headers.clone(), body: request.clone(), signature_valid });
                    let queued = if action == "ReportConversion" { state.report_replies.pop_front() } else { None };
                    match queued {
                        _ if !signature_valid => error_envelope("AuthFailure.SignatureFailure"),
                        _ if action == "PullSmsSendStatus" => {
                            pull_status(request["Limit"].as_u64().unwrap_or(0) as usize)
                        }
                        Some(code) => error_envelope(code),
                        None => r#"{"Response":{"ReportConversionStatus":{"Code":"OK","Message":"success"},"RequestId":"mock-req"}}"#.to_owned(),
                    }
                };
                if self.state.lock().unwrap().hang_reports {
                    return std::future::pending().await;
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    text.len()
                );
                let stream = stream.get_mut();
                if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(text.as_bytes()).await.is_err()
                {
                    return;
                }
                continue;
            }
            let (reply, now) = {
                let mut state = self.state.lock().unwrap();
                state.seen.push(Seen {
                    headers: headers.clone(),
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                    signature_valid,
                });
                let now = state.clock.unwrap_or_else(|| chrono::Utc::now().timestamp());
                let reply = if state.clock.is_some_and(|now| (timestamp - now).abs() > 300) {
                    Reply::Envelope(200, "AuthFailure.SignatureExpire")
                } else if state.strict && !signature_valid {
                    Reply::Envelope(200, "AuthFailure.SignatureFailure")
                } else {
                    state.replies.pop_front().unwrap_or(Reply::Ok)
                };
                (reply, now)
            };
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let numbers: Vec<String> = request["PhoneNumberSet"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect();
            // Tencent echoes the caller's SessionContext in every entry.
            let context = request["SessionContext"].as_str().unwrap_or("");
            let first_serial = {
                let mut state = self.state.lock().unwrap();
                let first = state.serials;
                if matches!(reply, Reply::Ok | Reply::Slow(_) | Reply::Truncated) {
                    state.serials += numbers.len();
                }
                first
            };
            let (status, content_type, text) = match reply {
                Reply::Drop => return,
                Reply::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    (200, "application/json", statuses(&numbers, "Ok", first_serial, context))
                }
                Reply::Ok => (200, "application/json", statuses(&numbers, "Ok", first_serial, context)),
                Reply::Truncated => {
                    let text = statuses(&numbers, "Ok", first_serial, context);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        text.len()
                    );
                    let stream = stream.get_mut();
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&text.as_bytes()[..text.len() / 2]).await;
                    let _ = stream.flush().await;
                    return;
                }
                Reply::PerNumber(code) => (200, "application/json", statuses(&numbers, code, first_serial, context)),
                Reply::Envelope(status, code) => (
                    status,
                    "text/plain",
                    format!(
                        r#"{{"Response":{{"Error":{{"Code":"{code}","Message":"mock says {code}"}},"RequestId":"mock-req"}}}}"#
                    ),
                ),
                Reply::Raw(status, content_type, text) => (status, content_type, text.to_owned()),
            };
            let date = chrono::DateTime::from_timestamp(now, 0).unwrap().format("%a, %d %b %Y %H:%M:%S GMT");
            let head = format!(
                "HTTP/1.1 {status} X\r\ndate: {date}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
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
}

/// A full `PullSmsSendStatus` answer: `limit` delivery reports, each echoing a 512-byte SessionContext, as
/// Tencent's are when the sends carried one (100 of them are over 64 KiB).
fn pull_status(limit: usize) -> String {
    let set: Vec<serde_json::Value> = (0..limit)
        .map(|i| {
            serde_json::json!({"UserReceiveTime": 1704164700, "NationCode": "86", "PurePhoneNumber": "13800138000",
                "PhoneNumber": "+8613800138000", "SerialNo": format!("2019:{i}"), "ReportStatus": "SUCCESS",
                "Description": "DELIVRD", "SessionContext": "x".repeat(512)})
        })
        .collect();
    serde_json::json!({"Response": {"PullSmsSendStatusSet": set, "RequestId": "mock-pull"}}).to_string()
}

fn error_envelope(code: &str) -> String {
    format!(r#"{{"Response":{{"Error":{{"Code":"{code}","Message":"mock says {code}"}},"RequestId":"mock-req"}}}}"#)
}

fn statuses(numbers: &[String], code: &str, first_serial: usize, context: &str) -> String {
    let set: Vec<serde_json::Value> = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let ok = code == "Ok";
            let serial = if ok { format!("2019:{}", first_serial + i) } else { String::new() };
            serde_json::json!({"SerialNo": serial, "PhoneNumber": n,
                "Fee": u32::from(ok), "SessionContext": context, "Code": code, "Message": "mock", "IsoCode": "CN"})
        })
        .collect();
    serde_json::json!({"Response": {"SendStatusSet": set, "RequestId": "mock-req"}}).to_string()
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// TC3-HMAC-SHA256 as Tencent's documentation describes it, written independently of smsgate's signer.
fn verify(headers: &HashMap<String, String>, body: &[u8], secret_key: &str) -> bool {
    let get = |name: &str| headers.get(name).map(String::as_str).unwrap_or("");
    let Ok(timestamp) = get("x-tc-timestamp").parse::<i64>() else { return false };
    let date = chrono::DateTime::from_timestamp(timestamp, 0).unwrap().format("%Y-%m-%d").to_string();
    let canonical = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\n\ncontent-type;host\n{}",
        get("content-type").to_ascii_lowercase(),
        get("host").to_ascii_lowercase(),
        hex::encode(Sha256::digest(body))
    );
    let to_sign = format!(
        "TC3-HMAC-SHA256\n{timestamp}\n{date}/sms/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), &date);
    let k_service = hmac(&k_date, "sms");
    let k_signing = hmac(&k_service, "tc3_request");
    let signature = hex::encode(hmac(&k_signing, &to_sign));
    let authorization = get("authorization");
    authorization.starts_with("TC3-HMAC-SHA256 Credential=")
        && authorization.contains(&format!("/{date}/sms/tc3_request, SignedHeaders=content-type;host, "))
        && authorization.ends_with(&format!("Signature={signature}"))
}
