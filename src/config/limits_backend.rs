//! `limits_backend`, checked: memory, or Redis as one node (`url`), a Cluster (`cluster`, seed nodes) or a
//! Sentinel-watched primary (`sentinel`), exactly one of them, each over TCP (`redis://`) or TLS (`rediss://`)
//! with an optional CA (`tls.ca_file`), and the `key` numbers are hashed under in Redis keys (required: every
//! replica must use the same one, and it must be nobody's credential). Messages name keys, never a URL (URLs
//! may carry passwords) nor a key.

use super::check::{Compiler, REDIS_TIMEOUT_RANGE};
use super::model::{LimitsBackend, OnError, RedisConnect, RedisTarget};
use super::raw::{RawLimitsBackend, Scalar};
use super::Secret;
use redis::{ConnectionAddr, IntoConnectionInfo};
use std::path::Path;
use std::time::Duration;

/// Where Redis is when `kind: redis` names no node.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Shortest `limits_backend.key`: 32 characters (from `openssl rand -hex 16` and up).
const MIN_STORAGE_KEY_LEN: usize = 32;

pub(super) fn compile_backend(c: &mut Compiler, raw: &RawLimitsBackend, base_dir: &Path) -> LimitsBackend {
    let kind = raw.kind.as_ref().and_then(|k| c.text("limits_backend.kind", k));
    match kind.as_deref() {
        None | Some("memory") => {
            let set = [
                ("url", raw.url.is_some()),
                ("cluster", raw.cluster.is_some()),
                ("sentinel", raw.sentinel.is_some()),
                ("tls", raw.tls.is_some()),
                ("on_error", raw.on_error.is_some()),
                ("timeout", raw.timeout.is_some()),
                ("key", raw.key.is_some()),
            ];
            for (key, _) in set.iter().filter(|(_, set)| *set) {
                c.problem(format!("limits_backend.{key}"), "applies to kind: redis only");
            }
            LimitsBackend::Memory
        }
        Some("redis") => {
            let connect = compile_connect(c, raw, base_dir);
            let on_error = match raw.on_error.as_ref().and_then(|s| c.text("limits_backend.on_error", s)).as_deref() {
                None | Some("local") => OnError::Local,
                Some("allow") => OnError::Allow,
                Some("deny") => OnError::Deny,
                Some(_) => {
                    c.problem("limits_backend.on_error", "expected local, allow or deny");
                    OnError::Local
                }
            };
            let timeout = c.duration(
                "limits_backend.timeout",
                raw.timeout.as_ref(),
                Duration::from_millis(50),
                REDIS_TIMEOUT_RANGE,
            );
            let key = storage_key(c, raw.key.as_ref());
            LimitsBackend::Redis { connect, on_error, timeout, key }
        }
        Some(_) => {
            c.problem("limits_backend.kind", "expected memory or redis");
            LimitsBackend::Memory
        }
    }
}

/// `limits_backend.key`: required with `kind: redis` (numbers in Redis keys are hashed under it; replicas
/// sharing a Redis must share it), at least 32 characters without spaces.
fn storage_key(c: &mut Compiler, raw: Option<&Scalar>) -> Secret {
    let Some(raw) = raw else {
        c.problem(
            "limits_backend.key",
            format!(
                "required with kind: redis: the key numbers are hashed under in Redis keys, the same on every \
                 replica ({MIN_STORAGE_KEY_LEN}+ random characters, e.g. key: ${{SMSGATE_STORAGE_KEY}} with the \
                 output of `openssl rand -hex 32`)"
            ),
        );
        return Secret::new(String::new());
    };
    let Some(text) = c.required("limits_backend.key", raw) else { return Secret::new(String::new()) };
    if text.len() < MIN_STORAGE_KEY_LEN || text.chars().any(char::is_whitespace) {
        c.problem("limits_backend.key", format!("needs at least {MIN_STORAGE_KEY_LEN} characters and no spaces"));
    }
    Secret::new(text)
}

