//! `X-Twilio-Signature` on the status callbacks Twilio posts to us: base64(HMAC-SHA1(auth token, URL + each
//! POST parameter's name and value, sorted)), as the `twilio` package's `RequestValidator` (9.13.0) computes
//! and checks it, matched here byte for byte. A pure function of (token, URL, parameters): the HTTP layer
//! hands in the URL Twilio called (as configured in `StatusCallback`) and the decoded form.
//!
//! Supported: form bodies (`application/x-www-form-urlencoded`) signed with the account's Auth Token,
//! HMAC-SHA1. Refused, with a reason, rather than accepted unchecked: a URL carrying `bodySHA256` (Twilio's
//! JSON-body webhooks, whose body hash is not checked here). Not handled here: the SharedKey signatures
//! (`X-Twilio-Webhooks-Signature-Settings`, HMAC-SHA256); a request carrying that header is checked as
//! HMAC-SHA1 with the Auth Token and fails.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;

/// The signature Twilio sends for a POST of `params` to `url`. Parameters are taken in the package's order:
/// names sorted, and under a name its distinct values sorted (how it reads a multi-valued form, `getall`);
/// a pair sent twice counts once. Sorting is by code point, which is UTF-8 byte order.
pub(crate) fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    let mut pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.sort_unstable();
    pairs.dedup();
    for (name, value) in pairs {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `header` is Twilio's signature of this callback ([`check`] without the reason).
#[cfg(test)]
pub(crate) fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    check(auth_token, url, params, header).is_ok()
}

/// Checks a callback's signature as `RequestValidator.validate` does: Twilio signs the URL sometimes with
/// and sometimes without its port, so the signature is checked against the URL with any port removed and
/// with the scheme's standard port added when none is written (443 for https, else 80), both in Python's
/// `urlparse(...).geturl()` form (scheme lower-cased, an empty `?` or `#` dropped). Both are computed and
/// compared in constant time. The `Err` is a stable reason for the log.
pub(crate) fn check(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> Result<(), &'static str> {
    if header.is_empty() {
        return Err("missing signature");
    }
    let parsed = Url::parse(url).ok_or("callback URL not absolute or its port unreadable")?;
    if parsed.has_body_hash() {
        return Err("bodySHA256 (JSON body) signatures are not supported");
    }
    let without_port = signature(auth_token, &parsed.without_port(), params);
    let with_port = signature(auth_token, &parsed.with_port(), params);
    let header = header.as_bytes();
    let matched = without_port.as_bytes().ct_eq(header) | with_port.as_bytes().ct_eq(header);
    if bool::from(matched) {
        Ok(())
    } else {
        Err("signature mismatch")
    }
}

/// A URL split as Python's `urlparse` splits it, just enough to rebuild it as `remove_port` and `add_port`
/// of the package do. One difference, where the package's `netloc.split(":")[0]` cuts a host it did not
/// expect: a port is removed from the host alone, so `user:pw@host:8443` keeps its user info and `[::1]:8443`
/// its brackets (the package would sign `user` or `[`, which no genuine callback matches).
#[derive(Debug)]
struct Url<'a> {
    scheme: String,
    /// `userinfo@host[:port]` as written.
    netloc: &'a str,
    /// `userinfo@host`, when the port is one Python's `uri.port` reads as a port (a non-zero number): only
    /// then is a port removed, or not added. An empty port (`host:`) or `:0` stays as written and gets the
    /// standard one appended, as in the package.
    without_port: Option<&'a str>,
    path: &'a str,
    query: &'a str,
    fragment: &'a str,
}

