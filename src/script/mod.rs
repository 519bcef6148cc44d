//! Script stage: a tenant's Lua hook (`on_send(req)`) may rewrite the number, usage, params, template, sign
//! name or region, or refuse the request. Whatever it changes is checked again here, as strictly as ingress
//! and config values are. Scripts compile with the config; a pool of ready Lua states per script serves the
//! calls, so no request compiles anything. The hook never reaches files, the network, the environment or
//! the process (see `sandbox.rs` and `prelude.lua`).

mod sandbox;

use crate::config::Tenant;
use crate::error::GatewayError;
use crate::ingress::SendRequest;
use crate::phone::{mask_numbers, Phone};
use sandbox::Sandbox;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub const DEFAULT_INSTRUCTIONS: u32 = 200_000;
pub const DEFAULT_MEMORY: usize = 1 << 20;
const MAX_SCRIPT_BYTES: u64 = 1 << 20;
const MAX_REJECT_CHARS: usize = 100;
const MAX_PARAMS: usize = 16;
const MAX_PARAM_CHARS: usize = 64;
const MAX_SHORT: usize = 64;

/// Per-call budgets of a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptLimits {
    /// Lua VM instructions one call may run (counted in steps of 1,000).
    pub instructions: u32,
    /// Bytes one call may allocate beyond what the loaded script holds.
    pub memory: usize,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits { instructions: DEFAULT_INSTRUCTIONS, memory: DEFAULT_MEMORY }
    }
}

/// What a failing hook (error, overrun, bad return) does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnScriptError {
    /// `500 script_error`: a broken policy must not be bypassed silently.
    Reject,
    /// Log it and go on as if the tenant had no hook.
    Skip,
}

/// Read-only tenant settings the script sees as `smsgate.tenant`. Never a secret.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub name: String,
    pub default_country: Option<String>,
    pub sign_name: Option<String>,
    pub region: Option<String>,
    pub sdk_app_id: Option<String>,
    pub templates: Vec<(String, String)>,
}

/// One request as the hook sees it.
#[derive(Clone)]
pub struct HookInput<'a> {
    pub tenant: &'a str,
    /// None when the number as written did not parse; the hook may still supply one.
    pub phone: Option<&'a Phone>,
    pub raw_phone: &'a str,
    pub usage: &'a str,
    pub code: Option<&'a str>,
    pub params: &'a [String],
    pub ip: Option<String>,
    pub locale: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

/// What the hook returned, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawVerdict {
    Reject(String),
    /// Each field is Some when the hook set or changed it.
    Proceed {
        phone: Option<String>,
        usage: Option<String>,
        params: Option<Vec<String>>,
        template_id: Option<String>,
        sign_name: Option<String>,
        region: Option<String>,
    },
}

/// A tenant's compiled hook and its pool of Lua states.
pub struct ScriptHook {
    path: String,
    source: String,
    settings: Settings,
    tenant: Arc<str>,
    pub limits: ScriptLimits,
    pub on_error: OnScriptError,
    pool: Mutex<Vec<Sandbox>>,
    max_pooled: usize,
}

