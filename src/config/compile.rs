//! Raw config -> validated [`Config`]. Checks every value and collects every problem it finds (not just the
//! first) as `(key path, message)` pairs. `${VAR}` references were expanded when the raw config was read
//! (`de.rs`); nothing here expands again. Messages never echo a value that could be a secret.

use super::check::{is_name, Compiler, KeyProblem, MIN_TOKEN_LEN};
use super::interp::Env;
use super::model::*;
use super::raw::*;
use super::script::{OnScriptError, ScriptLimits, ScriptSpec, Settings, MAX_SCRIPT_BYTES, TIME_RANGE};
use super::tokens::TokenTable;
use super::Secret;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

const MAX_BODY_RANGE: (u64, u64) = (256, 1 << 20);
const MAX_BODY_READERS: u64 = 100_000;
const MAX_WORKERS: u64 = 1024;
const LIMIT_PERIOD_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30 * 86_400));
const INSTRUCTION_RANGE: (u64, u64) = (1_000, 100_000_000);
const MEMORY_RANGE: (usize, usize) = (64 << 10, 64 << 20);
const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(120));
/// The limiter keeps TATs as whole milliseconds ahead of now, at most ~30 days (see policy/memory.rs).
const MAX_LIMIT: u32 = 1_000_000;

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `env` is read for the proxy variables (`HTTPS_PROXY`, `NO_PROXY`...); `${VAR}` references were expanded
/// before.
pub(super) fn compile(raw: RawConfig, source: &Path, env: &dyn Env) -> Result<Config, Vec<KeyProblem>> {
    let mut c = Compiler { problems: Vec::new() };
    // Scripts resolve relative to the config file's folder.
    let base_dir = source.parent().unwrap_or(Path::new(""));
    let server = compile_server(&mut c, &raw.server, base_dir);
    let limits_backend = super::limits_backend::compile_backend(&mut c, &raw.limits_backend, base_dir);

    if raw.tenants.is_empty() {
        c.problem("tenants", "define at least one tenant");
    }
    let mut tenants = Vec::new();
    let mut tokens = TokenTable::default();
    let mut sdk_clients: HashMap<String, (usize, usize)> = HashMap::new();
    for (name, raw_tenant) in &raw.tenants {
        let path = format!("tenants.{name}");
        if !is_name(name) {
            c.problem(&path, "tenant names use letters, digits, `_` and `-` (at most 64)");
        }
        let index = tenants.len();
        for (i, token) in raw_tenant.tokens.iter().enumerate() {
            let token_path = format!("{path}.tokens[{i}]");
            let Some(token) = c.required(&token_path, token) else { continue };
            if token.len() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
                c.problem(&token_path, format!("tokens need at least {MIN_TOKEN_LEN} characters and no spaces"));
            } else if let Err(other) = tokens.insert(&token, index) {
                let other_name = raw.tenants.keys().nth(other).map(String::as_str).unwrap_or("?");
                c.problem(&token_path, format!("this token is already used by tenant {other_name}"));
            }
        }
        if raw_tenant.tokens.is_empty() {
            c.problem(format!("{path}.tokens"), "list at least one token");
        }
        // A tenant that fails leaves a None, keeping indexes aligned with the token table.
        let tenant = compile_tenant(&mut c, name, &path, raw_tenant, base_dir, env);
        for (i, client) in tenant.iter().flat_map(|t| t.sdk_clients.iter().enumerate()) {
            if let Some((other, _)) = sdk_clients.insert(client.secret_id.clone(), (index, i)) {
                let other_name = raw.tenants.keys().nth(other).map(String::as_str).unwrap_or("?");
                c.problem(format!("{path}.sdk_clients[{i}].secretId"), format!("already used by tenant {other_name}"));
            }
        }
        tenants.push(tenant.map(Arc::new));
    }

    let admin_tokens = super::feedback::compile_admin_tokens(&mut c, &raw.server.admin_tokens, &tokens);
    let status_secrets = super::feedback::compile_status_secrets(&mut c, &raw.tenants);
    super::exposure::check(&mut c.problems, &raw, &tenants, &tokens, &admin_tokens);
    super::feedback::check_logto_secrets(&mut c, &tenants, server.shared_logto_webhook);
    super::limits_backend::check_storage_key_is_no_credential(&mut c, &limits_backend, &tenants, &tokens);

    match tenants.into_iter().collect::<Option<Vec<_>>>() {
        Some(tenants) if c.problems.is_empty() => Ok(Config {
            source: source.to_path_buf(),
            server,
            limits_backend,
            tenants,
            tokens,
            admin_tokens,
            status_secrets,
            sdk_clients,
        }),
        _ => Err(c.problems),
    }
}

