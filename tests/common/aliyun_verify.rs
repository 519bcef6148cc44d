//! The mock Aliyun's own check of an ACS3-HMAC-SHA256 (V3) signature, written from Aliyun's signature
//! documentation ("V3版本请求体&签名机制"), not from smsgate's signer: a bug there cannot hide by being
//! repeated here. Percent-decoding and encoding are written out by hand for the same reason.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// Headers Aliyun wants signed whenever they are sent, besides every `x-acs-*` one.
const MUST_SIGN: &[&str] = &["host", "content-type"];
/// `x-acs-*` headers every V3 request carries.
const REQUIRED: &[&str] =
    &["host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"];

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `%XX` decoded and `+` read as a space, as a server reads a query; `None` for a bad escape or bytes that
/// are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// RFC 3986: every byte but `A-Z a-z 0-9 - _ . ~` as `%XX`, upper-case hex.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `headers` carry a valid V3 signature of this request by `access_key_id` with `secret`. `query`
/// is the raw query string as received (without `?`), `headers` every header received, any case.
pub(crate) fn verify(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    access_key_id: &str,
    secret: &str,
) -> bool {
    let header = |name: &str| -> Vec<&str> {
        headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    };
    let [authorization] = header("authorization")[..] else { return false };
    let Some(fields) = authorization.strip_prefix(ALGORITHM).and_then(|rest| rest.strip_prefix(' ')) else {
        return false;
    };
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for field in fields.split(',') {
        match field.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return false,
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature) else {
        return false;
    };
    if credential != access_key_id {
        return false;
    }
    let signed: Vec<&str> = signed_headers.split(';').collect();
    // The list is lower-case, sorted and without repeats, as the canonical form writes it.
    if signed.iter().any(|h| h.is_empty() || *h != h.to_ascii_lowercase()) || signed.windows(2).any(|w| w[0] >= w[1]) {
        return false;
    }
    if REQUIRED.iter().any(|h| !signed.contains(h)) {
        return false;
    }
    let must_be_signed = |name: &str| MUST_SIGN.contains(&name) || name.starts_with("x-acs-");
    if headers.iter().map(|(n, _)| n.to_ascii_lowercase()).any(|n| must_be_signed(&n) && !signed.contains(&n.as_str()))
    {
        return false;
    }

    let payload_hash = sha256_hex(body);
    if header("x-acs-content-sha256") != [payload_hash.as_str()] {
        return false;
    }

    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (decode(k), decode(v)) else { return false };
        pairs.push((encode(&k), encode(&v)));
    }
    pairs.sort();
    let canonical_query = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");

    let mut canonical_headers = String::new();
    for name in &signed {
        let [value] = header(name)[..] else { return false };
        canonical_headers.push_str(&format!("{name}:{}\n", value.trim()));
    }

    let canonical_request =
        format!("{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let string_to_sign = format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes()) == signature
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_ID: &str = "LTAI5tExampleKeyId";
    const SECRET: &str = "ExampleSecret0123456789abcdefAB";

    /// A request the official SDK (alibabacloud-dysmsapi20170525 4.6.0, tea-openapi 0.4.6) sent to a recording
    /// server, date and nonce pinned, user agent `smsgate/test`. It writes spaces as `+` on the wire
    /// (smsgate writes `%20`, also tried below): both must read as the same signed value.
    fn sdk_request() -> (String, Vec<(String, String)>) {
        let query = "OutId=order+1%2B%2A~%2F%26%3D&PhoneNumbers=85298765432\
                     &SignName=%E9%98%BF%E9%87%8C+%E4%BA%91%2B%2A~%E7%9F%AD%E4%BF%A1&TemplateCode=SMS_1\
                     &TemplateParam=%7B%22code%22%3A%22a+b%2Bc%2Ad~e%5C%22f%2F%C3%A9%22%7D";
        let headers = [
            ("Accept-Encoding", "identity"),
            ("host", "dysmsapi.aliyuncs.com"),
            ("x-acs-version", "2017-05-25"),
            ("x-acs-action", "SendSms"),
            ("user-agent", "smsgate/test"),
            ("x-acs-date", "2025-06-30T23:59:59Z"),
            ("x-acs-signature-nonce", "edge-0001"),
            ("accept", "application/json"),
            ("x-acs-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            (
                "Authorization",
                "ACS3-HMAC-SHA256 Credential=LTAI5tExampleKeyId,SignedHeaders=accept;host;user-agent;x-acs-action;\
                 x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
                 Signature=5dbaa0c41e0c21dc5d1d3402a773d11b6d0f8b87182d768cae37e6da8e4a253f",
            ),
            ("Content-Length", "0"),
        ];
        (query.to_owned(), headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }

    #[test]
    fn accepts_the_sdk_vector_and_refuses_tampering() {
        let (query, headers) = sdk_request();
        assert!(verify("POST", "/", &query, &headers, b"", KEY_ID, SECRET));
        // The same values written as smsgate writes them.
        let rfc3986 = query.replace('+', "%20");
        assert!(verify("POST", "/", &rfc3986, &headers, b"", KEY_ID, SECRET));

        assert!(!verify("POST", "/", &query, &headers, b"PhoneNumbers=1", KEY_ID, SECRET), "body");
        assert!(!verify("POST", "/", &query.replace("85298765432", "85298765433"), &headers, b"", KEY_ID, SECRET));
        assert!(!verify("POST", "/", &query, &headers, b"", KEY_ID, "another secret"));
        assert!(!verify("POST", "/", &query, &headers, b"", "another key id", SECRET));
        assert!(!verify("GET", "/", &query, &headers, b"", KEY_ID, SECRET));
        assert!(!verify("POST", "/x", &query, &headers, b"", KEY_ID, SECRET));

        let with = |name: &str, value: &str| {
            let mut h = headers.clone();
            h.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            h.push((name.to_owned(), value.to_owned()));
            h
        };
        assert!(!verify("POST", "/", &query, &with("x-acs-date", "2025-07-01T00:00:00Z"), b"", KEY_ID, SECRET));
        // An x-acs-* header sent but not signed.
        let mut extra = headers.clone();
        extra.push(("x-acs-extra".into(), "1".into()));
        assert!(!verify("POST", "/", &query, &extra, b"", KEY_ID, SECRET));
        // Headers no signature needs may come and go.
        let mut extra = headers.clone();
        extra.push(("connection".into(), "keep-alive".into()));
        assert!(verify("POST", "/", &query, &extra, b"", KEY_ID, SECRET));
        let no_auth: Vec<_> = headers.iter().filter(|(n, _)| n != "Authorization").cloned().collect();
        assert!(!verify("POST", "/", &query, &no_auth, b"", KEY_ID, SECRET));
    }

    #[test]
    fn decodes_and_encodes_as_a_server() {
        assert_eq!(decode("a+b%20c%2B%7e").as_deref(), Some("a b c+~"));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
        assert_eq!(encode("a b+c*d~é"), "a%20b%2Bc%2Ad~%C3%A9");
    }
}