impl std::fmt::Debug for ScriptHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptHook")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl ScriptHook {
    /// Reads and compiles `file` (named `path` as the config writes it, in errors and Lua line numbers) and
    /// fills the pool: one state per core, since calls run inline on the runtime's worker threads.
    pub fn load(
        path: &str,
        file: &Path,
        settings: Settings,
        limits: ScriptLimits,
        on_error: OnScriptError,
    ) -> Result<ScriptHook, String> {
        // Regular files only, read with a bound: a FIFO or a device must not hang or exhaust the config load.
        let source = crate::files::read_text(file, MAX_SCRIPT_BYTES).map_err(|e| format!("cannot read {path}: {e}"))?;
        ScriptHook::from_source(path, source, settings, limits, on_error)
    }

    /// Compiles a script given as text; `path` names it in errors and line numbers.
    pub fn from_source(
        path: &str,
        source: String,
        settings: Settings,
        limits: ScriptLimits,
        on_error: OnScriptError,
    ) -> Result<ScriptHook, String> {
        let tenant: Arc<str> = settings.name.as_str().into();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut states = Vec::with_capacity(cores);
        for _ in 0..cores {
            states.push(Sandbox::new(path, &source, &settings, limits, tenant.clone())?);
        }
        Ok(ScriptHook {
            path: path.to_owned(),
            source,
            settings,
            tenant,
            limits,
            on_error,
            pool: Mutex::new(states),
            max_pooled: cores * 4,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Calls `on_send` on a pooled state. The error is for the log (file and line, numbers unmasked).
    pub fn call(&self, input: &HookInput<'_>) -> Result<RawVerdict, String> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let sandbox = match pooled {
            Some(s) => s,
            // More threads than cores call at once (a bench, explain beside serve): grow the pool once.
            None => Sandbox::new(&self.path, &self.source, &self.settings, self.limits, self.tenant.clone())?,
        };
        let result =
            sandbox.call(input).map_err(|e| if e.starts_with(&self.path) { e } else { format!("{}: {e}", self.path) });
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.max_pooled {
            pool.push(sandbox);
        }
        result
    }

    /// Bytes held by the pooled states after a full collection.
    pub fn used_memory(&self) -> usize {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).iter().map(Sandbox::used_memory).sum()
    }
}

/// Text fit for a log: digit runs that could be phone numbers masked, and the verification code removed.
pub fn redact(text: &str, code: Option<&str>) -> String {
    let text = match code {
        Some(code) if !code.is_empty() => text.replace(code, "***"),
        _ => text.to_owned(),
    };
    mask_numbers(&text).into_owned()
}

/// One change the hook made, for explain and the request log.
#[derive(Clone, PartialEq, Eq)]
pub struct Change {
    pub field: &'static str,
    pub from: Option<String>,
    pub to: String,
}

impl std::fmt::Debug for Change {
    // By hand: a rewritten number must not reach a log through `{:?}` unmasked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field("field", &self.field)
            .field("from", &self.from.as_deref().map(mask_numbers))
            .field("to", &mask_numbers(&self.to))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptOutcome {
    Changed(Vec<Change>),
    Rejected(String),
    Failed(String),
    /// Failed with `on_script_error: skip`: the request went on unhooked.
    Skipped(String),
}

/// What the script stage did, for the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptReport {
    pub path: String,
    /// The number as normalized before the hook (None when it did not parse).
    pub before: Option<Phone>,
    pub outcome: ScriptOutcome,
}

impl ScriptReport {
    /// One word per outcome, for metric labels (bounded).
    pub fn result(&self) -> &'static str {
        match &self.outcome {
            ScriptOutcome::Changed(c) if c.is_empty() => "unchanged",
            ScriptOutcome::Changed(_) => "changed",
            ScriptOutcome::Rejected(_) => "rejected",
            ScriptOutcome::Failed(_) => "failed",
            ScriptOutcome::Skipped(_) => "skipped",
        }
    }

    /// A short word or the changed field names for the request log, no values.
    pub fn summary(&self) -> String {
        match &self.outcome {
            ScriptOutcome::Changed(c) if !c.is_empty() => {
                format!("changed {}", c.iter().map(|c| c.field).collect::<Vec<_>>().join(","))
            }
            _ => self.result().to_owned(),
        }
    }
}

/// The request after the script stage: what the later stages use.
#[derive(Debug, Clone)]
pub struct Routed {
    pub phone: Phone,
    pub usage: String,
    pub params: Vec<String>,
    pub template_id: Option<String>,
    pub sign_name: Option<String>,
    pub region: Option<String>,
}