fn compile_server(c: &mut Compiler, raw: &RawServer, base_dir: &Path) -> ServerSettings {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 8080).into();
    if let Some(text) = raw.listen.as_ref().and_then(|s| c.text("server.listen", s)) {
        match text.parse() {
            Ok(addr) => listen = addr,
            Err(_) => c.problem("server.listen", "expected an address like 127.0.0.1:8080"),
        }
    }
    let mut max_body_bytes = 16_384;
    if let Some(n) = raw.max_body_bytes {
        if n < MAX_BODY_RANGE.0 || n > MAX_BODY_RANGE.1 {
            c.problem(
                "server.max_body_bytes",
                format!("must be between {} and {}", MAX_BODY_RANGE.0, MAX_BODY_RANGE.1),
            );
        } else {
            max_body_bytes = n as usize;
        }
    }
    let shutdown_grace = c.duration(
        "server.shutdown_grace",
        raw.shutdown_grace.as_ref(),
        Duration::from_secs(30),
        (Duration::ZERO, Duration::from_secs(3600)),
    );
    let header_timeout = c.duration(
        "server.header_timeout",
        raw.header_timeout.as_ref(),
        Duration::from_secs(10),
        (Duration::from_millis(100), Duration::from_secs(300)),
    );
    let body_timeout = c.duration(
        "server.body_timeout",
        raw.body_timeout.as_ref(),
        Duration::from_secs(5),
        (Duration::from_millis(100), Duration::from_secs(300)),
    );
    let mut tencent_listen = None;
    if let Some(text) = raw.tencent_listen.as_ref().and_then(|s| c.text("server.tencent_listen", s)) {
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr == listen && addr.port() != 0 => {
                c.problem("server.tencent_listen", "must differ from server.listen")
            }
            Ok(addr) => tencent_listen = Some(addr),
            Err(_) => c.problem("server.tencent_listen", "expected an address like 127.0.0.1:8081"),
        }
    }
    let mut max_body_readers = 256;
    if let Some(n) = raw.max_body_readers {
        if !(1..=MAX_BODY_READERS).contains(&n) {
            c.problem("server.max_body_readers", format!("must be between 1 and {MAX_BODY_READERS}"));
        } else {
            max_body_readers = n as usize;
        }
    }
    let mut bounded = |key: &str, raw: Option<u64>, default: usize, range: (u64, u64)| match raw {
        None => default,
        Some(n) if (range.0..=range.1).contains(&n) => n as usize,
        Some(_) => {
            c.problem(format!("server.{key}"), format!("must be between {} and {}", range.0, range.1));
            default
        }
    };
    let max_unverified_readers = bounded("max_unverified_readers", raw.max_unverified_readers, 64, (1, 100_000));
    let max_unverified_per_address =
        bounded("max_unverified_per_address", raw.max_unverified_per_address, 8, (1, 100_000));
    let max_unverified_bytes =
        bounded("max_unverified_bytes", raw.max_unverified_bytes, 4 << 20, (MAX_BODY_RANGE.1, 1 << 30));
    let mut workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(n) = raw.workers {
        if !(1..=MAX_WORKERS).contains(&n) {
            c.problem("server.workers", format!("must be between 1 and {MAX_WORKERS}"));
        } else {
            workers = n as usize;
        }
    }
    let max_remembered_sends = super::feedback::max_remembered_sends(c, raw.max_remembered_sends);
    let mut admin_listen = None;
    if let Some(text) = raw.admin_listen.as_ref().and_then(|s| c.text("server.admin_listen", s)) {
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 && (addr == listen || Some(addr) == tencent_listen) => {
                c.problem("server.admin_listen", "must differ from server.listen and server.tencent_listen")
            }
            Ok(addr) => admin_listen = Some(addr),
            Err(_) => c.problem("server.admin_listen", "expected an address like 127.0.0.1:9090"),
        }
    }
    let mut tls = |key: &str, raw: Option<&RawListenerTls>, listener: Option<(&str, Option<SocketAddr>)>| {
        let path = format!("server.{key}");
        match (raw?, listener) {
            (_, Some((name, None))) => c.problem(path, format!("needs server.{name} (the listener it secures)")),
            (raw, _) => match super::listen::load(&path, raw, base_dir) {
                Ok(tls) => return Some(tls),
                Err((path, message)) => c.problem(path, message),
            },
        }
        None
    };
    let main_tls = tls("tls", raw.tls.as_ref(), None);
    let tencent_tls = tls("tencent_tls", raw.tencent_tls.as_ref(), Some(("tencent_listen", tencent_listen)));
    let admin_tls = tls("admin_tls", raw.admin_tls.as_ref(), Some(("admin_listen", admin_listen)));
    let drain_delay = c.duration(
        "server.drain_delay",
        raw.drain_delay.as_ref(),
        Duration::from_secs(5),
        (Duration::ZERO, Duration::from_secs(300)),
    );
    ServerSettings {
        admin_listen,
        tls: main_tls,
        tencent_tls,
        admin_tls,
        drain_delay,
        listen,
        max_body_bytes,
        shutdown_grace,
        header_timeout,
        body_timeout,
        max_body_readers,
        max_unverified_readers,
        max_unverified_per_address,
        max_unverified_bytes,
        shared_logto_webhook: raw.shared_logto_webhook.unwrap_or(true),
        tencent_listen,
        workers,
        max_remembered_sends,
    }
}

/// Test numbers: E.164 keys (with `+`), codes of 1 to 12 letters or digits.
fn compile_test_numbers(
    c: &mut Compiler,
    path: &str,
    raw: &std::collections::BTreeMap<String, Scalar>,
    number_types: &[NumberType],
) -> HashMap<u64, String> {
    let mut numbers = HashMap::new();
    for (number, code) in raw {
        let p = format!("{path}.{number}");
        let phone = match crate::phone::Phone::from_e164(number) {
            Ok(phone) => phone,
            Err(_) => {
                c.problem(&p, "expected a valid E.164 number such as +8613800000000");
                continue;
            }
        };
        // Test numbers pass the same destination rules as any number: one of a refused type would never work.
        if !number_types.is_empty() && !number_types.contains(&phone.number_type()) {
            c.problem(&p, format!("this is a {} number, which number_types refuses", phone.number_type()));
            continue;
        }
        let Some(code) = c.required(&p, code) else { continue };
        if code.len() > 12 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            c.problem(&p, "a code is 1 to 12 letters or digits");
        } else if numbers.insert(phone.digits(), code).is_some() {
            c.problem(&p, "this number is listed twice");
        }
    }
    numbers
}

