//! What a mock Twilio Messages API checks in each request, written apart from smsgate's code (its own form
//! decoder, base64 from the crate only): a test that graded the gateway with the gateway's encoder would
//! pass whatever the encoder wrote.

use base64::Engine as _;

/// Whether `header` is HTTP Basic (scheme case-insensitive, RFC 7617) with exactly `account_sid:auth_token`.
pub(crate) fn check_basic_auth(header: &str, account_sid: &str, auth_token: &str) -> bool {
    let Some((scheme, encoded)) = header.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    match base64::engine::general_purpose::STANDARD.decode(encoded.trim()) {
        Ok(decoded) => decoded == format!("{account_sid}:{auth_token}").as_bytes(),
        Err(_) => false,
    }
}

/// An `application/x-www-form-urlencoded` body as its pairs, in order, decoded by hand (WHATWG
/// urlencoded parsing: `&`-separated, empty pieces skipped, `+` a space, `%XX` a byte, a malformed `%` kept,
/// invalid UTF-8 replaced).
pub(crate) fn decode_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|b| *b == b'=') {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &b""[..]),
            };
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(input: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => match (input.get(i + 1).copied().and_then(hex), input.get(i + 2).copied().and_then(hex)) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn twilio_verify_decodes_and_checks_credentials() {
    // The body smsgate sends for Logto's default template, as Logto's connector (URLSearchParams) writes it.
    let body = b"To=%2B15005550006&MessagingServiceSid=MG0123&Body=Your+code+is+123456.+%E9%AA%8C&RiskCheck=enable";
    assert_eq!(
        decode_form(body),
        [
            ("To", "+15005550006"),
            ("MessagingServiceSid", "MG0123"),
            ("Body", "Your code is 123456. 验"),
            ("RiskCheck", "enable")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(
        decode_form(b"a=%2&&b&c=%zz%4"),
        [("a", "%2"), ("b", ""), ("c", "%zz%4")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert!(decode_form(b"").is_empty());

    // Buffer.from("ACxx:tok").toString("base64") = QUN4eDp0b2s=
    assert!(check_basic_auth("Basic QUN4eDp0b2s=", "ACxx", "tok"));
    assert!(check_basic_auth("basic QUN4eDp0b2s=", "ACxx", "tok"));
    assert!(!check_basic_auth("Basic QUN4eDp0b2s=", "ACxx", "tok2"));
    assert!(!check_basic_auth("Bearer QUN4eDp0b2s=", "ACxx", "tok"));
    assert!(!check_basic_auth("Basic !!!", "ACxx", "tok"));
    assert!(!check_basic_auth("", "ACxx", "tok"));
}
