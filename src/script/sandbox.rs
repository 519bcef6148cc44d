//! One Lua state of a tenant's hook: the sandbox it runs in (safe libraries only, see `prelude.lua`), its
//! instruction and memory budgets, the `smsgate` API, and one call of `on_send`. A state is built once (the
//! script compiled then) and reused for many calls; it never touches files, the network or the process.

use super::{HookInput, RawVerdict, ScriptLimits, Settings};
use crate::phone::Phone;
use mlua::{ChunkMode, Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};
use std::sync::{Arc, Mutex, MutexGuard};

const PRELUDE: &str = include_str!("prelude.lua");
/// How often the instruction hook runs; the budget is counted in these steps.
const STEP: u32 = 1_000;
/// Log lines one call may write; more are dropped so a looping script cannot flood the log.
const MAX_LOG_LINES: u32 = 20;
const MAX_LOG_CHARS: usize = 512;
/// Loading the script (its top level: constants, tables) may take this many times a call's budget.
const LOAD_FACTOR: u32 = 10;

/// What the host shares with the hook and the API functions during one call.
struct CallContext {
    steps_left: u32,
    /// The instruction budget ran out; `pcall` must not swallow that.
    spent: bool,
    overrun_at: Option<String>,
    logs: u32,
    request_id: Option<String>,
    code: Option<String>,
}

pub(super) struct Sandbox {
    lua: Lua,
    on_send: Function,
    dispatch_meta: Table,
    env_meta: Table,
    context: Arc<Mutex<CallContext>>,
    steps: u32,
    memory_budget: usize,
}

fn lock(context: &Mutex<CallContext>) -> MutexGuard<'_, CallContext> {
    // A panic while holding this lock cannot leave it half-written in a way that matters: recover.
    context.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The innermost, one-line message of a Lua error (mlua wraps callback errors and adds tracebacks).
