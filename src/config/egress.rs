//! Egress settings of a Tencent account, decided when the config compiles: the HTTP proxy of each endpoint
//! (`tencent.proxy`, else the `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` variables read as curl
//! reads them, through hyper-util's matcher) and the extra trusted roots of `tencent.ca_file`. Messages name
//! keys and variables, never a value (a proxy URL may carry a password).

use super::interp::Env;
use super::model::{Proxy, TrustRoots};
use super::Secret;
use hyper_util::client::proxy::matcher::Matcher;
use sha2::{Digest, Sha256};
use std::path::Path;

/// `tencent.proxy: direct`: no proxy for this account, whatever the environment says.
pub(crate) const DIRECT: &str = "direct";

/// A CA file is read only up to this size.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// The variables consulted, in the order hyper-util's matcher reads them (upper case first).
const VARIABLES: [(&str, &str); 4] = [
    ("HTTPS_PROXY", "https_proxy"),
    ("HTTP_PROXY", "http_proxy"),
    ("ALL_PROXY", "all_proxy"),
    ("NO_PROXY", "no_proxy"),
];

fn first(env: &dyn Env, names: (&'static str, &'static str)) -> Option<(&'static str, String)> {
    [names.0, names.1].into_iter().find_map(|name| env.var(name).filter(|v| !v.is_empty()).map(|v| (name, v)))
}

/// The proxy for an endpoint: the explicit `tencent.proxy` (every endpoint, `NO_PROXY` not consulted), or
/// what the environment says for the endpoint's scheme and host. Err names what is wrong.
pub(crate) fn proxy_for(explicit: Option<&str>, env: &dyn Env, endpoint: &http::Uri) -> Result<Option<Proxy>, String> {
    let (matcher, source) = match explicit.map(str::trim) {
        Some(DIRECT) => return Ok(None),
        Some(url) => {
            if !url.starts_with("http://") {
                return Err("expected an http:// proxy URL such as http://proxy.internal:3128, or direct".into());
            }
            (Matcher::builder().http(url).https(url).build(), "tencent.proxy")
        }
        None => {
            let [https, http, all, no] = VARIABLES.map(|names| first(env, names));
            if https.is_none() && http.is_none() && all.is_none() {
                return Ok(None);
            }
            let source = match (endpoint.scheme_str(), &https, &http) {
                (Some("https"), Some((name, _)), _) | (Some("http"), _, Some((name, _))) => *name,
                _ => all.as_ref().map_or("ALL_PROXY", |(name, _)| name),
            };
            let value = |v: &Option<(&str, String)>| v.as_ref().map(|(_, v)| v.clone()).unwrap_or_default();
            let matcher =
                Matcher::builder().https(value(&https)).http(value(&http)).all(value(&all)).no(value(&no)).build();
            (matcher, source)
        }
    };
    let Some(intercept) = matcher.intercept(endpoint) else {
        // No proxy for this scheme, NO_PROXY lists the host, or the value did not parse: say which.
        return match explicit {
            Some(_) => Err("expected a URL such as http://user:password@proxy.internal:3128".into()),
            None if env_value_unparsable(env, endpoint) => {
                Err(format!("{source} is not a proxy URL such as http://proxy.internal:3128"))
            }
            None => Ok(None),
        };
    };
    if intercept.uri().scheme_str() != Some("http") {
        return Err(format!("{source}: only http:// proxies are supported (CONNECT for https endpoints)"));
    }
    let authorization = intercept.basic_auth().and_then(|v| v.to_str().ok()).map(Secret::new);
    Ok(Some(Proxy { uri: intercept.uri().clone(), authorization, source }))
}

/// Whether the variable that would serve this endpoint is set but is no URL hyper-util can read.
fn env_value_unparsable(env: &dyn Env, endpoint: &http::Uri) -> bool {
    let names = if endpoint.scheme_str() == Some("https") { VARIABLES[0] } else { VARIABLES[1] };
    let Some((_, value)) = first(env, names).or_else(|| first(env, VARIABLES[2])) else { return false };
    if let Some((_, no)) = first(env, VARIABLES[3]) {
        let listed = Matcher::builder().all("http://listed.invalid:1").no(no).build().intercept(endpoint).is_none();
        if listed {
            return false;
        }
    }
    Matcher::builder().all(value).build().intercept(endpoint).is_none()
}