fn compile_tenant(
    c: &mut Compiler,
    name: &str,
    path: &str,
    raw: &RawTenant,
    base_dir: &Path,
    env: &dyn Env,
) -> Option<Tenant> {
    let before = c.problems.len();
    let default_country = raw.default_country.as_ref().and_then(|s| {
        let p = format!("{path}.default_country");
        let text = c.required(&p, s)?;
        match text.parse::<phonenumber::country::Id>() {
            Ok(id) if text.len() == 2 => Some(id),
            _ => {
                c.problem(&p, "expected an ISO 3166 country code such as CN or US");
                None
            }
        }
    });
    if raw.tencent.is_none() && raw.aliyun.is_none() && raw.twilio.is_none() {
        c.problem(path, "configure at least one provider: tencent, aliyun or twilio");
    }
    let tencent = raw.tencent.as_ref().map(|t| compile_tencent(c, &format!("{path}.tencent"), t, base_dir, env));
    let aliyun = raw.aliyun.as_ref().map(|a| compile_aliyun(c, &format!("{path}.aliyun"), a, base_dir, env));
    let twilio = raw.twilio.as_ref().map(|t| compile_twilio(c, &format!("{path}.twilio"), t, base_dir, env));
    let (tencent, aliyun, twilio) = (tencent.flatten(), aliyun.flatten(), twilio.flatten());
    let usages = usages(tencent.as_ref(), aliyun.as_ref(), twilio.as_ref());
    let configured: Vec<ProviderId> = [
        tencent.as_ref().map(|_| ProviderId::Tencent),
        aliyun.as_ref().map(|_| ProviderId::Aliyun),
        twilio.as_ref().map(|_| ProviderId::Twilio),
    ]
    .into_iter()
    .flatten()
    .collect();
    let routes = compile_routes(
        c,
        path,
        raw,
        &configured,
        &|id, usage| can_send(id, usage, tencent.as_ref(), aliyun.as_ref(), twilio.as_ref()),
        &usages,
    );
    let limits = compile_limits(c, name, &format!("{path}.limits"), &raw.limits, &usages);
    let number_types = compile_number_types(c, &format!("{path}.number_types"), raw.number_types.as_deref());
    let test_numbers = compile_test_numbers(c, &format!("{path}.test_numbers"), &raw.test_numbers, &number_types);
    let countries = raw.countries.as_ref().and_then(|rule| {
        let (list, make, key): (_, fn(Vec<String>) -> CountryRule, _) = match (&rule.allow, &rule.deny) {
            (Some(list), None) => (list, CountryRule::Allow, "allow"),
            (None, Some(list)) => (list, CountryRule::Deny, "deny"),
            _ => {
                c.problem(format!("{path}.countries"), "give either allow or deny");
                return None;
            }
        };
        let codes = list
            .iter()
            .enumerate()
            .filter_map(|(i, code)| country_code(c, &format!("{path}.countries.{key}[{i}]"), &code.0))
            .collect();
        Some(make(codes))
    });
    let mut blocked_prefixes = Vec::new();
    for (i, prefix) in raw.blocked_prefixes.iter().enumerate() {
        let p = &prefix.0;
        let ok = p.len() >= 2 && p.len() <= 16 && p.starts_with('+') && p[1..].bytes().all(|b| b.is_ascii_digit());
        if ok {
            blocked_prefixes.push(p.clone());
        } else {
            c.problem(format!("{path}.blocked_prefixes[{i}]"), "expected an E.164 prefix such as +86170");
        }
    }
    let dedupe_window = c.duration(
        &format!("{path}.dedupe_window"),
        raw.dedupe_window.as_ref(),
        Duration::from_secs(300),
        (Duration::ZERO, Duration::from_secs(86_400)),
    );
    let spend_caps = raw.spend_caps.as_ref().map(|caps| compile_spend_caps(c, &format!("{path}.spend_caps"), caps));
    let settings = Settings {
        name: name.to_owned(),
        default_country: default_country.map(|c| c.as_ref().to_owned()),
        sign_name: tencent.as_ref().and_then(|t| t.sign_name.clone()),
        region: tencent.as_ref().map(|t| t.region.clone()),
        sdk_app_id: tencent.as_ref().map(|t| t.sdk_app_id.clone()),
        templates: tencent
            .as_ref()
            .map(|t| t.templates.iter().map(|(u, id)| (u.to_owned(), id.to_owned())).collect())
            .unwrap_or_default(),
    };
    let script = compile_script(c, path, raw, base_dir, settings);
    let feedback = super::feedback::compile_tenant_feedback(c, name, path, raw);
    let supabase =
        raw.supabase.as_ref().and_then(|s| super::doors::supabase(&format!("{path}.supabase"), s, &mut c.problems));
    // The Tencent-compatible API answers for the tenant's Tencent application (its SdkAppId, its templates).
    if raw.tencent.is_none() && (!raw.sdk_clients.is_empty() || !raw.sdk_passthrough.is_empty()) {
        let key = if raw.sdk_clients.is_empty() { "sdk_passthrough" } else { "sdk_clients" };
        c.problem(
            format!("{path}.{key}"),
            "the Tencent-compatible API needs a `tencent:` section (its SdkAppId and templates)",
        );
    }
    let real = tencent.as_ref().map_or(&[][..], |t| &t.credentials[..]);
    let sdk_clients =
        super::doors::sdk_clients(&format!("{path}.sdk_clients"), &raw.sdk_clients, real, &mut c.problems);
    let sdk_passthrough = super::doors::passthrough(
        &format!("{path}.sdk_passthrough"),
        &raw.sdk_passthrough,
        raw.sdk_passthrough_unscoped.unwrap_or(false),
        &mut c.problems,
    );
    if c.problems.len() != before {
        return None;
    }
    Some(Tenant {
        name: name.into(),
        default_country,
        tencent,
        aliyun,
        twilio,
        routes: routes?,
        usages,
        limits,
        countries,
        blocked_prefixes,
        number_types,
        dedupe_window,
        spend_caps,
        test_numbers,
        script,
        conversion: feedback.conversion,
        protection: feedback.protection,
        webhook: feedback.webhook,
        supabase,
        sdk_clients,
        sdk_passthrough,
    })
}