/// The script stage. `normalized` is the normalize stage's result: a hook may repair a number that did not
/// parse; without a repair such a request stays `invalid_phone`.
pub fn stage(
    hook: &ScriptHook,
    tenant: &Tenant,
    request: &SendRequest,
    normalized: Result<Phone, GatewayError>,
    request_id: Option<&str>,
) -> (Result<Routed, GatewayError>, ScriptReport) {
    let before = normalized.as_ref().ok().cloned();
    let raw_phone = match &request.phone {
        crate::ingress::PhoneInput::Logto(s) | crate::ingress::PhoneInput::Native(s) => s.as_str(),
    };
    let input = HookInput {
        tenant: &tenant.name,
        phone: before.as_ref(),
        raw_phone,
        usage: &request.usage,
        code: request.code.as_deref(),
        params: &request.params,
        ip: request.ip.map(|ip| ip.to_string()),
        locale: request.locale.as_deref(),
        request_id,
    };
    let report = |outcome| ScriptReport { path: hook.path.clone(), before: before.clone(), outcome };
    let checked = hook.call(&input).and_then(|verdict| check(tenant, &input, verdict));
    let code = request.code.as_deref();
    match checked {
        Ok(Checked::Routed(routed, changes)) => (Ok(routed), report(ScriptOutcome::Changed(changes))),
        Ok(Checked::NoNumber) => {
            (Err(GatewayError::InvalidPhone { upstream: None }), report(ScriptOutcome::Changed(Vec::new())))
        }
        Ok(Checked::Reject(message)) => {
            let message = public_reject(&message, code);
            (Err(GatewayError::Rejected(message.clone())), report(ScriptOutcome::Rejected(message)))
        }
        Err(detail) => {
            let detail = redact(&detail, code);
            match hook.on_error {
                OnScriptError::Reject => {
                    (Err(GatewayError::ScriptError(detail.clone())), report(ScriptOutcome::Failed(detail)))
                }
                OnScriptError::Skip => {
                    tracing::warn!(tenant = %tenant.name, request_id = request_id.unwrap_or(""), script = %hook.path,
                        detail = %detail, "script failed; on_script_error: skip, going on without it");
                    let unhooked = normalized.map(|phone| Routed {
                        phone,
                        usage: request.usage.clone(),
                        params: request.params.clone(),
                        template_id: None,
                        sign_name: None,
                        region: None,
                    });
                    (unhooked, report(ScriptOutcome::Skipped(detail)))
                }
            }
        }
    }
}