impl<'a> Url<'a> {
    /// `None` when there is no `scheme://` or when Python's `uri.port` would raise (a port that is not a
    /// number of 0..=65535): `RequestValidator.validate` throws there, so nothing verifies.
    fn parse(url: &'a str) -> Option<Url<'a>> {
        let (scheme, rest) = url.split_once("://")?;
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
            return None;
        }
        let netloc_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (netloc, tail) = rest.split_at(netloc_end);
        let (tail, fragment) = tail.split_once('#').unwrap_or((tail, ""));
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let host_start = netloc.rfind('@').map_or(0, |at| at + 1);
        let hostport = &netloc[host_start..];
        // A bracketed IPv6 host keeps its colons; the port follows the `]`.
        let colon = match hostport.rfind(']') {
            Some(close) => hostport[close..].find(':').map(|i| close + i),
            None => hostport.find(':'),
        };
        let without_port = match colon {
            None => None,
            Some(i) => match &hostport[i + 1..] {
                "" => None,
                p if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u32>() {
                    Ok(0) => None,
                    Ok(n) if n <= 65535 => Some(&netloc[..host_start + i]),
                    _ => return None,
                },
                _ => return None,
            },
        };
        Some(Url { scheme: scheme.to_ascii_lowercase(), netloc, without_port, path, query, fragment })
    }

    /// Twilio's JSON-body webhooks put the body's hash in the query.
    fn has_body_hash(&self) -> bool {
        form_urlencoded::parse(self.query.as_bytes()).any(|(k, _)| k == "bodySHA256")
    }

    /// `geturl()`: an empty `?` or `#` is dropped.
    fn rebuild(&self, netloc: &str) -> String {
        let mut url = format!("{}://{netloc}{}", self.scheme, self.path);
        if !self.query.is_empty() {
            url.push('?');
            url.push_str(self.query);
        }
        if !self.fragment.is_empty() {
            url.push('#');
            url.push_str(self.fragment);
        }
        url
    }

    /// `remove_port`.
    fn without_port(&self) -> String {
        self.rebuild(self.without_port.unwrap_or(self.netloc))
    }