/// `number_types: [mobile, fixed_line_or_mobile]`: names from [`NumberType`], at least one, none twice.
fn compile_number_types(c: &mut Compiler, path: &str, raw: Option<&[Scalar]>) -> Vec<NumberType> {
    let Some(raw) = raw else { return DEFAULT_NUMBER_TYPES.to_vec() };
    if raw.is_empty() {
        c.problem(path, "list at least one number type, such as mobile");
    }
    let mut types = Vec::new();
    for (i, name) in raw.iter().enumerate() {
        match NumberType::from_name(&name.0) {
            Some(kind) if types.contains(&kind) => c.problem(format!("{path}[{i}]"), format!("{kind} is listed twice")),
            Some(kind) => types.push(kind),
            None => {
                let known: Vec<&str> = NumberType::ALL.iter().map(|k| k.as_str()).collect();
                c.problem(format!("{path}[{i}]"), format!("expected a number type: {}", known.join(", ")))
            }
        }
    }
    types
}

/// An ISO 3166 alpha-2 code as the phone metadata knows it (`ZZ` stands for numbers without a region).
fn country_code(c: &mut Compiler, path: &str, text: &str) -> Option<String> {
    let known = text == "ZZ" || (text.len() == 2 && text.parse::<phonenumber::country::Id>().is_ok());
    if !known {
        c.problem(path, "expected an ISO 3166 country code such as CN or US");
    }
    known.then(|| text.to_owned())
}

fn compile_caps(c: &mut Compiler, path: &str, raw: [Option<u64>; 4]) -> Caps {
    for (value, key) in raw.iter().zip(["daily", "monthly", "daily_fee", "monthly_fee"]) {
        if *value == Some(0) {
            c.problem(format!("{path}.{key}"), "must be at least 1 (leave it out for no cap)");
        }
    }
    let [daily, monthly, daily_fee, monthly_fee] = raw;
    Caps { daily, monthly, daily_fee, monthly_fee }
}

fn compile_spend_caps(c: &mut Compiler, path: &str, raw: &RawSpendCaps) -> SpendCaps {
    let offset_path = format!("{path}.utc_offset");
    let utc_offset_seconds = match raw.utc_offset.as_ref().map(|s| s.0.as_str()) {
        None => 8 * 3600,
        Some(text) => match chrono::FixedOffset::from_str(text) {
            Ok(offset) => offset.local_minus_utc(),
            Err(_) => {
                c.problem(&offset_path, "expected a UTC offset such as +08:00");
                0
            }
        },
    };
    let tenant = compile_caps(c, path, [raw.daily, raw.monthly, raw.daily_fee, raw.monthly_fee]);
    let mut countries = std::collections::HashMap::new();
    for (code, caps) in &raw.countries {
        let p = format!("{path}.countries.{code}");
        if let Some(code) = country_code(c, &p, code) {
            let caps = compile_caps(c, &p, [caps.daily, caps.monthly, caps.daily_fee, caps.monthly_fee]);
            countries.insert(code, caps);
        }
    }
    SpendCaps { utc_offset_seconds, tenant, countries }
}

fn compile_script(
    c: &mut Compiler,
    path: &str,
    raw: &RawTenant,
    base_dir: &Path,
    settings: Settings,
) -> Option<ScriptSpec> {
    let mut limits = ScriptLimits::default();
    if let Some(l) = &raw.script_limits {
        if let Some(n) = l.instructions {
            if !(INSTRUCTION_RANGE.0..=INSTRUCTION_RANGE.1).contains(&n) {
                c.problem(
                    format!("{path}.script_limits.instructions"),
                    format!("must be between {} and {}", INSTRUCTION_RANGE.0, INSTRUCTION_RANGE.1),
                );
            } else {
                limits.instructions = n as u32;
            }
        }
        if let Some(m) = &l.memory {
            let p = format!("{path}.script_limits.memory");
            if let Some(text) = c.text(&p, m) {
                match parse_bytes(&text) {
                    Ok(n) if (MEMORY_RANGE.0..=MEMORY_RANGE.1).contains(&n) => limits.memory = n,
                    Ok(_) => c.problem(&p, "must be between 64KiB and 64MiB"),
                    Err(message) => c.problem(&p, message),
                }
            }
        }
        let p = format!("{path}.script_limits.time");
        limits.time = c.duration(&p, l.time.as_ref(), limits.time, TIME_RANGE);
    }
    let mut on_error = OnScriptError::Reject;
    if let Some(s) = &raw.on_script_error {
        let p = format!("{path}.on_script_error");
        match c.text(&p, s).as_deref() {
            Some("reject") => on_error = OnScriptError::Reject,
            Some("skip") => on_error = OnScriptError::Skip,
            Some(_) => c.problem(&p, "expected reject or skip"),
            None => {}
        }
    }
    let Some(script) = &raw.script else {
        for (key, present) in
            [("script_limits", raw.script_limits.is_some()), ("on_script_error", raw.on_script_error.is_some())]
        {
            if present {
                c.problem(format!("{path}.{key}"), "applies only with a script");
            }
        }
        return None;
    };
    let p = format!("{path}.script");
    let written = c.required(&p, script)?;
    // Regular files only, read with a bound: a FIFO or a device must not hang or exhaust the config load.
    match crate::files::read_text(&base_dir.join(&written), MAX_SCRIPT_BYTES) {
        Ok(source) => {
            Some(ScriptSpec { path: written, source: source.into(), settings, limits, on_error, location: None })
        }
        Err(e) => {
            c.problem(&p, format!("cannot read {written}: {e}"));
            None
        }
    }
}

