//! One Lua state of a tenant's hook: the sandbox it runs in (safe libraries only, see `prelude.lua`), its
//! instruction and memory budgets, the `smsgate` API, and one call of `on_send`. A state is built once (the
//! script compiled then) and reused for many calls; it never touches files, the network or the process.

use super::{HookInput, RawVerdict, ScriptLimits, Settings};
use crate::phone::Phone;
use mlua::{ChunkMode, Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, Variadic, VmState};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the trampoline returns: status, then (message or phone), usage, template_id, sign_name, region,
/// whether params changed, and the params.
type Returned =
    (u8, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, bool, Variadic<String>);

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
    /// The prelude's trampoline bound to this script's `on_send`: fills `req`, calls, reads it back.
    invoke: Function,
    context: Arc<Mutex<CallContext>>,
    steps: u32,
    memory_budget: usize,
    /// The state's heap limit while the script runs: what the loaded script holds plus the budget.
    memory_limit: usize,
}

/// Lifts the heap limit while the host passes the request in and takes the answer out, and restores it
/// when dropped. With a limit set, mlua protects every value it pushes against allocation failure with a
/// `pcall` of its own, which cost more than the script itself; what the host allocates there is bounded by
/// the already-validated request. The trampoline arms the limit around the script's own code.
struct HostSteps<'a> {
    lua: &'a Lua,
    limit: usize,
}

impl<'a> HostSteps<'a> {
    fn new(lua: &'a Lua, limit: usize) -> mlua::Result<HostSteps<'a>> {
        lua.set_memory_limit(0)?;
        Ok(HostSteps { lua, limit })
    }
}

impl Drop for HostSteps<'_> {
    fn drop(&mut self) {
        let _ = self.lua.set_memory_limit(self.limit);
    }
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
        let (d, make_invoke) =
            Self::prelude(&lua, &context, settings, tenant.clone(), path).map_err(|e| format!("{path}: setup: {e}"))?;
        let hook_context = context.clone();
        let budget = limits.instructions;
        let script_path = path.to_owned();
        lua.set_hook(HookTriggers::new().every_nth_instruction(STEP.min(budget)), move |_, debug| {
            let mut cx = lock(&hook_context);
            cx.steps_left = cx.steps_left.saturating_sub(1);
            if cx.steps_left > 0 {
                return Ok(VmState::Continue);
            }
            // The line where the script was when the budget ran out; the host's own trampoline has no line
            // worth showing.
            let at = match (debug.source().short_src, debug.current_line()) {
                (Some(src), Some(line)) if src == script_path => format!("{src}:{line}: "),
                _ => format!("{script_path}: "),
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
        let arm = lua.create_function(move |lua, ()| lua.set_memory_limit(memory_limit).map(drop)).map_err(fail)?;
        let disarm = lua.create_function(|lua, ()| lua.set_memory_limit(0).map(drop)).map_err(fail)?;
        let invoke = make_invoke.call::<Function>((on_send, &*tenant, arm, disarm)).map_err(fail)?;
        lua.set_memory_limit(memory_limit).map_err(fail)?;
        Ok(Sandbox { lua, invoke, context, steps, memory_budget: limits.memory, memory_limit })
    }

    fn prelude(
        lua: &Lua,
        context: &Arc<Mutex<CallContext>>,
        settings: &Settings,
        tenant: Arc<str>,
        path: &str,
    ) -> mlua::Result<(Table, Function)> {
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
        let _host = HostSteps::new(&self.lua, self.memory_limit)?;
        let args = (
            input.phone.map(Phone::e164),
            input.raw_phone,
            input.phone.map(Phone::country_code),
            input.usage,
            input.code,
            input.ip.as_deref(),
            input.locale,
            Variadic::from_iter(input.params.iter().map(String::as_str)),
        );
        let (status, a, usage, template_id, sign_name, region, params_changed, params): Returned =
            self.invoke.call(args)?;
        Ok(match status {
            0 => Ok(RawVerdict::Proceed {
                phone: None,
                usage: None,
                params: None,
                template_id: None,
                sign_name: None,
                region: None,
            }),
            1 => Ok(RawVerdict::Proceed {
                phone: a,
                usage,
                params: params_changed.then(|| params.into_iter().collect()),
                template_id,
                sign_name,
                region,
            }),
            2 => Ok(RawVerdict::Reject(a.unwrap_or_default())),
            _ => Err(a.unwrap_or_else(|| "on_send failed".into())),
        })
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
