//! The front doors' settings of a tenant, checked: the Supabase hook's Standard Webhooks secrets, the
//! credentials of Tencent-compatible API callers and the actions they may pass through. Messages name keys,
//! never a secret.

use super::model::{Credentials, SupabaseHook, WebhookKey, GENERIC_USAGE};
use super::raw::{RawSdkClient, RawSupabase, Scalar};
use super::Secret;
use base64::Engine;

/// SDK SecretKeys must be at least this long (the SDKs' own keys are 32 characters).
const MIN_SDK_KEY: usize = 16;
const MAX_SECRET_ID: usize = 128;

/// The Supabase hook: `secret` as Supabase shows it (`v1,whsec_<base64>`; several `|`-separated, as
/// Supabase's own `GOTRUE_HOOK_SEND_SMS_SECRETS` writes a rotation), `usage` a usage-type name.
pub(super) fn supabase(path: &str, raw: &RawSupabase, problems: &mut Vec<(String, String)>) -> Option<SupabaseHook> {
    let mut keys = Vec::new();
    for written in raw.secret.0.split('|') {
        let written = written.trim();
        let encoded = written.strip_prefix("v1,").unwrap_or(written);
        let decoded = encoded
            .strip_prefix("whsec_")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|key| key.len() >= 16);
        match decoded {
            Some(key) => keys.push(WebhookKey(key)),
            None => {
                problems.push((
                    format!("{path}.secret"),
                    "expected the secret as Supabase shows it: v1,whsec_ and at least 16 bytes in base64".into(),
                ));
                return None;
            }
        }
    }
    let usage = raw.usage.as_ref().map_or(GENERIC_USAGE, |u| u.0.as_str()).to_owned();
    if !super::check::is_name(&usage) {
        problems.push((format!("{path}.usage"), "expected a usage type such as Generic or SignIn".into()));
        return None;
    }
    Some(SupabaseHook { keys, usage })
}

/// The SDK clients: SecretIds are printable words, SecretKeys at least 16 characters, and neither may be
/// the tenant's real Tencent credentials (callers get keys of their own).
pub(super) fn sdk_clients(
    path: &str,
    raw: &[RawSdkClient],
    real: &[Credentials],
    problems: &mut Vec<(String, String)>,
) -> Vec<Credentials> {
    let mut clients = Vec::new();
    for (i, client) in raw.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let id = client.secret_id.0.trim();
        let key = &client.secret_key.0;
        if id.is_empty() || id.len() > MAX_SECRET_ID || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
            problems
                .push((format!("{p}.secretId"), format!("expected 1 to {MAX_SECRET_ID} visible characters, no `/`")));
            continue;
        }
        if key.len() < MIN_SDK_KEY || key.chars().any(char::is_whitespace) {
            problems.push((format!("{p}.secretKey"), format!("needs at least {MIN_SDK_KEY} characters and no spaces")));
            continue;
        }
        if real.iter().any(|r| r.secret_id == id || r.secret_key.expose() == key) {
            problems.push((p, "issue callers credentials of their own, never the tenant's Tencent keys".into()));
            continue;
        }
        clients.push(Credentials { secret_id: id.to_owned(), secret_key: Secret::new(key.clone()) });
    }
    clients
}

/// What a passthrough action may reach, for the actions smsgate knows to be reads (Tencent SMS API
/// 2021-01-11). Every other action (writes such as `AddSmsTemplate` or `ReportConversion`, account-wide
/// reads, actions added later) needs `sdk_passthrough_unscoped: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadScope {
    /// Reads one application's data, named by `SmsSdkAppId`: forwarded only for the tenant's own.
    App,
    /// Reads nothing of the account (number information).
    Public,
}

/// The read actions a tenant may list without `sdk_passthrough_unscoped`.
pub(crate) const READ_ACTIONS: &[(&str, ReadScope)] = &[
    ("PullSmsSendStatus", ReadScope::App),
    ("PullSmsSendStatusByPhoneNumber", ReadScope::App),
    ("PullSmsReplyStatus", ReadScope::App),
    ("PullSmsReplyStatusByPhoneNumber", ReadScope::App),
    ("SendStatusStatistics", ReadScope::App),
    ("CallbackStatusStatistics", ReadScope::App),
    ("SmsPackagesStatistics", ReadScope::App),
    ("DescribePhoneNumberInfo", ReadScope::Public),
];

/// The scope of a read action smsgate knows; None for every other action.
pub(crate) fn read_scope(action: &str) -> Option<ReadScope> {
    READ_ACTIONS.iter().find(|(name, _)| *name == action).map(|(_, scope)| *scope)
}

/// Passthrough actions: Tencent action names (`PullSmsSendStatus`), not SendSms (always served with policy);
/// only the reads of [`READ_ACTIONS`] unless `unscoped` (they are forwarded with the tenant's real keys).
pub(super) fn passthrough(
    path: &str,
    raw: &[Scalar],
    unscoped: bool,
    problems: &mut Vec<(String, String)>,
) -> Vec<String> {
    let mut actions: Vec<String> = Vec::new();
    for (i, action) in raw.iter().enumerate() {
        let name = action.0.trim();
        let ok = name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_uppercase())
            && name.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            problems.push((format!("{path}[{i}]"), "expected a Tencent action name such as PullSmsSendStatus".into()));
        } else if name == "SendSms" {
            problems.push((format!("{path}[{i}]"), "SendSms always goes through the tenant's policy".into()));
        } else if read_scope(name).is_none() && !unscoped {
            problems.push((
                format!("{path}[{i}]"),
                format!(
                    "{name} is not a read of this tenant's application (a write, an account-wide read or an action \
                     smsgate does not know), and it would run with the real Tencent keys: list it only with \
                     sdk_passthrough_unscoped: true"
                ),
            ));
        } else if actions.iter().any(|a| a == name) {
            problems.push((format!("{path}[{i}]"), format!("{name} is listed twice")));
        } else {
            actions.push(name.to_owned());
        }
    }
    actions
}