pub(super) fn describe(e: &mlua::Error) -> String {
    match e {
        // Lua appends a traceback to runtime errors; the first part carries file, line and message.
        mlua::Error::RuntimeError(m) => m.split("\nstack traceback:").next().unwrap_or_default().to_owned(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(_) => "memory limit exceeded".into(),
        mlua::Error::CallbackError { cause, .. } => describe(cause),
        mlua::Error::WithContext { cause, .. } => describe(cause),
        other => other.to_string().lines().next().unwrap_or_default().to_owned(),
    }
}

impl Sandbox {
    /// Builds a state and runs the script's top level in it. Errors read `scripts/x.lua:12: message`.
    pub(super) fn new(
        path: &str,
        source: &str,
        settings: &Settings,
        limits: ScriptLimits,
        tenant: Arc<str>,
    ) -> Result<Sandbox, String> {
        let lua = Lua::new_with(StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8, LuaOptions::default())
            .map_err(|e| format!("{path}: cannot create a Lua state: {}", describe(&e)))?;
        let steps = limits.instructions.div_ceil(STEP).max(1);
        let context = Arc::new(Mutex::new(CallContext {
            steps_left: steps * LOAD_FACTOR,
            spent: false,
            overrun_at: None,
            logs: 0,
            request_id: None,
            code: None,
        }));
        let fail = |e: mlua::Error| {
            let message = describe(&e);
            if message.starts_with(path) {
                message
            } else {
                format!("{path}: {message}")
            }
        };
        let (d, dispatch_meta, env_meta) =
            Self::prelude(&lua, &context, settings, tenant, path).map_err(|e| format!("{path}: setup: {e}"))?;
        let hook_context = context.clone();
        let budget = limits.instructions;
        lua.set_hook(HookTriggers::new().every_nth_instruction(STEP.min(budget)), move |_, debug| {
            let mut cx = lock(&hook_context);
            if cx.steps_left > 0 {
                cx.steps_left -= 1;
                return Ok(VmState::Continue);
            }
            let at = match (debug.source().short_src, debug.current_line()) {
                (Some(src), Some(line)) => format!("{src}:{line}: "),
                _ => String::new(),
            };
            let message = format!("{at}instruction budget exhausted ({budget} per call)");
            cx.spent = true;
            cx.overrun_at.get_or_insert_with(|| message.clone());
            Err(mlua::Error::runtime(message))
        })
        .map_err(|e| format!("{path}: {}", describe(&e)))?;
        lua.set_memory_limit(limits.memory.saturating_mul(LOAD_FACTOR as usize).saturating_add(lua.used_memory()))
            .map_err(|e| format!("{path}: {}", describe(&e)))?;

        let chunk = lua
            .load(source)
            .set_name(format!("@{path}"))
            .set_mode(ChunkMode::Text)
            .set_environment(d.clone())
            .into_function()
            .map_err(fail)?;
        chunk.call::<()>(()).map_err(|e| Self::overrun(&context).unwrap_or_else(|| fail(e)))?;
        let on_send = match d.get::<Value>("on_send").map_err(fail)? {
            Value::Function(f) => f,
            _ => return Err(format!("{path}: the script must define function on_send(req)")),
        };
        lua.gc_collect().map_err(fail)?;
        lua.gc_collect().map_err(fail)?;
        // The per-call budget counts from what the loaded script holds.
        let memory_limit = lua.used_memory().saturating_add(limits.memory);
        lua.set_memory_limit(memory_limit).map_err(fail)?;
        Ok(Sandbox { lua, on_send, dispatch_meta, env_meta, context, steps, memory_budget: limits.memory })
    }

    fn prelude(
        lua: &Lua,
        context: &Arc<Mutex<CallContext>>,
        settings: &Settings,
        tenant: Arc<str>,
        path: &str,
    ) -> mlua::Result<(Table, Table, Table)> {
        let cx = context.clone();
        let spent = lua.create_function(move |_, ()| Ok(lock(&cx).spent))?;
        let cx = context.clone();
        let script: Arc<str> = path.into();
        let emit = lua.create_function(move |_, (level, message): (String, mlua::String)| {
            let (request_id, code) = {
                let mut cx = lock(&cx);
                cx.logs += 1;
                if cx.logs > MAX_LOG_LINES {
                    return Ok(());
                }
                (cx.request_id.clone(), cx.code.clone())
            };
            let message = message.to_string_lossy();
            let message = super::redact(truncate(&message, MAX_LOG_CHARS), code.as_deref());
            let request_id = request_id.as_deref().unwrap_or("");
            macro_rules! emit {
                ($level:expr) => {
                    tracing::event!(target: "smsgate::script", $level, tenant = %tenant, request_id, script = %script, "{message}")
                };
            }
            match level.as_str() {
                "trace" => emit!(tracing::Level::TRACE),
                "debug" => emit!(tracing::Level::DEBUG),
                "info" => emit!(tracing::Level::INFO),
                "warn" => emit!(tracing::Level::WARN),
                _ => emit!(tracing::Level::ERROR),
            }
            Ok(())
        })?;
        let parse_phone = lua.create_function(|_, (text, country): (String, Option<String>)| {
            let country = country.and_then(|c| c.parse::<phonenumber::country::Id>().ok());
            Ok(match Phone::from_native(&text, country) {
                Ok(p) => (Some(p.e164().to_owned()), Some(p.country_code().to_owned())),
                Err(_) => (None, None),
            })
        })?;
        let s = lua.create_table()?;
        s.raw_set("name", settings.name.as_str())?;
        s.raw_set("default_country", settings.default_country.as_deref())?;
        s.raw_set("sign_name", settings.sign_name.as_deref())?;
        s.raw_set("region", settings.region.as_deref())?;
        s.raw_set("sdk_app_id", settings.sdk_app_id.as_deref())?;
        let templates = lua.create_table()?;
        for (usage, id) in &settings.templates {
            templates.raw_set(usage.as_str(), id.as_str())?;
        }
        s.raw_set("templates", templates)?;
        lua.load(PRELUDE).set_name("=smsgate prelude").call((spent, emit, parse_phone, s))
    }

    fn overrun(context: &Mutex<CallContext>) -> Option<String> {
        lock(context).overrun_at.clone()
    }

    /// Runs `on_send(req)` once within the budgets. The error is the script's fault, as one line.
    pub(super) fn call(&self, input: &HookInput<'_>) -> Result<RawVerdict, String> {
        {
            let mut cx = lock(&self.context);
            cx.steps_left = self.steps;
            cx.spent = false;
            cx.overrun_at = None;
            cx.logs = 0;
            cx.request_id = input.request_id.map(str::to_owned);
            cx.code = input.code.map(str::to_owned);
        }
        let result = self.run(input);
        let result = match result {
            Err(e) => Err(Self::overrun(&self.context).unwrap_or_else(|| match e {
                mlua::Error::MemoryError(_) => {
                    format!("memory limit exceeded ({} KiB per call)", self.memory_budget >> 10)
                }
                e => describe(&e),
            })),
            Ok(Err(message)) => Err(message),
            Ok(Ok(verdict)) => Ok(verdict),
        };
        if result.is_err() {
            // A failed call may leave much garbage (a memory bomb); free it before the next call counts.
            let _ = self.lua.gc_collect();
        }
        result
    }

    fn run(&self, input: &HookInput<'_>) -> mlua::Result<Result<RawVerdict, String>> {
        let lua = &self.lua;
        let env = lua.create_table()?;
        env.set_metatable(Some(self.env_meta.clone()))?;
        self.dispatch_meta.raw_set("__index", &env)?;
        self.dispatch_meta.raw_set("__newindex", &env)?;

        let req = lua.create_table_with_capacity(0, 12)?;
        req.raw_set("tenant", input.tenant)?;
        req.raw_set("phone", input.phone.map(Phone::e164))?;
        req.raw_set("raw_phone", input.raw_phone)?;
        req.raw_set("country", input.phone.map(Phone::country_code))?;
        req.raw_set("usage", input.usage)?;
        req.raw_set("code", input.code)?;
        req.raw_set("params", lua.create_sequence_from(input.params.iter().map(String::as_str))?)?;
        req.raw_set("ip", input.ip.as_deref())?;
        req.raw_set("locale", input.locale)?;

        let returned: Value = self.on_send.call(&req)?;
        match returned {
            Value::Nil => {}
            Value::Table(t) if t == req => {}
            Value::Table(t) => {
                return Ok(match t.raw_get::<Value>("reject")? {
                    Value::String(s) => Ok(RawVerdict::Reject(s.to_string_lossy())),
                    _ => Err("on_send returned a table without a string `reject` (return nothing, req, or {reject = \"message\"})".into()),
                });
            }
            other => {
                let kind = match other {
                    Value::Integer(_) | Value::Number(_) => "number",
                    other => other.type_name(),
                };
                return Ok(Err(format!(
                    "on_send returned a {kind} (return nothing, req, or {{reject = \"message\"}})"
                )));
            }
        }
        Ok(read_back(&req, input))
    }

    /// Bytes held by this state after a full collection (for the leak test and the bench).
    pub(super) fn used_memory(&self) -> usize {
        let _ = self.lua.gc_collect();
        let _ = self.lua.gc_collect();
        self.lua.used_memory()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((cut, _)) => &s[..cut],
        None => s,
    }
}

const READ_ONLY: [&str; 6] = ["tenant", "raw_phone", "country", "code", "ip", "locale"];
const WRITABLE: [&str; 6] = ["phone", "usage", "params", "template_id", "sign_name", "region"];

/// An optional text field the hook may set: a string, or an integer written as digits.
fn text(req: &Table, field: &str) -> Result<Option<String>, String> {
    match req.raw_get::<Value>(field).map_err(|e| describe(&e))? {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(s.to_string_lossy())),
        Value::Integer(i) => Ok(Some(i.to_string())),
        other => Err(format!("req.{field} must be a string, not a {}", other.type_name())),
    }
}