/// Sizes: bytes as an integer, or with a unit `KiB` / `MiB`.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let expected = || format!("expected a size like 1MiB, 512KiB or a number of bytes, found `{text}`");
    let n: usize = digits.parse().map_err(|_| expected())?;
    let unit: usize = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        _ => return Err(expected()),
    };
    n.checked_mul(unit).ok_or_else(expected)
}

fn compile_credentials(c: &mut Compiler, path: &str, id: &Scalar, key: &Scalar) -> Option<Credentials> {
    let secret_id = c.required(&format!("{path}.accessKeyId"), id);
    let secret_key = c.required(&format!("{path}.accessKeySecret"), key).map(Secret::new);
    Some(Credentials { secret_id: secret_id?, secret_key: secret_key? })
}

fn compile_tencent(
    c: &mut Compiler,
    path: &str,
    raw: &RawTencent,
    base_dir: &Path,
    env: &dyn Env,
) -> Option<TencentAccount> {
    let current = compile_credentials(c, path, &raw.access_key_id, &raw.access_key_secret);
    let next = raw
        .next_credentials
        .as_ref()
        .map(|n| compile_credentials(c, &format!("{path}.next_credentials"), &n.access_key_id, &n.access_key_secret));
    let sign_name = raw.sign_name.as_ref().and_then(|s| c.required(&format!("{path}.signName"), s));
    let sdk_app_id = c.required(&format!("{path}.sdkAppId"), &raw.sdk_app_id).filter(|id| {
        let ok = is_digits(id);
        if !ok {
            c.problem(format!("{path}.sdkAppId"), "expected the SMS application's numeric SdkAppId, like 1400006666");
        }
        ok
    });
    let region = c.required(&format!("{path}.region"), &raw.region).filter(|r| {
        let ok = matches!(r.split_once('-'), Some((a, b)) if a.len() == 2
            && a.bytes().all(|x| x.is_ascii_lowercase())
            && !b.is_empty()
            && b.bytes().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == b'-'));
        if !ok {
            c.problem(format!("{path}.region"), "expected a Tencent Cloud region such as ap-guangzhou");
        }
        ok
    });
    let upstream = compile_upstream(c, path, &raw.upstream(), DEFAULT_ENDPOINT, base_dir, env);
    let templates = compile_templates(c, &format!("{path}.templates"), &raw.templates);
    let international_templates = raw
        .international_templates
        .as_ref()
        .map(|t| compile_templates(c, &format!("{path}.international_templates"), t));
    let international_sign_name =
        raw.international_sign_name.as_ref().and_then(|s| c.required(&format!("{path}.international_sign_name"), s));
    if international_sign_name.is_some() && raw.international_templates.is_none() {
        c.problem(format!("{path}.international_sign_name"), "applies only with international_templates");
    }
    let mut credentials = vec![current?];
    credentials.extend(next.flatten());
    Some(TencentAccount {
        credentials,
        sign_name,
        sdk_app_id: sdk_app_id?,
        region: region?,
        templates,
        international_templates,
        international_sign_name,
        upstream: upstream?,
    })
}

/// The keys every provider section shares: endpoints, deadline, attempts, dry run, proxy, trust roots.
fn compile_upstream(
    c: &mut Compiler,
    path: &str,
    raw: &RawUpstream<'_>,
    default_endpoint: &str,
    base_dir: &Path,
    env: &dyn Env,
) -> Option<Upstream> {
    let default_endpoint = Scalar(default_endpoint.to_owned());
    let mut endpoints = Vec::new();
    let listed = std::iter::once((format!("{path}.endpoint"), raw.endpoint.unwrap_or(&default_endpoint)))
        .chain(raw.fallback_endpoints.iter().enumerate().map(|(i, e)| (format!("{path}.fallback_endpoints[{i}]"), e)));
    for (endpoint_path, scalar) in listed {
        let Some(text) = c.required(&endpoint_path, scalar) else { continue };
        match parse_endpoint(&text) {
            Ok(e) if endpoints.iter().any(|known: &Endpoint| known.url == e.url) => {
                c.problem(&endpoint_path, "this endpoint is listed twice")
            }
            Ok(e) => endpoints.push(e),
            Err(message) => c.problem(&endpoint_path, message),
        }
    }
    let timeout = c.duration(&format!("{path}.timeout"), raw.timeout, Duration::from_secs(5), TIMEOUT_RANGE);
    let max_attempts = raw.max_attempts.unwrap_or(3);
    if !(1..=10).contains(&max_attempts) {
        c.problem(format!("{path}.max_attempts"), "must be between 1 and 10");
    }
    let explicit_proxy = raw.proxy.and_then(|p| c.required(&format!("{path}.proxy"), p));
    for endpoint in &mut endpoints {
        match super::egress::proxy_for(explicit_proxy.as_deref(), env, &endpoint.uri) {
            Ok(proxy) => endpoint.set_proxy(proxy),
            Err(message) => {
                c.problem(format!("{path}.proxy"), message);
                break;
            }
        }
    }
    let roots = raw.ca_file.and_then(|f| {
        let p = format!("{path}.ca_file");
        let written = c.required(&p, f)?;
        match super::egress::read_roots(&written, base_dir) {
            Ok(roots) => Some(Arc::new(roots)),
            Err(message) => {
                c.problem(&p, message);
                None
            }
        }
    });
    if endpoints.len() != 1 + raw.fallback_endpoints.len() {
        return None;
    }
    Some(Upstream {
        endpoints,
        timeout,
        dry_run: raw.dry_run.unwrap_or(false),
        max_attempts: max_attempts.clamp(1, 10),
        retry_maybe_sent: raw.retry_maybe_sent.unwrap_or(false),
        roots,
    })
}

