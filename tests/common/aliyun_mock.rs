//! A mock Aliyun SMS endpoint (Dysmsapi `SendSms`) on 127.0.0.1:0, in the style of [`super::mock`]: just
//! enough HTTP/1.1 (keep-alive, `Content-Length` bodies) to answer, stall, cut or drop on cue. Each request's
//! V3 (`ACS3-HMAC-SHA256`) signature is checked by [`super::aliyun_verify::verify`] (its own code, not
//! smsgate's), and each request is recorded as received: method, path, the query raw and decoded, the headers
//! in order, the body. Every answered `OK` carries a fresh BizId (`100000^0`, `100001^0`, ...), in Aliyun's
//! `<digits>^0` shape.
//!
//! For other test modules (failover beside [`super::mock::MockTencent`]):
//! `let aliyun = MockAliyun::start(SECRET_KEY).await;` then `aliyun:` with `accessKeyId: ALIYUN_KEY_ID`
//! (or [`MockAliyun::start_for`] with another key id) and `endpoint: aliyun.endpoint()`;
//! `aliyun.reply(AliyunReply::Error(400, "isv.AMOUNT_NOT_ENOUGH"))` queues an answer (none queued: `OK`);
//! `aliyun.sent()` counts the requests that reached it, `aliyun.seen()` has them.

use super::aliyun_verify;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The AccessKey ID [`MockAliyun::start`] expects in each signature's `Credential`.
pub(crate) const ALIYUN_KEY_ID: &str = "LTAI5tTestAccessKeyId";

/// How the mock answers the next request.
#[derive(Debug, Clone)]
pub(crate) enum AliyunReply {
    /// 200 `{"Code":"OK","BizId":"<n>^0",...}`.
    Ok,
    /// Aliyun's error object `{"Code":code,"Message":…,"RequestId":…}` (with `HostId` and `Recommend`, as
    /// Aliyun writes them) with this HTTP status.
    Error(u16, &'static str),
    /// A non-Aliyun answer (a proxy's HTML page): status, content type, body.
    Raw(u16, &'static str, &'static str),
    /// Answer `OK` after this long.
    Slow(Duration),
    /// Read the whole request, then close the connection without answering.
    Drop,
    /// Answer `OK` with the `Content-Length` of the whole answer, write half of it, and close.
    Truncated,
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub(crate) struct AliyunSeen {
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The query as received, without `?`.
    pub raw_query: String,
    /// The query's pairs, percent-decoded (`+` read as a space), in the order received.
    pub query: Vec<(String, String)>,
    /// Every header, names and values as received, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the V3 signature verifies for the mock's key id and secret.
    pub signature_valid: bool,
    /// The BizId the mock answered with (`OK`, `Slow` and `Truncated` answers), else None.
    pub biz_id: Option<String>,
}

impl AliyunSeen {
    /// The first header of this name (any case), or "".
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map_or("", |(_, v)| v.as_str())
    }

    /// The decoded value of query parameter `name`, if sent.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The query's parameter names, in the order received.
    pub(crate) fn param_names(&self) -> Vec<&str> {
        self.query.iter().map(|(k, _)| k.as_str()).collect()
    }
}

#[derive(Default)]
struct State {
    replies: VecDeque<AliyunReply>,
    seen: Vec<AliyunSeen>,
    /// BizIds issued so far.
    issued: u64,
    /// Refuse requests whose signature does not verify (`SignatureDoesNotMatch`), as Aliyun does.
    strict: bool,
}

#[derive(Clone)]
pub(crate) struct MockAliyun {
    pub addr: SocketAddr,
    key_id: String,
    secret: String,
    state: Arc<Mutex<State>>,
}

impl MockAliyun {
    /// A mock checking signatures by [`ALIYUN_KEY_ID`] with `access_key_secret`. With no reply queued it
    /// answers `OK`.
    pub(crate) async fn start(access_key_secret: &str) -> MockAliyun {
        MockAliyun::start_for(ALIYUN_KEY_ID, access_key_secret).await
    }