/// The reject message as the caller sees it: one short line, never the code.
fn public_reject(message: &str, code: Option<&str>) -> String {
    let mut text: String = message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if let Some(code) = code.filter(|c| !c.is_empty()) {
        text = text.replace(code, "***");
    }
    let text = text.trim();
    let text: String = text.chars().take(MAX_REJECT_CHARS).collect();
    if text.is_empty() {
        "This request was refused.".into()
    } else {
        text
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SHORT && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

enum Checked {
    Routed(Routed, Vec<Change>),
    Reject(String),
    /// Neither the caller nor the hook gave a valid number: the caller's fault, as without a hook.
    NoNumber,
}

/// Checks the hook's changes as strictly as ingress and config values; `Err` is the hook's fault
/// (`script_error`).
fn check(tenant: &Tenant, input: &HookInput<'_>, verdict: RawVerdict) -> Result<Checked, String> {
    let (phone, usage, params, template_id, sign_name, region) = match verdict {
        RawVerdict::Reject(message) => return Ok(Checked::Reject(message)),
        RawVerdict::Proceed { phone, usage, params, template_id, sign_name, region } => {
            (phone, usage, params, template_id, sign_name, region)
        }
    };
    let mut changes = Vec::new();
    let final_phone = match (phone, input.phone) {
        (Some(text), before) => match Phone::from_native(&text, tenant.default_country) {
            Ok(parsed) => {
                changes.push(Change {
                    field: "phone",
                    from: before.map(|p| p.e164().to_owned()),
                    to: parsed.e164().into(),
                });
                parsed
            }
            // A failed repair of a number that was already invalid stays the caller's fault; breaking a
            // valid number is the hook's.
            Err(_) if before.is_none() => return Ok(Checked::NoNumber),
            Err(_) => return Err("on_send set req.phone to a number that does not parse".into()),
        },
        (None, Some(before)) => before.clone(),
        (None, None) => return Ok(Checked::NoNumber),
    };
    let final_usage = match usage {
        Some(u) if is_name(&u) => {
            changes.push(Change { field: "usage", from: Some(input.usage.to_owned()), to: u.clone() });
            u
        }
        Some(_) => return Err("req.usage must be a usage type such as SignIn".into()),
        None => input.usage.to_owned(),
    };
    let final_params = match params {
        Some(p) => {
            if p.is_empty() || p.len() > MAX_PARAMS {
                return Err(format!("req.params must hold 1 to {MAX_PARAMS} values"));
            }
            if p.iter().any(|v| v.is_empty() || v.chars().count() > MAX_PARAM_CHARS || v.chars().any(char::is_control))
            {
                return Err(format!("each of req.params must be 1 to {MAX_PARAM_CHARS} printable characters"));
            }
            changes.push(Change { field: "params", from: None, to: format!("{} value(s)", p.len()) });
            p
        }
        None => input.params.to_vec(),
    };
    if let Some(id) = &template_id {
        // Only a template of the number's kind (mainland or international, when the tenant has both).
        if !tenant.templates_for(final_phone.is_mainland_china()).0.contains_id(id) {
            return Err(format!(
                "req.template_id {} is not one of the tenant's templates for this number",
                mask_numbers(id)
            ));
        }
        changes.push(Change { field: "template_id", from: None, to: id.clone() });
    }
    if let Some(name) = &sign_name {
        if name.trim().is_empty() || name.chars().count() > MAX_SHORT || name.chars().any(char::is_control) {
            return Err(format!("req.sign_name must be 1 to {MAX_SHORT} printable characters"));
        }
        changes.push(Change { field: "sign_name", from: tenant.tencent.sign_name.clone(), to: name.clone() });
    }
    if let Some(r) = &region {
        let ok = matches!(r.split_once('-'), Some((a, b)) if a.len() == 2
            && a.bytes().all(|x| x.is_ascii_lowercase())
            && !b.is_empty() && r.len() <= MAX_SHORT
            && b.bytes().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == b'-'));
        if !ok {
            return Err("req.region must be a Tencent Cloud region such as ap-singapore".into());
        }
        changes.push(Change { field: "region", from: Some(tenant.tencent.region.clone()), to: r.clone() });
    }
    let routed =
        Routed { phone: final_phone, usage: final_usage, params: final_params, template_id, sign_name, region };
    Ok(Checked::Routed(routed, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(source: &str) -> ScriptHook {
        hook_with(source, ScriptLimits::default())
    }

    fn hook_with(source: &str, limits: ScriptLimits) -> ScriptHook {
        let settings = Settings {
            name: "acme".into(),
            default_country: Some("CN".into()),
            sign_name: Some("Sig".into()),
            region: Some("ap-guangzhou".into()),
            sdk_app_id: Some("1400006666".into()),
            templates: vec![("SignIn".into(), "1110".into()), ("Generic".into(), "1113".into())],
        };
        ScriptHook::from_source("t.lua", source.into(), settings, limits, OnScriptError::Reject)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn call(hook: &ScriptHook, params: &[&str]) -> Result<RawVerdict, String> {
        let phone = Phone::from_e164("+8613800138000").unwrap();
        let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
        hook.call(&HookInput {
            tenant: "acme",
            phone: Some(&phone),
            raw_phone: "13800138000",
            usage: "SignIn",
            code: Some("123456"),
            params: &params,
            ip: None,
            locale: None,
            request_id: Some("r1"),
        })
    }

    fn unchanged() -> RawVerdict {
        RawVerdict::Proceed { phone: None, usage: None, params: None, template_id: None, sign_name: None, region: None }
    }

    #[test]
    fn only_safe_globals_exist() {
        let h = hook(
            r#"
            function on_send(req)
              for _, name in ipairs({"io", "os", "package", "require", "debug", "load", "loadstring", "dofile",
                                     "loadfile", "collectgarbage", "print", "rawset", "coroutine"}) do
                if _G[name] ~= nil then return {reject = name} end
              end
              if string.dump ~= nil or ("").dump ~= nil then return {reject = "string.dump"} end
              if getmetatable("") ~= false then return {reject = "string metatable"} end
              for _, name in ipairs({"string", "table", "math", "utf8", "pcall", "pairs", "tostring", "smsgate"}) do
                if _G[name] == nil then return {reject = "missing " .. name} end
              end
            end"#,
        );
        assert_eq!(call(&h, &["1"]), Ok(unchanged()));
    }

    #[test]
    fn libraries_and_settings_are_read_only() {
        let h = hook(
            r#"
            function on_send(req)
              local which = req.params[1]
              if which == "string" then string.upper = nil end
              if which == "settings" then smsgate.tenant.region = "x" end
              if which == "templates" then smsgate.tenant.templates.SignIn = "9" end
              if which == "meta" then setmetatable(string, {}) end
              if which == "read" then
                local n = 0
                for k, v in pairs(smsgate.tenant.templates) do n = n + 1 end
                if n ~= 2 or smsgate.tenant.templates.SignIn ~= "1110" or smsgate.tenant.default_country ~= "CN" then
                  return {reject = "settings"}
                end
              end
            end"#,
        );
        for which in ["string", "settings", "templates", "meta"] {
            let e = call(&h, &[which]).unwrap_err();
            assert!(e.starts_with("t.lua:"), "{which}: {e}");
        }
        assert_eq!(call(&h, &["read"]), Ok(unchanged()));
    }

    #[test]
    fn globals_of_one_call_never_reach_the_next() {
        let h = hook(
            r#"
            LIMIT = 3
            function on_send(req)
              if seen ~= nil or _G.also ~= nil then return {reject = "leak"} end
              seen = req.phone
              _G.also = true
              LIMIT = 4
            end"#,
        );
        for _ in 0..10 {
            assert_eq!(call(&h, &["1"]), Ok(unchanged()));
        }
    }

    #[test]
    fn budgets_end_the_call_and_pcall_cannot_swallow_them() {
        let h = hook_with(
            r#"
            function on_send(req)
              local which = req.params[1]
              if which == "loop" then while true do end end
              if which == "pcall" then while true do pcall(function() while true do end end) end end
              if which == "memory" then local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 4096) end end
              if which == "rep" then return {reject = string.rep("x", 1 << 30)} end
            end"#,
            ScriptLimits { instructions: 100_000, memory: 256 << 10 },
        );
        for which in ["loop", "pcall"] {
            let e = call(&h, &[which]).unwrap_err();
            assert!(e.contains("instruction budget exhausted (100000 per call)"), "{which}: {e}");
            assert!(e.starts_with("t.lua:"), "{which}: {e}");
        }
        for which in ["memory", "rep"] {
            let e = call(&h, &[which]).unwrap_err();
            assert!(e.contains("memory limit exceeded"), "{which}: {e}");
        }
        // The state serves again after each failure.
        assert_eq!(call(&h, &["fine"]), Ok(unchanged()));
    }

    #[test]
    fn return_values_and_fields_are_checked() {
        let h = hook(
            r#"
            function on_send(req)
              local which = req.params[1]
              if which == "number" then return 5 end
              if which == "table" then return {} end
              if which == "typo" then req.templat_id = "1" end
              if which == "readonly" then req.country = "US" end
              if which == "params" then req.params = {"a", {}} end
              if which == "req" then req.template_id = 1113 return req end
              if which == "reject" then return {reject = "no"} end
            end"#,
        );
        let e = call(&h, &["number"]).unwrap_err();
        assert!(e.contains("returned a number"), "{e}");
        assert!(call(&h, &["table"]).unwrap_err().contains("without a string `reject`"));
        assert!(call(&h, &["typo"]).unwrap_err().contains("req.templat_id"));
        assert!(call(&h, &["readonly"]).unwrap_err().contains("req.country is read-only"));
        assert!(call(&h, &["params"]).unwrap_err().contains("req.params[2]"));
        assert_eq!(call(&h, &["reject"]), Ok(RawVerdict::Reject("no".into())));
        let RawVerdict::Proceed { template_id, .. } = call(&h, &["req"]).unwrap() else { panic!() };
        assert_eq!(template_id.as_deref(), Some("1113"));
    }

    #[test]
    fn parse_phone_and_log() {
        let h = hook(
            r#"
            function on_send(req)
              local e164, country = smsgate.parse_phone("0086 138 0013 8000")
              if e164 ~= "+8613800138000" or country ~= "CN" then return {reject = "intl"} end
              local e, c = smsgate.parse_phone("13800138000", "CN")
              if e ~= "+8613800138000" then return {reject = "national"} end
              if smsgate.parse_phone("garbage") ~= nil then return {reject = "garbage"} end
              for i = 1, 100 do smsgate.log("info", "number " .. req.phone .. " code " .. req.code) end
              if req.params[1] == "badlevel" then smsgate.log("loud", "x") end
            end"#,
        );
        assert_eq!(call(&h, &["1"]), Ok(unchanged()));
        let e = call(&h, &["badlevel"]).unwrap_err();
        assert!(e.starts_with("t.lua:9: smsgate.log: level must be"), "{e}");
    }

    #[test]
    fn syntax_and_load_errors_name_file_and_line() {
        let settings = Settings::default();
        let e = ScriptHook::from_source(
            "s/x.lua",
            "local x = \n\nfunction (".into(),
            settings.clone(),
            ScriptLimits::default(),
            OnScriptError::Reject,
        )
        .unwrap_err();
        assert!(e.starts_with("s/x.lua:3:"), "{e}");
        let e = ScriptHook::from_source(
            "s/x.lua",
            "x = 1".into(),
            settings.clone(),
            ScriptLimits::default(),
            OnScriptError::Reject,
        )
        .unwrap_err();
        assert_eq!(e, "s/x.lua: the script must define function on_send(req)");
        let e = ScriptHook::from_source(
            "s/x.lua",
            "\nerror('boom')".into(),
            settings,
            ScriptLimits::default(),
            OnScriptError::Reject,
        )
        .unwrap_err();
        assert_eq!(e, "s/x.lua:2: boom");
    }

    /// Collects what the hook writes to the log on this thread.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hook_log_lines_are_masked_capped_and_carry_the_request() {
        let h = hook(
            r#"
            function on_send(req)
              for i = 1, 50 do smsgate.log("warn", "number " .. req.phone .. " raw " .. req.raw_phone .. " code " .. req.code) end
            end"#,
        );
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, || assert_eq!(call(&h, &["1"]), Ok(unchanged())));
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.lines().count(), 20, "{log}");
        let first = log.lines().next().unwrap();
        assert!(first.contains("number +861****00 raw 138****00 code ***"), "{first}");
        assert!(
            first.contains("tenant=acme") && first.contains("request_id=\"r1\"") && first.contains("script=t.lua"),
            "{first}"
        );
        assert!(!log.contains("13800138000") && !log.contains("123456"), "{log}");
    }

    #[test]
    fn redaction_removes_code_and_masks_numbers() {
        assert_eq!(
            redact("t.lua:3: bad +8613800138000 code 123456", Some("123456")),
            "t.lua:3: bad +861****00 code ***"
        );
    }
}
