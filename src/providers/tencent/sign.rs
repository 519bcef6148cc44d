//! TC3-HMAC-SHA256, as a pure function of (credentials, timestamp, host, content type, body bytes).
//! It hashes exactly the bytes that are sent; callers must never re-serialize after signing. The pieces
//! (canonical request, signature) are public so that the verifier of the Tencent-compatible API computes a
//! caller's signature with this same code.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt::Write;

type HmacSha256 = Hmac<Sha256>;

pub(crate) const ALGORITHM: &str = "TC3-HMAC-SHA256";
pub(crate) const SIGNED_HEADERS: &str = "content-type;host";

/// What one signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Tc3Input<'a> {
    /// Tencent service name, `sms` for SendSms.
    pub service: &'a str,
    /// The `Host` header value as sent.
    pub host: &'a str,
    /// The `Content-Type` header value as sent, byte for byte.
    pub content_type: &'a str,
    /// Unix seconds, also sent as `X-TC-Timestamp`.
    pub timestamp: i64,
    pub body: &'a [u8],
}

/// A signature and the intermediate values the published vectors check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tc3Signature {
    pub(crate) payload_hash: String,
    pub(crate) canonical_request_hash: String,
    /// UTC date of the timestamp, `YYYY-MM-DD`.
    pub date: String,
    pub(crate) signing_key: [u8; 32],
    pub signature: String,
    /// The full `Authorization` header value.
    pub authorization: String,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The UTC date of a unix timestamp as `YYYY-MM-DD` (the credential scope's date is UTC, not China time).
pub fn utc_date(timestamp: i64) -> String {
    let date = chrono::DateTime::from_timestamp(timestamp, 0).unwrap_or_default().date_naive();
    date.format("%Y-%m-%d").to_string()
}

/// kSigning = HMAC(HMAC(HMAC("TC3" + key, date), service), "tc3_request").
pub(crate) fn signing_key(secret_key: &str, date: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac(&k_date, service.as_bytes());
    hmac(&k_service, b"tc3_request")
}

/// [`signing_key`], derived once per secret, day and service on each thread: it changes only when the UTC
/// date does, and deriving it is three of the five HMACs of a signature.
fn signing_key_cached(secret_key: &str, date: &str, service: &str) -> [u8; 32] {
    /// Keys held per thread; past this (secrets rotated by many reloads) the cache starts over.
    const MAX_KEYS: usize = 64;
    type Keys = Vec<(String, String, String, [u8; 32])>;
    thread_local! {
        static KEYS: std::cell::RefCell<Keys> = const { std::cell::RefCell::new(Vec::new()) };
    }
    KEYS.with_borrow_mut(|keys| {
        if let Some(entry) = keys.iter_mut().find(|(secret, _, svc, _)| secret == secret_key && svc == service) {
            if entry.1 != date {
                entry.1 = date.to_owned();
                entry.3 = signing_key(secret_key, date, service);
            }
            return entry.3;
        }
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        let key = signing_key(secret_key, date, service);
        keys.push((secret_key.to_owned(), date.to_owned(), service.to_owned(), key));
        key
    })
}

/// The canonical request of a `POST /` with an empty query: each signed header as `name:value` (names and
/// values lower-cased and trimmed, names in ascending order), the signed header names `;`-joined, and the
/// payload hash. Returns the canonical request and the `SignedHeaders` list it covers.
pub(crate) fn canonical_request(headers: &[(&str, &str)], payload_hash: &str) -> (String, String) {
    let mut sorted: Vec<(String, &str)> =
        headers.iter().map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim())).collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut canonical = String::with_capacity(200);
    canonical.push_str("POST\n/\n\n");
    for (name, value) in &sorted {
        canonical.push_str(name);
        canonical.push(':');
        canonical.extend(value.chars().map(|c| c.to_ascii_lowercase()));
        canonical.push('\n');
    }
    let mut signed = String::with_capacity(32);
    for (i, (name, _)) in sorted.iter().enumerate() {
        if i > 0 {
            signed.push(';');
        }
        signed.push_str(name);
    }
    let _ = write!(canonical, "\n{signed}\n{payload_hash}");
    (canonical, signed)
}

/// The hex signature of a canonical request (given by its hash) at `timestamp` for `service`.
pub fn signature(secret_key: &str, service: &str, timestamp: i64, canonical_request_hash: &str) -> String {
    let date = utc_date(timestamp);
    signature_with(&signing_key(secret_key, &date, service), &date, service, timestamp, canonical_request_hash)
}

fn signature_with(key: &[u8; 32], date: &str, service: &str, timestamp: i64, canonical_request_hash: &str) -> String {
    let string_to_sign = format!("{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{canonical_request_hash}");
    hex::encode(hmac(key, string_to_sign.as_bytes()))
}

/// SHA-256 of `data`, lower-case hex (the payload and canonical request hashes).
pub(crate) fn hash_hex(data: &[u8]) -> String {
    sha256_hex(data)
}

