//! The feedback loop's part of `compile`: `conversion`, `protection`, `webhook`, `tencent.status_secret`,
//! `tencent.report_conversion`, `server.admin_tokens` and `server.max_remembered_sends`. Messages never echo
//! a secret.

use super::check::{is_name, show, Compiler, MIN_TOKEN_LEN};
use super::model::*;
use super::raw::*;
use super::tokens::TokenTable;
use super::Secret;
use base64::Engine;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

const CONVERSION_WINDOW_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(86_400));
const REMEMBER_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(7 * 86_400));
const PROTECTION_PERIOD_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30 * 86_400));
const REMEMBERED_RANGE: (u64, u64) = (1_000, 100_000_000);
const MAX_MIN_SENDS: u32 = 1_000_000;
/// `max_block_for` when unset (or `block_for` when longer).
const DEFAULT_MAX_BLOCK: Duration = Duration::from_secs(86_400);
/// Longest protection prefix: longer ones would name ranges of a handful of numbers.
pub(crate) const MAX_PROTECTION_PREFIX: u8 = 12;
/// `whsec_` keys: Standard Webhooks asks for 24 to 64 bytes.
const WEBHOOK_KEY_BYTES: (usize, usize) = (24, 64);

/// What a tenant's feedback keys compile to.
pub(crate) struct TenantFeedback {
    pub conversion: Option<ConversionSettings>,
    pub protection: Vec<ProtectionRule>,
    pub webhook: Option<WebhookTarget>,
}

pub(super) fn max_remembered_sends(c: &mut Compiler, raw: Option<u64>) -> usize {
    match raw {
        None => 1_000_000,
        Some(n) if (REMEMBERED_RANGE.0..=REMEMBERED_RANGE.1).contains(&n) => n as usize,
        Some(_) => {
            c.problem(
                "server.max_remembered_sends",
                format!("must be between {} and {}", REMEMBERED_RANGE.0, REMEMBERED_RANGE.1),
            );
            1_000_000
        }
    }
}

/// A secret of at least 16 characters without spaces (tokens, path secrets, signing keys).
fn secret(c: &mut Compiler, path: &str, scalar: &Scalar) -> Option<String> {
    let text = c.required(path, scalar)?;
    if text.len() < MIN_TOKEN_LEN || text.chars().any(char::is_whitespace) {
        c.problem(path, format!("needs at least {MIN_TOKEN_LEN} characters and no spaces"));
        return None;
    }
    Some(text)
}

/// `server.admin_tokens`: digests only, distinct from every tenant token.
pub(crate) fn compile_admin_tokens(c: &mut Compiler, raw: &[Scalar], tenant_tokens: &TokenTable) -> TokenTable {
    let mut table = TokenTable::default();
    for (i, token) in raw.iter().enumerate() {
        let path = format!("server.admin_tokens[{i}]");
        let Some(token) = secret(c, &path, token) else { continue };
        if tenant_tokens.lookup(&token).is_some() {
            c.problem(&path, "an admin token must differ from every tenant token");
        } else if table.insert(&token, 0).is_err() {
            c.problem(&path, "this admin token is listed twice");
        }
    }
    table
}

/// Each provider's `tenants.<t>.<provider>.status_secret` -> tenant index (the order of `tenants`), as
/// digests, indexed by [`crate::sms::ProviderId::index`].
pub(crate) fn compile_status_secrets(c: &mut Compiler, tenants: &BTreeMap<String, RawTenant>) -> [TokenTable; 3] {
    let mut tables: [TokenTable; 3] = Default::default();
    for (index, (name, tenant)) in tenants.iter().enumerate() {
        for (provider, section) in tenant.provider_sections() {
            let Some(raw) = section.status_secret else { continue };
            let path = format!("tenants.{name}.{provider}.status_secret");
            status_secret(c, tenants, &path, raw, tenant, index, &mut tables[provider.index()]);
        }
    }
    tables
}

/// One status secret: a path-safe secret, a tenant with a `conversion:` block, used by one tenant only.
fn status_secret(
    c: &mut Compiler,
    tenants: &BTreeMap<String, RawTenant>,
    path: &str,
    raw: &Scalar,
    tenant: &RawTenant,
    index: usize,
    table: &mut TokenTable,
) {
    let Some(text) = secret(c, path, raw) else { return };
    if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        c.problem(path, "a path secret uses letters, digits, `-` and `_` only (it is part of a URL)");
    } else if tenant.conversion.is_none() {
        c.problem(path, "delivery receipts need a `conversion:` block (sends are remembered only with one)");
    } else if let Err(other) = table.insert(&text, index) {
        let other = tenants.keys().nth(other).map(String::as_str).unwrap_or("?");
        c.problem(path, format!("this status secret is already used by tenant {other}"));
    }
}