/// A usage type as a template list names it, in its one spelling; a problem when it is not a name or is
/// listed twice (usage types match ignoring case).
fn template_usage<'a>(c: &mut Compiler, path: &str, written: &'a str, seen: &Templates) -> Option<&'a str> {
    let usage = logto_usage(written).unwrap_or(written);
    if !is_name(usage) {
        c.problem(path, "expected a usage type such as SignIn or Generic");
        None
    } else if seen.spelling(usage).is_some() {
        c.problem(path, format!("usage type {usage} is listed twice (usage types match ignoring case)"));
        None
    } else {
        Some(usage)
    }
}

/// A provider's text that must be there and not be empty.
fn nonempty(c: &mut Compiler, path: &str, scalar: &Scalar) -> Option<String> {
    let text = c.required(path, scalar)?;
    if text.trim().is_empty() {
        c.problem(path, "must not be empty");
        return None;
    }
    Some(text)
}

fn compile_aliyun(
    c: &mut Compiler,
    path: &str,
    raw: &RawAliyun,
    base_dir: &Path,
    env: &dyn Env,
) -> Option<AliyunAccount> {
    let access_key_id = nonempty(c, &format!("{path}.accessKeyId"), &raw.access_key_id);
    let access_key_secret = nonempty(c, &format!("{path}.accessKeySecret"), &raw.access_key_secret);
    let sign_name = nonempty(c, &format!("{path}.signName"), &raw.sign_name);
    let upstream = compile_upstream(c, path, &raw.upstream(), ALIYUN_ENDPOINT, base_dir, env);
    let (mut china, mut overseas) = (Templates::default(), Templates::default());
    if raw.templates.is_empty() {
        c.problem(format!("{path}.templates"), "list at least one template (usageType and templateCode)");
    }
    let code_ok = |code: &str| {
        !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    for (i, t) in raw.templates.iter().enumerate() {
        let Some(usage) = template_usage(c, &format!("{path}.templates[{i}].usageType"), &t.usage_type.0, &china)
        else {
            continue;
        };
        let (for_china, for_overseas) = match &t.template_code {
            RawTemplateCode::One(code) => (code, code),
            RawTemplateCode::Split { china, overseas } => (china, overseas),
        };
        if !code_ok(&for_china.0) || !code_ok(&for_overseas.0) {
            c.problem(
                format!("{path}.templates[{i}].templateCode"),
                "expected an Aliyun TemplateCode such as SMS_154950909",
            );
            continue;
        }
        china.insert(usage.to_owned(), for_china.0.clone());
        overseas.insert(usage.to_owned(), for_overseas.0.clone());
    }
    Some(AliyunAccount {
        access_key_id: access_key_id?,
        access_key_secret: Secret::new(access_key_secret?),
        sign_name: sign_name?,
        china,
        overseas,
        upstream: upstream?,
    })
}

fn compile_twilio(
    c: &mut Compiler,
    path: &str,
    raw: &RawTwilio,
    base_dir: &Path,
    env: &dyn Env,
) -> Option<TwilioAccount> {
    let sid = |c: &mut Compiler, key: &str, scalar: &Scalar, prefix: &str| {
        let p = format!("{path}.{key}");
        let text = c.required(&p, scalar)?;
        let ok = text.len() == 34 && text.starts_with(prefix) && text[2..].bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            c.problem(&p, format!("expected a Twilio SID: {prefix} and 32 letters or digits"));
            return None;
        }
        Some(text)
    };
    let account_sid = sid(c, "accountSID", &raw.account_sid, "AC");
    let messaging_service_sid = sid(c, "fromMessagingServiceSID", &raw.messaging_service_sid, "MG");
    let auth_token = nonempty(c, &format!("{path}.authToken"), &raw.auth_token);
    let upstream = compile_upstream(c, path, &raw.upstream(), TWILIO_ENDPOINT, base_dir, env);
    let mut templates = Templates::default();
    if raw.templates.is_empty() {
        c.problem(format!("{path}.templates"), "list at least one template (usageType and content)");
    }
    for (i, t) in raw.templates.iter().enumerate() {
        let Some(usage) = template_usage(c, &format!("{path}.templates[{i}].usageType"), &t.usage_type.0, &templates)
        else {
            continue;
        };
        if !t.content.0.contains("{{code}}") && !t.content.0.contains("{{ code }}") {
            c.problem(format!("{path}.templates[{i}].content"), "the text must hold {{code}}, where the code goes");
            continue;
        }
        templates.insert(usage.to_owned(), t.content.0.clone());
    }
    let public_url = raw.public_url.as_ref().and_then(|u| {
        let p = format!("{path}.public_url");
        let text = c.required(&p, u)?;
        match url::Url::parse(&text) {
            Ok(url)
                if matches!(url.scheme(), "https" | "http")
                    && url.query().is_none()
                    && url.host().is_some()
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                Some(text.trim_end_matches('/').to_owned())
            }
            _ => {
                c.problem(
                    &p,
                    "expected the gateway's public base URL, like https://sms.example.com (no credentials, no query)",
                );
                None
            }
        }
    });
    let status_callback = match (&public_url, raw.status_secret.as_ref()) {
        (Some(base), Some(secret)) => Some(format!("{base}/v1/twilio/status/{}", secret.0)),
        (None, Some(_)) => {
            c.problem(
                format!("{path}.public_url"),
                "status callbacks need the URL Twilio reaches the gateway at (their signature covers it)",
            );
            None
        }
        (Some(_), None) => {
            c.problem(format!("{path}.public_url"), "applies only with status_secret");
            None
        }
        (None, None) => None,
    };
    Some(TwilioAccount {
        account_sid: account_sid?,
        auth_token: Secret::new(auth_token?),
        messaging_service_sid: messaging_service_sid?,
        disable_risk_check: raw.disable_risk_check.unwrap_or(false),
        templates,
        status_callback,
        upstream: upstream?,
    })
}

