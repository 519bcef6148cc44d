//! Twilio's Messages API (2010-04-01) wire format: the form body and Basic credentials we send, written the
//! way Logto's Twilio connector writes them (so a connector config pasted into ours sends the same message),
//! and the answers we read back. Answers echo the recipient and the body (the code): never log one whole.

use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;

pub(crate) const CONTENT_TYPE: &str = "application/x-www-form-urlencoded";
/// Asked for explicitly: the path's `.json` already selects JSON, but a proxy's error page then says what it is.
pub(crate) const ACCEPT: &str = "application/json";
/// The answer header naming the request on Twilio's side (the receipt's and the log's request id).
pub(crate) const REQUEST_ID_HEADER: &str = "Twilio-Request-Id";

/// The Messages resource of an account. The SID is percent-encoded as a path segment: config checks its
/// shape, but a stray `/` or `?` must not be able to point the request at another resource.
pub(crate) fn messages_path(account_sid: &str) -> String {
    let mut path = String::from("/2010-04-01/Accounts/");
    for byte in account_sid.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            path.push(byte as char);
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path.push_str("/Messages.json");
    path
}

/// The SMS text of a Logto template with the code put in: [`render`] with Logto's `code` key only (the one
/// value the gateway has for every send).
pub(crate) fn body(content: &str, code: &str) -> String {
    render(content, &[("code", code)])
}

/// `replaceSendMessageHandlebars` of `@logto/connector-kit` 5.x, which Logto's Twilio connector uses:
/// every `{{ key }}` (regex `{{\s*([\w.]+)\s*}}`, any run of JavaScript whitespace inside the braces)
/// whose first dotted segment is a payload key becomes that key's value; a placeholder whose root is not in
/// the payload stays as written; a dotted path below a (string) value is `undefined` in JavaScript and
/// becomes empty. Values are inserted once, never re-scanned. One deliberate difference: JavaScript's `in`
/// also finds `Object.prototype` names (`{{toString}}` would print a function's source); here they stay
/// as written.
pub(crate) fn render(content: &str, payload: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(content.len() + 16);
    let mut rest = content;
    while let Some(start) = rest.find("{{") {
        match placeholder(&rest[start + 2..]) {
            Some((key, len)) => {
                out.push_str(&rest[..start]);
                let whole = &rest[start..start + 2 + len];
                out.push_str(&replacement(key, whole, payload));
                rest = &rest[start + 2 + len..];
            }
            None => {
                // The regex moves on by one character, so `{{{code}}` is `{` and a placeholder.
                out.push_str(&rest[..start + 1]);
                rest = &rest[start + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// JavaScript's `\s` (WhiteSpace and LineTerminator of ECMA-262), not Rust's `char::is_whitespace`: it has
/// U+FEFF and lacks U+0085.
fn js_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\u{FEFF}'
    )
}

/// `[\w.]` without the `u` flag: ASCII letters, digits, `_` and `.`.
fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// What follows a `{{`, matched against `\s*([\w.]+)\s*}}`: the key and the length matched. The two
/// character classes are disjoint and neither holds `}`, so the greedy match is the regex's match.
fn placeholder(after: &str) -> Option<(&str, usize)> {
    let key_start = after.len() - after.trim_start_matches(js_space).len();
    let from_key = &after[key_start..];
    let key_len = from_key.len() - from_key.trim_start_matches(key_char).len();
    if key_len == 0 {
        return None;
    }
    let after_key = &from_key[key_len..];
    let spaces = after_key.len() - after_key.trim_start_matches(js_space).len();
    after_key[spaces..].starts_with("}}").then(|| (&from_key[..key_len], key_start + key_len + spaces + 2))
}

fn replacement<'a>(key: &str, whole: &'a str, payload: &[(&'a str, &'a str)]) -> Cow<'a, str> {
    let root = key.split('.').next().unwrap_or_default();
    match payload.iter().find(|(k, _)| !root.is_empty() && *k == root) {
        None => Cow::Borrowed(whole),
        Some((_, value)) if key == root => Cow::Borrowed(value),
        Some(_) => Cow::Borrowed(""),
    }
}

/// The Messages create body, fields in Logto's order (`To`, `MessagingServiceSid`, `Body`, `RiskCheck`),
/// then our `StatusCallback` when delivery reports are wanted. `RiskCheck` is always sent, `enable` unless
/// the operator disabled it, as Logto does: Twilio's SMS pumping protection stays on by default.
pub(crate) fn form(
    to_e164: &str,
    messaging_service_sid: &str,
    body: &str,
    risk_check_disabled: bool,
    status_callback: Option<&str>,
) -> Vec<u8> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("To", to_e164)
        .append_pair("MessagingServiceSid", messaging_service_sid)
        .append_pair("Body", body)
        .append_pair("RiskCheck", if risk_check_disabled { "disable" } else { "enable" });
    if let Some(url) = status_callback {
        form.append_pair("StatusCallback", url);
    }
    form.finish().into_bytes()
}