    /// The same for another AccessKey ID.
    pub(crate) async fn start_for(access_key_id: &str, access_key_secret: &str) -> MockAliyun {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock = MockAliyun {
            addr: listener.local_addr().unwrap(),
            key_id: access_key_id.to_owned(),
            secret: access_key_secret.to_owned(),
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

    /// `http://127.0.0.1:<port>`, for the tenant's `aliyun.endpoint`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues the answer to the next request.
    pub(crate) fn reply(&self, reply: AliyunReply) {
        self.state.lock().unwrap().replies.push_back(reply);
    }

    /// Answers `SignatureDoesNotMatch` (HTTP 400) to requests whose signature does not verify.
    pub(crate) fn strict_signatures(&self) {
        self.state.lock().unwrap().strict = true;
    }

    /// Every request received so far.
    pub(crate) fn seen(&self) -> Vec<AliyunSeen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// How many requests reached the mock.
    pub(crate) fn sent(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    async fn connection(self, stream: TcpStream) {
        let mut stream = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let mut parts = line.trim_end().splitn(3, ' ');
            let method = parts.next().unwrap_or("").to_owned();
            let target = parts.next().unwrap_or("").to_owned();
            // A plain-http request through a proxy arrives in absolute form (`http://host:port/?query`).
            let target = match target.strip_prefix("http://").and_then(|rest| rest.find('/').map(|i| &rest[i..])) {
                Some(origin_form) => origin_form.to_owned(),
                None => target,
            };
            let mut headers = Vec::new();
            loop {
                line.clear();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let trimmed = line.trim_end_matches(['\r', '\n']);
                if trimmed.is_empty() {
                    break;
                }
                if let Some((name, value)) = trimmed.split_once(':') {
                    headers.push((name.trim().to_owned(), value.trim().to_owned()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            if stream.read_exact(&mut body).await.is_err() {
                return;
            }
            let (path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
            let query = url::form_urlencoded::parse(raw_query.as_bytes()).into_owned().collect();
            let signature_valid =
                aliyun_verify::verify(&method, path, raw_query, &headers, &body, &self.key_id, &self.secret);

            let (reply, biz_id) = {
                let mut state = self.state.lock().unwrap();
                let reply = if state.strict && !signature_valid {
                    AliyunReply::Error(400, "SignatureDoesNotMatch")
                } else {
                    state.replies.pop_front().unwrap_or(AliyunReply::Ok)
                };
                let biz_id =
                    matches!(reply, AliyunReply::Ok | AliyunReply::Slow(_) | AliyunReply::Truncated).then(|| {
                        state.issued += 1;
                        format!("{}^0", 99_999 + state.issued)
                    });
                state.seen.push(AliyunSeen {
                    method: method.clone(),
                    path: path.to_owned(),
                    raw_query: raw_query.to_owned(),
                    query,
                    headers: headers.clone(),
                    body: body.clone(),
                    signature_valid,
                    biz_id: biz_id.clone(),
                });
                (reply, biz_id)
            };
            let request_id = format!("MOCK-{:04}-REQ", self.sent());
            let ok = |biz_id: &Option<String>| {
                serde_json::json!({"RequestId": request_id, "BizId": biz_id, "Code": "OK", "Message": "OK"}).to_string()
            };
            let json = "application/json;charset=utf-8";
            let (status, content_type, text) = match reply {
                AliyunReply::Drop => return,
                AliyunReply::Ok => (200, json, ok(&biz_id)),
                AliyunReply::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    (200, json, ok(&biz_id))
                }
                AliyunReply::Truncated => {
                    let text = ok(&biz_id);
                    let head =
                        format!("HTTP/1.1 200 OK\r\ncontent-type: {json}\r\ncontent-length: {}\r\n\r\n", text.len());
                    let stream = stream.get_mut();
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&text.as_bytes()[..text.len() / 2]).await;
                    let _ = stream.flush().await;
                    return;
                }
                AliyunReply::Error(status, code) => (
                    status,
                    json,
                    serde_json::json!({"RequestId": request_id, "HostId": "dysmsapi.aliyuncs.com", "Code": code,
                        "Message": format!("mock says {code}"),
                        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}")})
                    .to_string(),
                ),
                AliyunReply::Raw(status, content_type, text) => (status, content_type, text.to_owned()),
            };
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
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