/// The usage types the tenant's providers name, per kind of number.
fn usages(tencent: Option<&TencentAccount>, aliyun: Option<&AliyunAccount>, twilio: Option<&TwilioAccount>) -> Usages {
    let mut usages = Usages::default();
    let mut add = |set: &Templates, mainland: bool, international: bool| {
        for (usage, _) in set.iter() {
            if mainland {
                usages.mainland.insert(usage.to_owned());
            }
            if international {
                usages.international.insert(usage.to_owned());
            }
        }
    };
    if let Some(t) = tencent {
        add(t.templates_for(true).0, true, false);
        add(t.templates_for(false).0, false, true);
    }
    if let Some(a) = aliyun {
        add(&a.china, true, false);
        add(&a.overseas, false, true);
    }
    if let Some(t) = twilio {
        add(&t.templates, true, true);
    }
    usages
}

/// Whether provider `id` has a template (its own or `Generic`) for `usage`, for both kinds of number.
fn can_send(
    id: ProviderId,
    usage: &str,
    tencent: Option<&TencentAccount>,
    aliyun: Option<&AliyunAccount>,
    twilio: Option<&TwilioAccount>,
) -> bool {
    match id {
        ProviderId::Tencent => {
            tencent.is_some_and(|t| [true, false].iter().all(|m| t.templates_for(*m).0.resolve(usage).is_some()))
        }
        ProviderId::Aliyun => {
            aliyun.is_some_and(|a| a.china.resolve(usage).is_some() && a.overseas.resolve(usage).is_some())
        }
        ProviderId::Twilio => twilio.is_some_and(|t| t.templates.resolve(usage).is_some()),
    }
}

/// `routes:`: each names providers the tenant configures, and the last one is the default (neither
/// countries nor prefixes) when more than one provider is configured; with one provider and no routes, one
/// default route through it. Every provider of a route can send every usage type the tenant names.
fn compile_routes(
    c: &mut Compiler,
    path: &str,
    raw: &RawTenant,
    configured: &[ProviderId],
    can_send: &dyn Fn(ProviderId, &str) -> bool,
    usages: &Usages,
) -> Option<Vec<Route>> {
    let before = c.problems.len();
    if raw.routes.is_empty() {
        return match configured {
            [one] => Some(vec![Route { countries: Vec::new(), prefixes: Vec::new(), via: vec![*one], index: None }]),
            [] => None,
            _ => {
                c.problem(
                    format!("{path}.routes"),
                    "with more than one provider, list routes ending with a default one (`- { via: [...] }`)",
                );
                None
            }
        };
    }
    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let p = format!("{path}.routes[{i}]");
        let countries: Vec<String> = r
            .countries
            .iter()
            .enumerate()
            .filter_map(|(k, code)| country_code(c, &format!("{p}.countries[{k}]"), &code.0))
            .collect();
        let mut prefixes = Vec::new();
        for (k, prefix) in r.prefixes.iter().enumerate() {
            let text = &prefix.0;
            let ok = text.len() >= 2
                && text.len() <= 16
                && text.starts_with('+')
                && text[1..].bytes().all(|b| b.is_ascii_digit());
            if ok {
                prefixes.push(text.clone());
            } else {
                c.problem(format!("{p}.prefixes[{k}]"), "expected an E.164 prefix such as +8529");
            }
        }
        let mut via = Vec::new();
        if r.via.is_empty() {
            c.problem(format!("{p}.via"), "name at least one provider");
        }
        for (k, name) in r.via.iter().enumerate() {
            let vp = format!("{p}.via[{k}]");
            match ProviderId::from_name(&name.0) {
                None => c.problem(&vp, "expected tencent, aliyun or twilio"),
                Some(id) if !configured.contains(&id) => c.problem(&vp, format!("the tenant has no `{id}:` section")),
                Some(id) if via.contains(&id) => c.problem(&vp, format!("{id} is listed twice")),
                Some(id) => {
                    let missing: Vec<&str> = usages.all().filter(|u| !can_send(id, u)).collect();
                    if !missing.is_empty() {
                        let nor =
                            if missing == [GENERIC_USAGE] { String::new() } else { format!(" (nor {GENERIC_USAGE})") };
                        c.problem(
                            &vp,
                            format!(
                                "{id} has no template for usage type {}{nor}: sends routed here would fail",
                                missing.join(", ")
                            ),
                        );
                    }
                    via.push(id);
                }
            }
        }
        let route = Route { countries, prefixes, via, index: Some(i) };
        if route.is_default() && i + 1 != raw.routes.len() {
            c.problem(&p, "a route without countries or prefixes takes every number: it must be the last one");
        }
        routes.push(route);
    }
    if routes.last().is_some_and(|r| !r.is_default()) {
        if configured.len() > 1 {
            c.problem(
                format!("{path}.routes"),
                "with more than one provider, the last route is the default one: `- { via: [...] }` without \
                 countries or prefixes",
            );
        } else {
            // One provider: numbers no route names go through it.
            routes.push(Route { countries: Vec::new(), prefixes: Vec::new(), via: configured.to_vec(), index: None });
        }
    }
    (c.problems.len() == before).then_some(routes)
}