/// `limits_backend.key` is the deployment's own: not a tenant's provider secret (a provider's key rotates, and
/// whoever holds it could then name the numbers in Redis) nor a tenant token.
pub(super) fn check_storage_key_is_no_credential(
    c: &mut Compiler,
    backend: &LimitsBackend,
    tenants: &[Option<std::sync::Arc<super::model::Tenant>>],
    tokens: &super::tokens::TokenTable,
) {
    let LimitsBackend::Redis { key, .. } = backend else { return };
    let key = key.expose();
    let secret = tenants.iter().flatten().any(|t| t.provider_secrets().any(|s| s == key));
    if !key.is_empty() && (secret || tokens.lookup(key).is_some()) {
        c.problem("limits_backend.key", "must be the deployment's own key, not a tenant's provider secret or token");
    }
}

/// One URL, checked: parses, `redis://` or `rediss://` (or a unix socket where `unix` allows it). Returns
/// whether it is TLS.
fn check_url(c: &mut Compiler, path: &str, url: &str, unix: bool) -> Option<bool> {
    // Never echo the URL: it may carry a password.
    let expected = "expected a URL like redis://127.0.0.1:6379 or rediss://…";
    let Ok(info) = url.into_connection_info() else {
        c.problem(path, expected);
        return None;
    };
    match info.addr() {
        ConnectionAddr::Tcp(..) if url.starts_with("redis://") => Some(false),
        ConnectionAddr::TcpTls { .. } if url.starts_with("rediss://") => Some(true),
        ConnectionAddr::Unix(_) if unix => Some(false),
        _ => {
            c.problem(path, expected);
            None
        }
    }
}

fn urls(c: &mut Compiler, path: &str, raw: &[Scalar]) -> (Vec<Secret>, Vec<bool>) {
    if raw.is_empty() {
        c.problem(path, "must name at least one node");
    }
    let (mut secrets, mut tls) = (Vec::new(), Vec::new());
    for (i, url) in raw.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if let Some(url) = c.required(&at, url) {
            if let Some(is_tls) = check_url(c, &at, &url, false) {
                tls.push(is_tls);
            }
            secrets.push(Secret::new(url));
        }
    }
    if tls.iter().any(|&t| t) && !tls.iter().all(|&t| t) {
        c.problem(path, "mixes redis:// and rediss://: use one scheme for every node");
    }
    (secrets, tls)
}

fn compile_connect(c: &mut Compiler, raw: &RawLimitsBackend, base_dir: &Path) -> RedisConnect {
    let given = [raw.url.is_some(), raw.cluster.is_some(), raw.sentinel.is_some()].iter().filter(|&&g| g).count();
    if given > 1 {
        c.problem("limits_backend", "give exactly one of url, cluster and sentinel");
    }
    let (target, tls) = if let Some(cluster) = &raw.cluster {
        let (nodes, tls) = urls(c, "limits_backend.cluster", cluster);
        (RedisTarget::Cluster(nodes), tls)
    } else if let Some(sentinel) = &raw.sentinel {
        let master = c.required("limits_backend.sentinel.master", &sentinel.master).unwrap_or_default();
        let (nodes, tls) = urls(c, "limits_backend.sentinel.nodes", &sentinel.nodes);
        let username = sentinel.username.as_ref().and_then(|u| c.required("limits_backend.sentinel.username", u));
        let password =
            sentinel.password.as_ref().and_then(|p| c.required("limits_backend.sentinel.password", p)).map(Secret::new);
        (RedisTarget::Sentinel { master, nodes, username, password }, tls)
    } else {
        let url = match &raw.url {
            Some(url) => c.required("limits_backend.url", url),
            None => Some(DEFAULT_URL.to_owned()),
        };
        let tls = url.as_deref().and_then(|u| check_url(c, "limits_backend.url", u, true));
        (RedisTarget::Node(Secret::new(url.unwrap_or_default())), tls.into_iter().collect())
    };
    let ca_pem = raw.tls.as_ref().and_then(|t| {
        let written = c.required("limits_backend.tls.ca_file", &t.ca_file)?;
        if !tls.iter().any(|&t| t) {
            c.problem("limits_backend.tls", "applies to rediss:// URLs only");
        }
        match super::egress::read_roots(&written, base_dir) {
            Ok(roots) => Some(pem(&roots.certificates)),
            Err(message) => {
                c.problem("limits_backend.tls.ca_file", message);
                None
            }
        }
    });
    RedisConnect { target, ca_pem }
}

/// DER certificates as PEM, the form the `redis` crate reads.
fn pem(certificates: &[rustls::pki_types::CertificateDer<'static>]) -> Vec<u8> {
    use base64::Engine;
    let mut out = String::new();
    for der in certificates {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        for line in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}
