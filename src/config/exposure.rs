//! The part of `compile` that refuses configs which would compile into something weaker than they read: one
//! credential standing for two things (a Supabase secret shared by tenants, an SDK client key equal to a
//! real Tencent key, a token or an admin token, a status secret equal to a token), a webhook URL whose
//! password would silently never be sent or whose host is a link-local or cloud-metadata address, an
//! endpoint that would carry real sends over plain http off the host, and a door's usage that resolves to
//! no template. Each has an explicit allow where a legitimate use exists. Messages name keys, never values.

use super::model::{Tenant, GENERIC_USAGE};
use super::raw::RawConfig;
use super::tokens::TokenTable;
use std::net::IpAddr;
use std::sync::Arc;

/// Cloud instance-metadata hosts reachable by name (their addresses are link-local, or, for Alibaba Cloud,
/// 100.100.100.200).
const METADATA_HOSTS: [&str; 3] = ["metadata.google.internal", "metadata.tencentyun.com", "metadata.azure.internal"];
const METADATA_ADDRESSES: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::new(100, 100, 100, 200)),
    // AWS IMDS over IPv6.
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// A link-local or cloud-metadata host: a receiver there is the cloud's metadata service, not a webhook.
fn is_link_local(host: &url::Host<&str>) -> bool {
    let ip = match host {
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            return METADATA_HOSTS.contains(&name.as_str());
        }
        url::Host::Ipv4(v4) => IpAddr::V4(*v4),
        url::Host::Ipv6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(*v6), IpAddr::V4),
    };
    METADATA_ADDRESSES.contains(&ip)
        || match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        }
}

/// A loopback host: plain http to it never leaves the machine (a local mock, a TLS-originating sidecar).
fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(v4) => v4.is_loopback(),
        url::Host::Ipv6(v6) => v6.is_loopback(),
    }
}

fn problem(problems: &mut Vec<(String, String)>, path: impl Into<String>, message: impl Into<String>) {
    problems.push((path.into(), message.into()));
}

/// The checks across tenants and credentials; `tenants` is aligned with `raw.tenants`.
pub(super) fn check(
    problems: &mut Vec<(String, String)>,
    raw: &RawConfig,
    tenants: &[Option<Arc<Tenant>>],
    tokens: &TokenTable,
    admin_tokens: &TokenTable,
) {
    let compiled = raw.tenants.iter().zip(tenants).filter_map(|((name, raw), t)| Some((name, raw, t.as_ref()?)));
    let compiled: Vec<_> = compiled.collect();
    let names: Vec<&str> = raw.tenants.keys().map(String::as_str).collect();
    for (i, (name, raw_tenant, tenant)) in compiled.iter().enumerate() {
        let path = format!("tenants.{name}");
        // A Supabase secret verifies a hook for whichever tenant's path it is posted to: one per tenant.
        if let Some(hook) = &tenant.supabase {
            let shared = compiled[..i].iter().find(|(_, _, other)| {
                other.supabase.as_ref().is_some_and(|o| o.keys.iter().any(|k| hook.keys.contains(k)))
            });
            if let Some((other, _, _)) = shared {
                problem(
                    problems,
                    format!("{path}.supabase.secret"),
                    format!("this secret is already used by tenant {other}"),
                );
            }
        }
        for (k, client) in tenant.sdk_clients.iter().enumerate() {
            let key = client.secret_key.expose();
            let real = compiled.iter().find(|(_, _, t)| t.provider_secrets().any(|s| s == key));
            let what = if let Some((owner, _, _)) = real {
                Some(format!("tenant {owner}'s real provider secret"))
            } else if let Some(owner) = tokens.lookup(key) {
                Some(format!("a token of tenant {}", names.get(owner).unwrap_or(&"?")))
            } else {
                admin_tokens.lookup(key).map(|_| "an admin token".to_owned())
            };
            if let Some(what) = what {
                problem(problems, format!("{path}.sdk_clients[{k}].secretKey"), format!("must differ from {what}"));
            }
        }
        for (provider, section) in raw_tenant.provider_sections() {
            let Some(secret) = section.status_secret else { continue };
            let what = if admin_tokens.lookup(&secret.0).is_some() {
                Some("an admin token".to_owned())
            } else {
                tokens.lookup(&secret.0).map(|owner| format!("a token of tenant {}", names.get(owner).unwrap_or(&"?")))
            };
            if let Some(what) = what {
                // The status secret travels in a URL path (proxies log paths): it must open nothing else.
                problem(problems, format!("{path}.{provider}.status_secret"), format!("must differ from {what}"));
            }
        }
        if let (Some(webhook), Some(raw_webhook)) = (&tenant.webhook, &raw_tenant.webhook) {
            let url = url::Url::parse(&webhook.url.to_string()).ok();
            let link_local = url.as_ref().and_then(url::Url::host).is_some_and(|h| is_link_local(&h));
            if link_local && raw_webhook.allow_link_local != Some(true) {
                problem(
                    problems,
                    format!("{path}.webhook.url"),
                    "a link-local or cloud-metadata address (169.254.0.0/16, fe80::/10, metadata hosts) is refused \
                     unless webhook.allow_link_local: true",
                );
            }
        }
        for (provider, section) in raw_tenant.provider_sections() {
            let Some(upstream) = tenant.upstream(provider) else { continue };
            if upstream.dry_run || section.allow_plain_http == Some(true) {
                continue;
            }
            let plain = upstream
                .endpoints
                .iter()
                .enumerate()
                .find(|(_, e)| e.url.scheme() == "http" && !e.url.host().is_some_and(|h| is_loopback(&h)));
            if let Some((n, _)) = plain {
                let key = if n == 0 { "endpoint".to_owned() } else { format!("fallback_endpoints[{}]", n - 1) };
                problem(
                    problems,
                    format!("{path}.{provider}.{key}"),
                    format!(
                        "real sends over plain http leave the host unencrypted: use https, a loopback address, or set \
                         {provider}.allow_plain_http: true"
                    ),
                );
            }
        }
        // Every usage a door produces from the config resolves to a template for every kind of number.
        if let Some(hook) = &tenant.supabase {
            let usage = tenant.canonical_usage(&hook.usage);
            let unserved =
                |p: crate::sms::ProviderId| [true, false].iter().any(|m| tenant.template_of(p, usage, *m).is_none());
            if tenant.providers().any(unserved) {
                problem(
                    problems,
                    format!("{path}.supabase.usage"),
                    format!("no template serves {usage} (nor {GENERIC_USAGE}): every hook call would fail"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_and_metadata_hosts() {
        for bad in
            ["169.254.169.254", "[fe80::1]", "metadata.google.internal", "100.100.100.200", "[::ffff:169.254.0.1]"]
        {
            let url = url::Url::parse(&format!("http://{bad}/x")).unwrap();
            assert!(is_link_local(&url.host().unwrap()), "{bad}");
        }
        for good in ["hooks.example.com", "10.0.0.1", "[fd00::1]", "127.0.0.1"] {
            let url = url::Url::parse(&format!("http://{good}/x")).unwrap();
            assert!(!is_link_local(&url.host().unwrap()), "{good}");
        }
    }
}
