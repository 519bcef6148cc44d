//! ACS3-HMAC-SHA256, Aliyun's V3 signature: what the official SDKs (alibabacloud-tea-openapi) sign with by
//! default, as a pure function of (credentials, x-acs-date, nonce, host, parameters). It returns the request
//! exactly as it goes on the wire; callers send those bytes and never rebuild the query after signing.
//!
//! What the SDK sends for SendSms (an RPC call, `POST /`), read from a request it made to a recording server:
//! every parameter in the query string, an empty body (hashed as such in `x-acs-content-sha256`), no
//! content type, and every header it set itself signed: `host`, `x-acs-version`, `x-acs-action`,
//! `user-agent`, `x-acs-date`, `x-acs-signature-nonce`, `accept`, `x-acs-content-sha256`. The SDK also signs
//! `x-acs-credentials-provider` (which credential source it used); that is SDK telemetry and not sent here.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub(crate) const ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// Sent and signed, as the SDK signs its own user agent.
pub(crate) const USER_AGENT: &str = concat!("smsgate/", env!("CARGO_PKG_VERSION"));
const ACCEPT: &str = "application/json";
const METHOD: &str = "POST";
const PATH: &str = "/";

/// RFC 3986: everything but the unreserved characters is escaped (a space is `%20`, never `+`; `*` is
/// `%2A`; `~` stays), as the SDK's `quote(value, safe='~')` does for the canonical query.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// SendSms's parameters, as the SDK's `SendSmsRequest` names them (the query keys in [`SendSms::query`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendSms<'a> {
    /// In Aliyun's format ([`super::api::phone_number`]); several are comma-separated.
    pub(crate) phone_numbers: &'a str,
    pub(crate) sign_name: &'a str,
    pub(crate) template_code: &'a str,
    /// A JSON object of the template's variables ([`super::api::template_param`]).
    pub(crate) template_param: &'a str,
    /// Echoed in the delivery report (`out_id`); not sent when `None`.
    pub(crate) out_id: Option<&'a str>,
}

impl SendSms<'_> {
    /// The query parameters, sorted by key as the canonical query wants them.
    pub(crate) fn query(&self) -> Vec<(&'static str, &str)> {
        let mut query = Vec::with_capacity(5);
        if let Some(out_id) = self.out_id {
            query.push(("OutId", out_id));
        }
        query.push(("PhoneNumbers", self.phone_numbers));
        query.push(("SignName", self.sign_name));
        query.push(("TemplateCode", self.template_code));
        query.push(("TemplateParam", self.template_param));
        query
    }
}