pub(crate) fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let url = url::Url::parse(text).map_err(|_| "expected a URL like https://sms.tencentcloudapi.com".to_owned())?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("the endpoint must be an http or https URL".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("the endpoint is a scheme and host only, like https://sms.tencentcloudapi.com".into());
    }
    let host = url.host_str().ok_or("the endpoint needs a host")?;
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let uri = url.as_str().parse().map_err(|_| "the endpoint is not a valid URI".to_owned())?;
    let way = url.to_string();
    Ok(Endpoint { url, uri, host, proxy: None, way })
}

fn compile_templates(c: &mut Compiler, path: &str, raw: &[RawTemplate]) -> Templates {
    let mut templates = Templates::default();
    if raw.is_empty() {
        c.problem(path, "list at least one template (usageType and templateCode)");
    }
    for (i, t) in raw.iter().enumerate() {
        // Usage types match ignoring case: Logto's own types take Logto's spelling, and two names that differ
        // only in case are one usage type.
        let code = &t.template_code.0;
        let Some(usage) = template_usage(c, &format!("{path}[{i}].usageType"), &t.usage_type.0, &templates) else {
            continue;
        };
        if !is_digits(code) {
            c.problem(format!("{path}[{i}].templateCode"), "expected a numeric Tencent TemplateId");
        } else {
            templates.insert(usage.to_owned(), code.clone());
        }
    }
    templates
}

/// A rule's `usage` entry in its canonical spelling. It must be a usage type a send can be judged under:
/// one the tenant has a template for, or `Generic` (every usage type without a template of its own is judged
/// as `Generic`). Anything else would leave the rule silently dead, so it is an error.
fn rule_usage(name: &str, usages: &Usages) -> Result<String, String> {
    if !is_name(name) {
        return Err("expected a usage type such as SignIn".into());
    }
    let canonical = usages.spelling(name).or_else(|| logto_usage(name));
    match canonical {
        Some(usage) if usage == GENERIC_USAGE || usages.names(usage) => Ok(usage.to_owned()),
        Some(usage) => Err(format!(
            "the tenant has no template for usage type {usage}: such sends use the Generic template and are \
             judged as Generic, so this rule would never apply (add a {usage} template or name Generic)"
        )),
        None => Err(format!(
            "unknown usage type {name}: name one of the tenant's templates or one of Logto's usage types \
             ({})",
            LOGTO_USAGES.join(", ")
        )),
    }
}

fn compile_limits(c: &mut Compiler, tenant: &str, path: &str, raw: &[RawLimit], usages: &Usages) -> Vec<LimitRule> {
    let mut names = HashSet::new();
    let mut rules = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let name = r.name.0.clone();
        if !is_name(&name) {
            c.problem(format!("{p}.name"), "rule names use letters, digits, `_` and `-`");
        } else if !names.insert(name.clone()) {
            c.problem(format!("{p}.name"), format!("rule name {name} is used twice"));
        }
        let key = match r.key {
            RawLimitKey::Phone => LimitKey::Phone,
            RawLimitKey::Tenant => LimitKey::Tenant,
            RawLimitKey::Ip => LimitKey::Ip,
            RawLimitKey::Country => LimitKey::Country,
            RawLimitKey::PhonePrefix(n @ 1..=15) => LimitKey::PhonePrefix(n),
            RawLimitKey::PhonePrefix(_) => {
                c.problem(format!("{p}.key.phone_prefix"), "a prefix has 1 to 15 digits");
                LimitKey::Phone
            }
        };
        let Some(limit) = NonZeroU32::new(r.limit).filter(|l| l.get() <= MAX_LIMIT) else {
            c.problem(format!("{p}.limit"), format!("must be between 1 and {MAX_LIMIT}"));
            continue;
        };
        let before = c.problems.len();
        let per = c.duration(&format!("{p}.per"), Some(&r.per), Duration::ZERO, LIMIT_PERIOD_RANGE);
        if c.problems.len() == before && per.as_millis() < u128::from(limit.get()) {
            c.problem(format!("{p}.limit"), "more than one per millisecond: lower limit or raise per");
        }
        let mut rule_usages = Vec::new();
        for (j, u) in r.usage.iter().enumerate() {
            match rule_usage(&u.0, usages) {
                Ok(usage) if rule_usages.contains(&usage) => {
                    c.problem(format!("{p}.usage[{j}]"), format!("usage type {usage} is listed twice"))
                }
                Ok(usage) => rule_usages.push(usage),
                Err(message) => c.problem(format!("{p}.usage[{j}]"), message),
            }
        }
        if c.problems.len() != before {
            continue;
        }
        let mut h = DefaultHasher::new();
        (tenant, &name, key, limit, per, &rule_usages, r.shadow).hash(&mut h);
        rules.push(LimitRule { id: h.finish(), name, key, limit, per, usages: rule_usages, shadow: r.shadow });
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("100B"), Ok(100));
        for bad in ["1MB", "1 MiB", "MiB", "-1", "1.5MiB", "99999999999999999999MiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