/// What the hook left in `req`: only the writable fields may differ from what it was given.
fn read_back(req: &Table, input: &HookInput<'_>) -> Result<RawVerdict, String> {
    let mut unknown = None;
    req.for_each::<Value, Value>(|k, _| {
        let known = match &k {
            Value::String(s) => {
                let s = s.to_string_lossy();
                READ_ONLY.contains(&s.as_str()) || WRITABLE.contains(&s.as_str())
            }
            _ => false,
        };
        if !known && unknown.is_none() {
            unknown = Some(match k {
                Value::String(s) => format!("req.{}", truncate(&s.to_string_lossy(), 32)),
                other => format!("a {} key", other.type_name()),
            });
        }
        Ok(())
    })
    .map_err(|e| describe(&e))?;
    if let Some(field) = unknown {
        return Err(format!(
            "on_send set {field}; the hook may set phone, usage, params, template_id, sign_name, region"
        ));
    }
    let given: [(&str, Option<&str>); 6] = [
        ("tenant", Some(input.tenant)),
        ("raw_phone", Some(input.raw_phone)),
        ("country", input.phone.map(Phone::country_code)),
        ("code", input.code),
        ("ip", input.ip.as_deref()),
        ("locale", input.locale),
    ];
    for (field, value) in given {
        if text(req, field)?.as_deref() != value {
            return Err(format!("req.{field} is read-only"));
        }
    }
    let phone = text(req, "phone")?;
    let phone = match (phone, input.phone) {
        (Some(p), Some(before)) if p == before.e164() => None,
        (Some(p), _) => Some(p),
        (None, Some(_)) => return Err("on_send cleared req.phone".into()),
        (None, None) => None,
    };
    let usage = match text(req, "usage")? {
        Some(u) if u == input.usage => None,
        Some(u) => Some(u),
        None => return Err("on_send cleared req.usage".into()),
    };
    let params = match req.raw_get::<Value>("params").map_err(|e| describe(&e))? {
        Value::Table(t) => {
            let mut values = Vec::new();
            for i in 1..=t.raw_len().min(super::MAX_PARAMS + 1) {
                match t.raw_get::<Value>(i).map_err(|e| describe(&e))? {
                    Value::String(s) => values.push(s.to_string_lossy()),
                    Value::Integer(n) => values.push(n.to_string()),
                    other => return Err(format!("req.params[{i}] must be a string, not a {}", other.type_name())),
                }
            }
            (values != input.params).then_some(values)
        }
        other => return Err(format!("req.params must be a list of strings, not a {}", other.type_name())),
    };
    Ok(RawVerdict::Proceed {
        phone,
        usage,
        params,
        template_id: text(req, "template_id")?,
        sign_name: text(req, "sign_name")?,
        region: text(req, "region")?,
    })
}