/// A signed SendSms request as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signed {
    /// `/?` then the canonical query (RFC 3986, sorted): the bytes signed are the bytes sent, so no server
    /// can read a value other than the one signed. It holds the number and the code: log it redacted only
    /// ([`super::api::redacted_query`]).
    pub(crate) path_and_query: String,
    /// In the SDK's order, `Authorization` last.
    pub(crate) headers: Vec<(&'static str, String)>,
    /// Empty: SendSms sends everything in the query.
    pub(crate) body: Bytes,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data`, lower-case hex.
pub(crate) fn hash_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A unix timestamp as `x-acs-date`: ISO 8601 UTC to the second (`2024-01-01T00:00:00Z`); Aliyun refuses a
/// date too far from its clock (`InvalidTimeStamp.Expired`).
pub(crate) fn x_acs_date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A fresh `x-acs-signature-nonce`: Aliyun refuses a nonce it saw within 15 minutes (`SignatureNonceUsed`),
/// so each attempt, retries included, takes a new one. 128 random bits, as hex.
pub(crate) fn nonce() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// `value` escaped as the canonical query wants it.
pub(crate) fn encode(value: &str) -> String {
    utf8_percent_encode(value, RFC3986).to_string()
}

/// The canonical query: `key=value` pairs, both escaped, sorted by key, `&`-joined.
pub(crate) fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(String, String)> = params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    sorted.sort_unstable();
    let mut query = String::with_capacity(sorted.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (key, value)) in sorted.iter().enumerate() {
        if i > 0 {
            query.push('&');
        }
        query.push_str(key);
        query.push('=');
        query.push_str(value);
    }
    query
}

/// The canonical request: method, path, canonical query, each signed header as `name:value` (names lower-cased,
/// values trimmed, names sorted) each on its line, a blank line, the signed header names `;`-joined, and the
/// payload hash. Returns it with the `SignedHeaders` list it covers.
pub(crate) fn canonical_request(
    method: &str,
    path: &str,
    canonical_query: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> (String, String) {
    let mut sorted: Vec<(String, &str)> =
        headers.iter().map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim())).collect();
    sorted.sort_unstable();
    let signed = sorted.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(";");
    let mut canonical = format!("{method}\n{path}\n{canonical_query}\n");
    for (name, value) in &sorted {
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(value);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed);
    canonical.push('\n');
    canonical.push_str(payload_hash);
    (canonical, signed)
}

/// The hex signature of a canonical request: HMAC-SHA256 with the secret itself (V3 derives no key) over
/// `ACS3-HMAC-SHA256\n` and the canonical request's hash.
pub(crate) fn signature(secret: &str, canonical_request: &str) -> String {
    let string_to_sign = format!("{ALGORITHM}\n{}", hash_hex(canonical_request.as_bytes()));
    hex::encode(hmac(secret.as_bytes(), string_to_sign.as_bytes()))
}

/// The `Authorization` value; no space after its commas, as the SDK writes it.
pub(crate) fn authorization(key_id: &str, signed_headers: &str, signature: &str) -> String {
    format!("{ALGORITHM} Credential={key_id},SignedHeaders={signed_headers},Signature={signature}")
}

/// Signs one SendSms for `host` (the `Host` header as sent: `dysmsapi.aliyuncs.com`, with `:port` when not
/// the scheme's default). `date` is [`x_acs_date`]'s, `nonce` [`nonce`]'s.
pub(crate) fn send_sms(
    key_id: &str,
    secret: &str,
    host: &str,
    params: &SendSms<'_>,
    date: &str,
    nonce: &str,
) -> Signed {
    sign(key_id, secret, host, USER_AGENT, params, date, nonce)
}

fn sign(
    key_id: &str,
    secret: &str,
    host: &str,
    user_agent: &str,
    params: &SendSms<'_>,
    date: &str,
    nonce: &str,
) -> Signed {
    let body = Bytes::new();
    let payload_hash = hash_hex(&body);
    let query = canonical_query(&params.query());
    let mut headers: Vec<(&'static str, String)> = vec![
        ("host", host.to_owned()),
        ("x-acs-version", super::api::VERSION.to_owned()),
        ("x-acs-action", super::api::ACTION.to_owned()),
        ("user-agent", user_agent.to_owned()),
        ("x-acs-date", date.to_owned()),
        ("x-acs-signature-nonce", nonce.to_owned()),
        ("accept", ACCEPT.to_owned()),
        ("x-acs-content-sha256", payload_hash.clone()),
    ];
    let signed_pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (canonical, signed_headers) = canonical_request(METHOD, PATH, &query, &signed_pairs, &payload_hash);
    let authorization = authorization(key_id, &signed_headers, &signature(secret, &canonical));
    headers.push(("authorization", authorization));
    Signed { path_and_query: format!("{PATH}?{query}"), headers, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_ID: &str = "LTAI5tExampleKeyId";
    const SECRET: &str = "ExampleSecret0123456789abcdefAB";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn header<'a>(signed: &'a Signed, name: &str) -> &'a str {
        signed.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).expect("header present")
    }

    /// Produced by the official SDK (alibabacloud-dysmsapi20170525 4.6.0 over alibabacloud-tea-openapi 0.4.6,
    /// `Client.send_sms`, endpoint `dysmsapi.aliyuncs.com`) sending to a local recording server through an
    /// http proxy, with `Utils.get_timestamp`/`get_nonce` pinned to these values, its user agent replaced by
    /// `smsgate/test`, and a credential without a provider name (so no `x-acs-credentials-provider`). The
    /// query, headers and Authorization below are what the server received.
    #[test]
    fn vector_sdk_send_sms() {
        let params = SendSms {
            phone_numbers: "13800138000",
            sign_name: "阿里云短信测试",
            template_code: "SMS_154950909",
            template_param: r#"{"code":"123456"}"#,
            out_id: None,
        };
        let s = sign(
            KEY_ID,
            SECRET,
            "dysmsapi.aliyuncs.com",
            "smsgate/test",
            &params,
            "2024-01-01T00:00:00Z",
            "3f1c5a0e9b7d4c2a8e6f0b1d2c3a4e5f",
        );
        assert_eq!(
            s.path_and_query,
            "/?PhoneNumbers=13800138000&SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B%E8%AF%95\
             &TemplateCode=SMS_154950909&TemplateParam=%7B%22code%22%3A%22123456%22%7D"
        );
        assert!(s.body.is_empty());
        let names: Vec<&str> = s.headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "host",
                "x-acs-version",
                "x-acs-action",
                "user-agent",
                "x-acs-date",
                "x-acs-signature-nonce",
                "accept",
                "x-acs-content-sha256",
                "authorization"
            ]
        );
        assert_eq!(header(&s, "x-acs-content-sha256"), EMPTY_SHA256);
        assert_eq!(
            header(&s, "authorization"),
            "ACS3-HMAC-SHA256 Credential=LTAI5tExampleKeyId,SignedHeaders=accept;host;user-agent;x-acs-action;\
             x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
             Signature=4fe393fa011022e06d226611cde5dc7ee8a468df567cd8ee8e722f5dbf79042f"
        );
    }

    /// The canonical request of the vector above, as the SDK's `get_authorization` builds it, and its hash.
    #[test]
    fn vector_sdk_canonical_request() {
        let headers = [
            ("host", "dysmsapi.aliyuncs.com"),
            ("x-acs-version", "2017-05-25"),
            ("x-acs-action", "SendSms"),
            ("user-agent", "smsgate/test"),
            ("x-acs-date", "2024-01-01T00:00:00Z"),
            ("x-acs-signature-nonce", "3f1c5a0e9b7d4c2a8e6f0b1d2c3a4e5f"),
            ("accept", "application/json"),
            ("x-acs-content-sha256", EMPTY_SHA256),
        ];
        let query = canonical_query(&[
            ("TemplateParam", r#"{"code":"123456"}"#),
            ("PhoneNumbers", "13800138000"),
            ("TemplateCode", "SMS_154950909"),
            ("SignName", "阿里云短信测试"),
        ]);
        let (canonical, signed) = canonical_request("POST", "/", &query, &headers, EMPTY_SHA256);
        assert_eq!(
            canonical,
            "POST\n/\nPhoneNumbers=13800138000&SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B%E8%AF%95\
             &TemplateCode=SMS_154950909&TemplateParam=%7B%22code%22%3A%22123456%22%7D\n\
             accept:application/json\nhost:dysmsapi.aliyuncs.com\nuser-agent:smsgate/test\nx-acs-action:SendSms\n\
             x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-acs-date:2024-01-01T00:00:00Z\nx-acs-signature-nonce:3f1c5a0e9b7d4c2a8e6f0b1d2c3a4e5f\n\
             x-acs-version:2017-05-25\n\n\
             accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(hash_hex(canonical.as_bytes()), "788e69bc6c3463b827da811e2c9ffd8a626ed60ed2c01be10901ed29cae450f5");
        assert_eq!(
            signed,
            "accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
        );
    }

    /// The SDK's second vector (made as [`vector_sdk_send_sms`]'s): a sign name with a space, `+`, `*` and `~`,
    /// a template parameter with an escaped quote, `/` and a non-ASCII letter, and an OutId with `&` and `=`.
    /// The SDK sent `+` for spaces on the wire (urlencode) but signed `%20`; smsgate sends what it signs.
    #[test]
    fn vector_sdk_edge_characters() {
        let params = SendSms {
            phone_numbers: "85298765432",
            sign_name: "阿里 云+*~短信",
            template_code: "SMS_1",
            template_param: r#"{"code":"a b+c*d~e\"f/é"}"#,
            out_id: Some("order 1+*~/&="),
        };
        let s =
            sign(KEY_ID, SECRET, "dysmsapi.aliyuncs.com", "smsgate/test", &params, "2025-06-30T23:59:59Z", "edge-0001");
        assert_eq!(
            s.path_and_query,
            "/?OutId=order%201%2B%2A~%2F%26%3D&PhoneNumbers=85298765432\
             &SignName=%E9%98%BF%E9%87%8C%20%E4%BA%91%2B%2A~%E7%9F%AD%E4%BF%A1&TemplateCode=SMS_1\
             &TemplateParam=%7B%22code%22%3A%22a%20b%2Bc%2Ad~e%5C%22f%2F%C3%A9%22%7D"
        );
        assert_eq!(
            header(&s, "authorization"),
            "ACS3-HMAC-SHA256 Credential=LTAI5tExampleKeyId,SignedHeaders=accept;host;user-agent;x-acs-action;\
             x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
             Signature=5dbaa0c41e0c21dc5d1d3402a773d11b6d0f8b87182d768cae37e6da8e4a253f"
        );
    }

    #[test]
    fn encoding_is_rfc3986() {
        assert_eq!(encode("a b+c*d~e-f_g.h/i"), "a%20b%2Bc%2Ad~e-f_g.h%2Fi");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode(r#"{"k":"v"}"#), "%7B%22k%22%3A%22v%22%7D");
        assert_eq!(encode(""), "");
    }

    #[test]
    fn canonical_query_sorts_by_escaped_key() {
        assert_eq!(canonical_query(&[("b", "2"), ("a", "1 1"), ("B", "3")]), "B=3&a=1%201&b=2");
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn send_sms_signs_smsgate_user_agent() {
        let params =
            SendSms { phone_numbers: "1", sign_name: "s", template_code: "t", template_param: "{}", out_id: None };
        let s = send_sms(KEY_ID, SECRET, "h", &params, "2024-01-01T00:00:00Z", "n");
        assert_eq!(s, sign(KEY_ID, SECRET, "h", USER_AGENT, &params, "2024-01-01T00:00:00Z", "n"));
        assert_eq!(header(&s, "user-agent"), USER_AGENT);
        // Another nonce, another signature (Aliyun refuses a nonce twice).
        let other = send_sms(KEY_ID, SECRET, "h", &params, "2024-01-01T00:00:00Z", "m");
        assert_ne!(header(&s, "authorization"), header(&other, "authorization"));
    }

    #[test]
    fn dates_are_iso8601_utc() {
        assert_eq!(x_acs_date(1704067200), "2024-01-01T00:00:00Z");
        assert_eq!(x_acs_date(1751327999), "2025-06-30T23:59:59Z");
    }

    #[test]
    fn nonces_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