    /// `add_port`: the scheme's standard port appended when there is none.
    fn with_port(&self) -> String {
        if self.without_port.is_some() {
            return self.rebuild(self.netloc);
        }
        let standard = if self.scheme == "https" { "443" } else { "80" };
        self.rebuild(&format!("{}:{standard}", self.netloc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn status_callback() -> Vec<(String, String)> {
        [
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("MessageStatus", "delivered"),
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("To", "+15005550006"),
            ("ErrorCode", ""),
            ("Body", "é 验证码 a+b&c=d"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Twilio's documented example (https://www.twilio.com/docs/usage/security), as the `twilio` package
    /// 9.13.0 computes it: `RequestValidator("12345").compute_signature(URL, dict(params()))`.
    #[test]
    fn twilio_documented_vector() {
        assert_eq!(signature(TOKEN, URL, &params()), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify(TOKEN, URL, &params(), "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
    }

    /// Produced by tests/python/twilio_sign.py (the `twilio` package 9.13.0's `compute_signature`) with
    /// `{"url": "https://gw.example:8443/twilio/status?tenant=acme", "params": <status_callback()>,
    /// "auth_token": "tok-é"}`: a port, non-ASCII values and token, reserved characters, an empty value.
    #[test]
    fn python_package_vector() {
        let url = "https://gw.example:8443/twilio/status?tenant=acme";
        assert_eq!(signature("tok-é", url, &status_callback()), "9X0IcsPVHSyCRpsKJftcFGkuAzc=");
        assert!(verify("tok-é", url, &status_callback(), "9X0IcsPVHSyCRpsKJftcFGkuAzc="));
    }

    #[test]
    fn tampering_is_refused() {
        let good = signature(TOKEN, URL, &params());
        let mut changed = params();
        changed[2].1 = "1235".into();
        assert_eq!(check(TOKEN, URL, &changed, &good), Err("signature mismatch"));
        let mut added = params();
        added.push(("Extra".into(), String::new()));
        assert!(!verify(TOKEN, URL, &added, &good));
        assert!(!verify(TOKEN, URL, &params()[..4], &good), "a parameter dropped");
        assert!(!verify(TOKEN, "https://mycompany.com/myapp.php?foo=1&bar=3", &params(), &good));
        assert!(!verify(TOKEN, "http://mycompany.com/myapp.php?foo=1&bar=2", &params(), &good));
        assert!(!verify("12346", URL, &params(), &good));
        assert_eq!(check(TOKEN, URL, &params(), ""), Err("missing signature"));
        assert!(!verify(TOKEN, URL, &params(), &good[..good.len() - 1]));
        assert!(!verify(TOKEN, URL, &params(), &format!("{good} ")));
    }

    #[test]
    fn order_and_repeats_follow_the_package() {
        let good = signature(TOKEN, URL, &params());
        let mut reversed = params();
        reversed.reverse();
        assert!(verify(TOKEN, URL, &reversed, &good), "the order sent does not matter");
        let mut twice = params();
        twice.push(twice[0].clone());
        assert!(verify(TOKEN, URL, &twice, &good), "a pair sent twice counts once");
        // Distinct values under one name: each, sorted (`b` before `a` sent, `a` before `b` signed).
        let multi = |vals: [&str; 2]| vals.iter().map(|v| ("K".to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(signature(TOKEN, "u", &multi(["b", "a"])), signature(TOKEN, "u", &multi(["a", "b"])));
        assert_eq!(signature(TOKEN, "u", &multi(["a", "b"])), signature(TOKEN, "uKaKb", &[]));
    }

    #[test]
    fn port_variants() {
        let plain = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let with_443 = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let with_1234 = "https://mycompany.com:1234/myapp.php?foo=1&bar=2";
        // Twilio signed the URL with the standard port; we were configured without it, and the reverse.
        assert!(verify(TOKEN, plain, &params(), &signature(TOKEN, with_443, &params())));
        assert!(verify(TOKEN, with_443, &params(), &signature(TOKEN, plain, &params())));
        // Any written port may be dropped (as the package does), but a standard one is added only to none.
        assert!(verify(TOKEN, with_1234, &params(), &signature(TOKEN, plain, &params())));
        assert!(verify(TOKEN, with_1234, &params(), &signature(TOKEN, with_1234, &params())));
        assert!(!verify(TOKEN, plain, &params(), &signature(TOKEN, with_1234, &params())));
        assert!(!verify(
            TOKEN,
            with_443,
            &params(),
            &signature(TOKEN, "https://mycompany.com:80/myapp.php?foo=1&bar=2", &params())
        ));
        let http = "http://gw.example/cb";
        assert!(verify(TOKEN, http, &[], &signature(TOKEN, "http://gw.example:80/cb", &[])));
        assert!(!verify(TOKEN, http, &[], &signature(TOKEN, "http://gw.example:443/cb", &[])));
        // IPv6 hosts keep their colons (the package would cut `[::1]:8443` to `[`: see `Url`).
        let v6 = "https://[::1]:8443/cb";
        assert!(verify(TOKEN, v6, &[], &signature(TOKEN, "https://[::1]/cb", &[])));
        assert!(verify(TOKEN, "https://[::1]/cb", &[], &signature(TOKEN, "https://[::1]:443/cb", &[])));
    }

    #[test]
    fn url_forms_as_python_rebuilds_them() {
        let sig = signature(TOKEN, "https://gw.example/cb", &[]);
        assert!(verify(TOKEN, "HTTPS://gw.example/cb?#", &[], &sig), "scheme lower-cased, empty ? and # dropped");
        // An empty port or :0 is no port to Python, yet stays written: `host:` and `host::443` are signed.
        assert!(!verify(TOKEN, "https://gw.example:/cb", &[], &sig));
        assert!(verify(TOKEN, "https://gw.example:/cb", &[], &signature(TOKEN, "https://gw.example::443/cb", &[])));
        assert!(verify(TOKEN, "https://gw.example:0/cb", &[], &signature(TOKEN, "https://gw.example:0/cb", &[])));
        // User info is kept when the port goes (where the package would keep only the user name).
        let creds = "https://u:p@gw.example:8443/cb";
        assert!(verify(TOKEN, creds, &[], &signature(TOKEN, "https://u:p@gw.example/cb", &[])));
        for bad in ["gw.example/cb", "https://gw.example:x/cb", "https://gw.example:70000/cb", "://x/"] {
            assert_eq!(check(TOKEN, bad, &[], &sig), Err("callback URL not absolute or its port unreadable"), "{bad}");
        }
    }

    #[test]
    fn json_body_webhooks_are_refused_not_skipped() {
        let url = "https://gw.example/cb?bodySHA256=0a1b";
        let sig = signature(TOKEN, url, &[]);
        assert_eq!(check(TOKEN, url, &[], &sig), Err("bodySHA256 (JSON body) signatures are not supported"));
    }
}