/// One Logto webhook signing key must identify one tenant, and the tenant-less route, when served, tries at
/// most [`SHARED_LOGTO_WEBHOOK_KEYS`] keys.
pub(crate) fn check_logto_secrets(c: &mut Compiler, tenants: &[Option<Arc<Tenant>>], shared_route: bool) {
    let mut seen: Vec<(&str, &Secret)> = Vec::new();
    for tenant in tenants.iter().flatten() {
        let Some(secret) = tenant.conversion.as_ref().and_then(|c| c.logto_webhook_secret.as_ref()) else {
            continue;
        };
        if let Some((other, _)) = seen.iter().find(|(_, s)| *s == secret) {
            c.problem(
                format!("tenants.{}.conversion.logto_webhook_secret", tenant.name),
                format!("this signing key is already used by tenant {other}"),
            );
        }
        seen.push((&tenant.name, secret));
        if shared_route && seen.len() == SHARED_LOGTO_WEBHOOK_KEYS + 1 {
            c.problem(
                format!("tenants.{}.conversion.logto_webhook_secret", tenant.name),
                format!(
                    "more than {SHARED_LOGTO_WEBHOOK_KEYS} tenants have a Logto webhook key, and /v1/logto/webhook \
                     (no tenant in the path) tries at most {SHARED_LOGTO_WEBHOOK_KEYS}: point each tenant's Logto \
                     webhook at /v1/logto/webhook/<tenant> and set server.shared_logto_webhook: false"
                ),
            );
        }
    }
}

pub(crate) fn compile_tenant_feedback(c: &mut Compiler, tenant: &str, path: &str, raw: &RawTenant) -> TenantFeedback {
    let report_to_tencent = raw.tencent.as_ref().and_then(|t| t.report_conversion).unwrap_or(false);
    let conversion = raw.conversion.as_ref().map(|raw| compile_conversion(c, path, raw, report_to_tencent));
    let needs = |c: &mut Compiler, present: bool, key: &str| {
        if present && conversion.is_none() {
            c.problem(format!("{path}.{key}"), "needs a `conversion:` block (sends are remembered only with one)");
        }
    };
    needs(c, report_to_tencent, "tencent.report_conversion");
    needs(c, raw.webhook.is_some(), "webhook");
    needs(c, !raw.protection.is_empty(), "protection");
    let window = conversion.as_ref().map_or(Duration::from_secs(600), |c| c.window);
    let protection = compile_protection(c, tenant, &format!("{path}.protection"), &raw.protection, window);
    let webhook = raw.webhook.as_ref().and_then(|w| compile_webhook(c, &format!("{path}.webhook"), w));
    TenantFeedback { conversion, protection, webhook }
}

fn compile_conversion(c: &mut Compiler, path: &str, raw: &RawConversion, report: bool) -> ConversionSettings {
    let window = c.duration(
        &format!("{path}.conversion.window"),
        raw.window.as_ref(),
        Duration::from_secs(600),
        CONVERSION_WINDOW_RANGE,
    );
    let remember_path = format!("{path}.conversion.remember_for");
    let remember_for =
        c.duration(&remember_path, raw.remember_for.as_ref(), Duration::from_secs(3600).max(window), REMEMBER_RANGE);
    if remember_for < window {
        c.problem(&remember_path, "must be at least conversion.window");
    }
    let logto_webhook_secret = raw
        .logto_webhook_secret
        .as_ref()
        .and_then(|s| secret(c, &format!("{path}.conversion.logto_webhook_secret"), s))
        .map(Secret::new);
    ConversionSettings { window, remember_for, logto_webhook_secret, report_to_tencent: report }
}