/// Signs one `POST /` request.
pub fn sign(secret_id: &str, secret_key: &str, input: &Tc3Input<'_>) -> Tc3Signature {
    let payload_hash = sha256_hex(input.body);
    let (canonical, signed) =
        canonical_request(&[("content-type", input.content_type), ("host", input.host)], &payload_hash);
    debug_assert_eq!(signed, SIGNED_HEADERS);
    let canonical_request_hash = sha256_hex(canonical.as_bytes());
    let date = utc_date(input.timestamp);
    let scope = format!("{date}/{}/tc3_request", input.service);
    let signing_key = signing_key_cached(secret_key, &date, input.service);
    let signature = signature_with(&signing_key, &date, input.service, input.timestamp, &canonical_request_hash);
    let authorization =
        format!("{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}");
    Tc3Signature { payload_hash, canonical_request_hash, date, signing_key, signature, authorization }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_signing_keys_follow_the_date_the_secret_and_the_service() {
        let input = |timestamp, service| Tc3Input {
            service,
            host: "sms.tencentcloudapi.com",
            content_type: "application/json; charset=utf-8",
            timestamp,
            body: b"{}",
        };
        // More secrets than the cache holds (rotated by many reloads): it starts over, keys stay right.
        for round in 0..2 {
            for i in 0..100 {
                let secret = format!("rotated-{i}");
                let signed = sign("AKID", &secret, &input(1_700_000_000, "sms"));
                assert_eq!(signed.signing_key, signing_key(&secret, &utc_date(1_700_000_000), "sms"), "{round} {i}");
            }
        }
        // The same thread signs across midnight UTC, with two secrets and two services, each twice.
        for (timestamp, service) in [(1_700_000_000, "sms"), (1_700_000_000 + 86_400, "sms"), (1_700_000_000, "cvm")] {
            for secret in ["secret-a", "secret-b", "secret-a"] {
                let signed = sign("AKID", secret, &input(timestamp, service));
                assert_eq!(signed.signing_key, signing_key(secret, &utc_date(timestamp), service));
            }
        }
    }

    #[test]
    fn vector_v1_tencent_doc_cvm() {
        let body = br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let s = sign(
            "AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******",
            "Gu5t9xGARNpq86cd98joQYCN3*******",
            &Tc3Input {
                service: "cvm",
                host: "cvm.tencentcloudapi.com",
                content_type: "application/json; charset=utf-8",
                timestamp: 1551113065,
                body,
            },
        );
        assert_eq!(s.payload_hash, "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064");
        assert_eq!(s.canonical_request_hash, "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031");
        assert_eq!(s.signature, "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c");
        assert_eq!(s.date, "2019-02-25");
    }

    #[test]
    fn vector_v2_sms() {
        let body = r#"{"PhoneNumberSet":["+8613800000000"],"SmsSdkAppId":"1400006666","SignName":"腾讯云","TemplateId":"1110","TemplateParamSet":["4370"]}"#;
        let s = sign(
            "AKIDtest",
            "testkey",
            &Tc3Input {
                service: "sms",
                host: "sms.tencentcloudapi.com",
                content_type: "application/json",
                timestamp: 1700000000,
                body: body.as_bytes(),
            },
        );
        assert_eq!(s.payload_hash, "0a9983fba553479a82f97f0521d99ba81258f3f517395ea5e2398bf93575543e");
        assert_eq!(s.canonical_request_hash, "c42614fc4830a2390ae5958f163206adeb80f971fa67105ea120e7c014ae3345");
        assert_eq!(s.signature, "e4d8c980e383e91faeff0785ac2048134658bdd0c3743ce9c9fdc9b9f50ab69b");
        assert_eq!(
            s.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDtest/2023-11-14/sms/tc3_request, SignedHeaders=content-type;host, \
             Signature=e4d8c980e383e91faeff0785ac2048134658bdd0c3743ce9c9fdc9b9f50ab69b"
        );
    }

    #[test]
    fn vector_v3_as_logto_signs() {
        let body = r#"{"SmsSdkAppId":"1400006666","SignName":"腾讯云","TemplateId":"1110","TemplateParamSet":["123456"],"PhoneNumberSet":["8613800138000"]}"#;
        assert_eq!(body.len(), 136);
        let s = sign(
            "AKIDEXAMPLE",
            "SECRETEXAMPLE",
            &Tc3Input {
                service: "sms",
                host: "sms.tencentcloudapi.com",
                content_type: "application/json; charset=utf-8",
                timestamp: 1704164645,
                body: body.as_bytes(),
            },
        );
        assert_eq!(s.payload_hash, "65ad383c1fcc138135961b985a36d90a4760c57b0a44cc8e28d6ec87e5536c1f");
        assert_eq!(hex::encode(s.signing_key), "aed34a292f46f3810157b5519555c47913c47eea498b2e5d81fa9aea281059ce");
        assert_eq!(s.signature, "8f52bd77b6b354623d3f380e911bee44f3414e56b79e1ee5033ed2e13ac284e5");
    }

    #[test]
    fn credential_date_is_utc_not_china_time() {
        // 2024-01-01 23:30 UTC is already 2024-01-02 in China; the scope keeps the UTC date.
        assert_eq!(utc_date(1704151800), "2024-01-01");
    }
}