/// Reads and parses `tencent.ca_file` (relative to the config file's folder): PEM certificates, at least one.
pub(crate) fn read_roots(written: &str, base_dir: &Path) -> Result<TrustRoots, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let path = base_dir.join(written);
    let text =
        crate::files::read_text(&path, MAX_CA_FILE_BYTES).map_err(|e| format!("cannot read the CA file: {e}"))?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| "the CA file is not PEM certificates".to_owned())?;
    if certificates.is_empty() {
        return Err("the CA file holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into());
    }
    let mut store = rustls::RootCertStore::empty();
    let (_, rejected) = store.add_parsable_certificates(certificates.iter().cloned());
    if rejected > 0 {
        return Err(format!("{rejected} certificate(s) in the CA file cannot serve as trust anchors"));
    }
    Ok(TrustRoots { path: written.to_owned(), certificates, fingerprint: Sha256::digest(text.as_bytes()).into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const TENCENT: &str = "https://sms.tencentcloudapi.com/";

    #[test]
    fn explicit_proxy_wins_and_hides_its_password() {
        let e = env(&[("HTTPS_PROXY", "http://other:1"), ("NO_PROXY", "tencentcloudapi.com")]);
        let p =
            proxy_for(Some("http://user:pa%20ss@proxy.internal:3128"), &e, &TENCENT.parse().unwrap()).unwrap().unwrap();
        assert_eq!(p.uri, "http://proxy.internal:3128/");
        assert_eq!(p.source, "tencent.proxy");
        // Basic base64("user:pa ss")
        assert_eq!(p.authorization.as_ref().unwrap().expose(), "Basic dXNlcjpwYSBzcw==");
        assert!(!format!("{p:?}").contains("dXNlc"), "{p:?}");
        assert_eq!(proxy_for(Some("direct"), &e, &TENCENT.parse().unwrap()).unwrap(), None);
    }

    #[test]
    fn environment_by_scheme_and_no_proxy() {
        let e = env(&[("https_proxy", "http://tunnel:3128"), ("HTTP_PROXY", "plain:8080")]);
        let p = proxy_for(None, &e, &TENCENT.parse().unwrap()).unwrap().unwrap();
        assert_eq!((p.uri.to_string().as_str(), p.source), ("http://tunnel:3128/", "https_proxy"));
        let p = proxy_for(None, &e, &"http://127.0.0.1:9000/".parse().unwrap()).unwrap().unwrap();
        assert_eq!((p.uri.to_string().as_str(), p.source), ("http://plain:8080/", "HTTP_PROXY"));
        let e = env(&[("HTTPS_PROXY", "http://tunnel:3128"), ("NO_PROXY", ".tencentcloudapi.com")]);
        assert_eq!(proxy_for(None, &e, &TENCENT.parse().unwrap()).unwrap(), None);
        assert_eq!(proxy_for(None, &env(&[]), &TENCENT.parse().unwrap()).unwrap(), None);
    }

    #[test]
    fn unusable_proxies_are_named_not_echoed() {
        let uri: http::Uri = TENCENT.parse().unwrap();
        let e = env(&[("HTTPS_PROXY", "socks5://user:secret@s:1080")]);
        let message = proxy_for(None, &e, &uri).unwrap_err();
        assert!(message.contains("HTTPS_PROXY") && !message.contains("secret"), "{message}");
        let message = proxy_for(Some("https://user:secret@p:1"), &env(&[]), &uri).unwrap_err();
        assert!(!message.contains("secret"), "{message}");
        let message = proxy_for(None, &env(&[("HTTPS_PROXY", "http://bad host:1")]), &uri).unwrap_err();
        assert!(message.contains("HTTPS_PROXY"), "{message}");
    }
}