/// The `Authorization` header value: HTTP Basic with the Account SID and Auth Token.
pub(crate) fn basic_auth(account_sid: &str, auth_token: &str) -> String {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{account_sid}:{auth_token}"));
    format!("Basic {credentials}")
}

/// The body for dry-run logs and `explain`: the number masked, the text (which holds the code) hidden.
pub(crate) fn redact(body: &[u8]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(body) {
        match key.as_ref() {
            "To" => out.append_pair(&key, &crate::phone::Masked(&value).to_string()),
            "Body" => out.append_pair(&key, "***"),
            _ => out.append_pair(&key, &value),
        };
    }
    out.finish()
}

/// A created Message resource (HTTP 201), the fields the gateway reads. Twilio writes `num_segments` and
/// as strings and `error_code` as a number; each is read whichever way it comes, and a field of an
/// unexpected type reads as absent rather than making the whole answer unreadable.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Message {
    #[serde(default)]
    pub(crate) sid: Option<String>,
    /// `accepted`, `queued`, `sending`, `sent`, ... or, already at creation, `failed`.
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    pub(crate) error_code: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    pub(crate) error_message: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    pub(crate) num_segments: Option<String>,
}

/// Twilio's error answer: `{"code": 21211, "message": "...", "more_info": "https://...", "status": 400}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ApiError {
    /// Absent when the JSON is not Twilio's (a proxy's): then the answer is unreadable, not an error.
    #[serde(default, deserialize_with = "loose")]
    pub(crate) code: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    pub(crate) message: Option<String>,
}