fn compile_protection(
    c: &mut Compiler,
    tenant: &str,
    path: &str,
    raw: &[RawProtection],
    conversion_window: Duration,
) -> Vec<ProtectionRule> {
    let mut names = HashSet::new();
    let mut rules = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let before = c.problems.len();
        let name = r.name.0.clone();
        if !is_name(&name) {
            c.problem(format!("{p}.name"), "rule names use letters, digits, `_` and `-`");
        } else if !names.insert(name.clone()) {
            c.problem(format!("{p}.name"), format!("rule name {name} is used twice"));
        }
        let key = match r.key {
            RawLimitKey::Country => ProtectionKey::Country,
            RawLimitKey::PhonePrefix(n @ 1..=MAX_PROTECTION_PREFIX) => ProtectionKey::PhonePrefix(n),
            RawLimitKey::PhonePrefix(_) => {
                c.problem(format!("{p}.key.phone_prefix"), format!("a prefix has 1 to {MAX_PROTECTION_PREFIX} digits"));
                ProtectionKey::Country
            }
            RawLimitKey::Phone | RawLimitKey::Tenant | RawLimitKey::Ip => {
                c.problem(format!("{p}.key"), "protection keys are country or { phone_prefix: N }");
                ProtectionKey::Country
            }
        };
        let window = c.duration(&format!("{p}.window"), Some(&r.window), Duration::ZERO, PROTECTION_PERIOD_RANGE);
        if c.problems.len() == before && window <= conversion_window {
            c.problem(
                format!("{p}.window"),
                format!(
                    "must be longer than conversion.window ({}): only sends older than it are judged",
                    show(conversion_window)
                ),
            );
        }
        let block_for =
            c.duration(&format!("{p}.block_for"), Some(&r.block_for), Duration::ZERO, PROTECTION_PERIOD_RANGE);
        let max_block_path = format!("{p}.max_block_for");
        let max_block_for = c.duration(
            &max_block_path,
            r.max_block_for.as_ref(),
            DEFAULT_MAX_BLOCK.max(block_for),
            PROTECTION_PERIOD_RANGE,
        );
        if max_block_for < block_for {
            c.problem(&max_block_path, "must be at least block_for");
        }
        let max_excess = r.max_excess.unwrap_or(0);
        if r.max_excess.is_some() && !(1..=MAX_MIN_SENDS).contains(&max_excess) {
            c.problem(format!("{p}.max_excess"), format!("must be between 1 and {MAX_MIN_SENDS}"));
        }
        if !(1..=MAX_MIN_SENDS).contains(&r.min_sends) {
            c.problem(format!("{p}.min_sends"), format!("must be between 1 and {MAX_MIN_SENDS}"));
        }
        let share = r.min_conversion;
        if !(share > 0.0 && share <= 1.0) {
            c.problem(format!("{p}.min_conversion"), "a share of verified sends, above 0 and at most 1 (0.2 = 20 %)");
        }
        if c.problems.len() != before {
            continue;
        }
        let min_conversion_ppm = (share * 1_000_000.0).round() as u32;
        let mut h = DefaultHasher::new();
        (tenant, &name, key, window, r.min_sends, min_conversion_ppm, block_for, r.shadow, conversion_window)
            .hash(&mut h);
        (max_excess, max_block_for).hash(&mut h);
        rules.push(ProtectionRule {
            id: h.finish(),
            name,
            key,
            window,
            min_sends: r.min_sends,
            min_conversion: share,
            min_conversion_ppm,
            max_excess,
            block_for,
            max_block_for,
            shadow: r.shadow,
        });
    }
    rules
}

fn compile_webhook(c: &mut Compiler, path: &str, raw: &RawWebhook) -> Option<WebhookTarget> {
    let url_path = format!("{path}.url");
    let url = c.required(&url_path, &raw.url).and_then(|text| {
        if url::Url::parse(&text).is_ok_and(|u| !u.username().is_empty() || u.password().is_some()) {
            c.problem(
                &url_path,
                "credentials in the URL are never sent: the receiver checks webhook-signature instead",
            );
            return None;
        }
        let parsed = url::Url::parse(&text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && u.username().is_empty());
        let uri = parsed.and_then(|u| u.as_str().parse::<http::Uri>().ok());
        if uri.is_none() {
            c.problem(&url_path, "expected an http(s) URL like https://hooks.example.com/smsgate");
        }
        uri
    });
    let secret_path = format!("{path}.secret");
    let key = c.required(&secret_path, &raw.secret).and_then(|text| {
        let key = text
            .strip_prefix("whsec_")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|k| (WEBHOOK_KEY_BYTES.0..=WEBHOOK_KEY_BYTES.1).contains(&k.len()));
        if key.is_none() {
            c.problem(
                &secret_path,
                format!(
                    "expected whsec_ and the base64 of {} to {} random bytes (Standard Webhooks)",
                    WEBHOOK_KEY_BYTES.0, WEBHOOK_KEY_BYTES.1
                ),
            );
        }
        key
    });
    Some(WebhookTarget { url: url?, key: SigningKey(key?) })
}