/// A string or a number as text; null, booleans, arrays and objects as absent.
fn loose<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_credentials_match_logto() {
        let sid = "AC0123456789abcdef0123456789abcdef";
        assert_eq!(messages_path(sid), "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json");
        assert_eq!(messages_path("AC/../x?y"), "/2010-04-01/Accounts/AC%2F..%2Fx%3Fy/Messages.json");
        // Buffer.from("ACxx:tok").toString("base64"), as the connector computes it.
        assert_eq!(basic_auth("ACxx", "tok"), "Basic QUN4eDp0b2s=");
    }

    #[test]
    fn form_fields_in_logto_order() {
        let body = form("+15005550006", "MG123", "Your code is 123 456 & more", false, None);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "To=%2B15005550006&MessagingServiceSid=MG123&Body=Your+code+is+123+456+%26+more&RiskCheck=enable"
        );
        let body = form("+15005550006", "MG123", "验证码 1", true, Some("https://gw.example/twilio/status?t=a b"));
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "To=%2B15005550006&MessagingServiceSid=MG123&Body=%E9%AA%8C%E8%AF%81%E7%A0%81+1&RiskCheck=disable\
             &StatusCallback=https%3A%2F%2Fgw.example%2Ftwilio%2Fstatus%3Ft%3Da+b"
        );
    }

    #[test]
    fn redaction_hides_code_and_number() {
        let body = form("+15005550006", "MG123", "Your code is 123456", false, None);
        let shown = redact(&body);
        assert!(!shown.contains("123456") && !shown.contains("5550006"), "{shown}");
        assert!(shown.contains("MessagingServiceSid=MG123") && shown.contains("Body=***"), "{shown}");
    }

    /// The cases of connector-kit 5.1.1's own tests (`replaceSendMessageHandlebars`), where they apply to
    /// flat string values.
    #[test]
    fn handlebars_as_logto_replaces_them() {
        let code = [("code", "123456")];
        assert_eq!(body("Your verification code is {{code}}", "123456"), "Your verification code is 123456");
        assert_eq!(render("Your verification code is {{code}}", &[]), "Your verification code is {{code}}");
        assert_eq!(
            render("Your verification code is {{code}} and {{foo}}", &[("code", "123456"), ("foo", "bar")]),
            "Your verification code is 123456 and bar"
        );
        assert_eq!(
            render("Your verification code is {{code}} and {{foo}}", &code),
            "Your verification code is 123456 and {{foo}}"
        );
        assert_eq!(render("Your verification code is {{     code }}", &code), "Your verification code is 123456");
        assert_eq!(
            render("Your {{ application.name }} sign in verification code is {{ code }}", &code),
            "Your {{ application.name }} sign in verification code is 123456"
        );
    }

    #[test]
    fn handlebars_edge_cases_follow_the_regex() {
        let code = [("code", "123456")];
        // Every occurrence, inserted values never re-scanned.
        assert_eq!(body("{{code}}-{{code}}", "{{code}}"), "{{code}}-{{code}}");
        assert_eq!(body("{{code}}{{code}}", "1"), "11");
        // The match starts at the last `{{` that opens a placeholder.
        assert_eq!(body("{{{code}}}", "1"), "{1}");
        // JavaScript's \s: tab, newline, NBSP, ideographic space, BOM; not NEL (U+0085).
        assert_eq!(body("{{\t code\n}} {{\u{a0}code\u{3000}}} {{\u{feff}code}}", "1"), "1 1 1");
        assert_eq!(body("{{\u{85}code}}", "1"), "{{\u{85}code}}");
        // Anything else inside the braces is no placeholder.
        assert_eq!(
            body("{{ co de }} {{code-x}} {{}} {{ }} {code} {{code}", "1"),
            "{{ co de }} {{code-x}} {{}} {{ }} {code} {{code}"
        );
        assert_eq!(body("{{CODE}}", "1"), "{{CODE}}");
        // A path below a string value is undefined: empty; an empty root never matches.
        assert_eq!(render("[{{code.length}}][{{code.}}][{{.code}}]", &code), "[][][{{.code}}]");
        // Logto's other payload keys go through the same rule.
        assert_eq!(render("{{code}} ({{locale}})", &[("code", "1"), ("locale", "en-US")]), "1 (en-US)");
        // Object.prototype names are not payload keys here (Logto would print a function).
        assert_eq!(render("{{toString}}", &code), "{{toString}}");
        // Multi-byte text around placeholders survives slicing.
        assert_eq!(body("验证码{{code}}，{{ 码 }}", "9"), "验证码9，{{ 码 }}");
    }

    #[test]
    fn reads_a_created_message_and_an_error() {
        // Twilio's documented answer shape, trimmed.
        let created: Message = serde_json::from_str(
            r#"{"account_sid":"ACxx","body":"code 123456","error_code":null,"error_message":null,
                "num_segments":"2","price":null,"price_unit":"USD","sid":"SM1","status":"accepted","to":"+15005550006"}"#,
        )
        .unwrap();
        assert_eq!(created.sid.as_deref(), Some("SM1"));
        assert_eq!(created.status.as_deref(), Some("accepted"));
        assert_eq!(created.num_segments.as_deref(), Some("2"));
        assert_eq!(created.error_code, None);
        let failed: Message = serde_json::from_str(
            r#"{"sid":"SM2","status":"failed","error_code":30450,"num_segments":1,"price":-0.0075}"#,
        )
        .unwrap();
        assert_eq!((failed.error_code.as_deref(), failed.num_segments.as_deref()), (Some("30450"), Some("1")));
        let error: ApiError = serde_json::from_str(
            r#"{"code":21211,"message":"The 'To' number 5551234567 is not a valid phone number.",
                "more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
        )
        .unwrap();
        assert_eq!(error.code.as_deref(), Some("21211"));
        let odd: ApiError = serde_json::from_str(r#"{"code":{"x":1},"message":["a"]}"#).unwrap();
        assert_eq!((odd.code, odd.message), (None, None));
    }
}
