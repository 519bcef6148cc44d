//! One Lua state of a tenant's hook: the sandbox it runs in (safe libraries only, see `prelude.lua`, their
//! costly functions charged, see `strlib.rs`), the budgets of a call (`meter.rs`), the `smsgate` API, and
//! one call of `on_send`. A state is built once (the script compiled then) and reused for many calls,
//! unless a call was cut off; it never touches files, the network or the process.

use super::call::{redact, HookInput, LogBudget, RawVerdict};
use super::meter::{caller, describe, Cut, Meter, STEP};
use crate::config::{ScriptLimits, Settings};
use crate::phone::Phone;
use mlua::{ChunkMode, Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, Variadic, VmState};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::Level;

/// What the trampoline returns: status, then (message or phone), usage, template_id, sign_name, region,
/// whether params changed, and the params.
type Returned = (
    u8,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    Variadic<String>,
);

const PRELUDE: &str = include_str!("prelude.lua");
/// Log lines one call may write; more are dropped so a looping script cannot flood the log (and the
/// request's [`LogBudget`] bounds all its calls together).
const MAX_LOG_LINES: u32 = LogBudget::LINES;
const MAX_LOG_CHARS: usize = 512;
/// What `smsgate.parse_phone` charges, in instructions: about the time one parse takes (6 µs, see
/// BENCHMARKS.md), at 5 ns an instruction.
const PARSE_PHONE_UNITS: usize = 1_500;
/// Longer text is no phone number: `smsgate.parse_phone` answers nil without parsing it.
const MAX_PHONE_TEXT: usize = 64;
/// Loading the script (its top level: constants, tables) may take this many times a call's
/// instructions, time and transient memory.
pub(super) const LOAD_FACTOR: u32 = 10;

/// How far one call may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// The whole budget (`script_limits`).
    Whole,
    /// At most this much of it (instructions, time, bytes allocated), on a clock that counts everything
    /// the thread does (the host's own functions included), with the call's log lines held back until it
    /// completes: a slice that is cut off leaves no trace but the discarded state.
    Slice { instructions: u32, time: Duration, memory: usize },
}

/// What the host shares with the `smsgate` API functions during one call.
struct CallContext {
    logs: u32,
    /// The request's lines, all its calls together.
    budget: LogBudget,
    request_id: Option<String>,
    code: Option<String>,
    /// The lines of a slice, written when it completes.
    held: Option<Vec<(Level, String)>>,
    tenant: Arc<str>,
    script: Arc<str>,
}

impl CallContext {
    /// Writes one line of the script's log (already masked and capped), when the request's budget has one.
    fn write(&self, level: Level, message: &str) {
        if !self.budget.take() {
            return;
        }
        let request_id = self.request_id.as_deref().unwrap_or("");
        let (tenant, script) = (&self.tenant, &self.script);
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: "smsgate::script", $level, tenant = %tenant, request_id, script = %script, "{message}")
            };
        }
        match level {
            Level::TRACE => emit!(Level::TRACE),
            Level::DEBUG => emit!(Level::DEBUG),
            Level::INFO => emit!(Level::INFO),
            Level::WARN => emit!(Level::WARN),
            _ => emit!(Level::ERROR),
        }
    }
}

pub(super) struct Sandbox {
    lua: Lua,
    /// The prelude's trampoline bound to this script's `on_send`: fills `req`, calls, reads it back.
    invoke: Function,
    context: Arc<Mutex<CallContext>>,
    meter: Arc<Meter>,
    limits: ScriptLimits,
    /// The heap in use once the script was loaded: the base of every call's memory budget.
    loaded: usize,
    /// What the script's top level keeps (beyond the libraries and the API).
    held: usize,
    /// The state's heap limit while the script runs, which the trampoline arms around the script's code:
    /// `loaded` plus the call's memory budget.
    armed: Arc<AtomicUsize>,
}

/// Lifts the heap limit while the host passes the request in and takes the answer out, and restores it
/// when dropped. With a limit set, mlua protects every value it pushes against allocation failure with a
/// `pcall` of its own, which cost more than the script itself; what the host allocates there is bounded by
/// the already-validated request. The trampoline arms the limit around the script's own code.
struct HostSteps<'a> {
    lua: &'a Lua,
    meter: &'a Meter,
    limit: usize,
}

impl<'a> HostSteps<'a> {
    fn new(lua: &'a Lua, meter: &'a Meter, limit: usize) -> mlua::Result<HostSteps<'a>> {
        lua.set_memory_limit(0)?;
        meter.set_memory_limit(0);
        Ok(HostSteps { lua, meter, limit })
    }
}

impl Drop for HostSteps<'_> {
    fn drop(&mut self) {
        let _ = self.lua.set_memory_limit(self.limit);
        self.meter.set_memory_limit(self.limit);
    }
}

fn lock(context: &Mutex<CallContext>) -> MutexGuard<'_, CallContext> {
    // A panic while holding this lock cannot leave it half-written in a way that matters: recover.
    context.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether an error value caught in Lua is an out-of-memory error (Lua's own message, or mlua's).
fn is_memory_error(e: &Value) -> bool {
    match e {
        Value::String(s) => s.as_bytes().as_ref() == b"not enough memory",
        Value::Error(e) => matches!(**e, mlua::Error::MemoryError(_)),
        _ => false,
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
        let meter = Meter::new(path.into());
        let context = Arc::new(Mutex::new(CallContext {
            logs: 0,
            budget: LogBudget::default(),
            request_id: None,
            code: None,
            held: None,
            tenant: tenant.clone(),
            script: path.into(),
        }));
        let fail = |e: mlua::Error| {
            let message = describe(&e);
            if message.starts_with(path) {
                message
            } else {
                format!("{path}: {message}")
            }
        };
        super::strlib::install(&lua, &meter).map_err(|e| format!("{path}: setup: {e}"))?;
        let (d, make_invoke) =
            Self::prelude(&lua, &context, &meter, settings).map_err(|e| format!("{path}: setup: {e}"))?;
        Self::set_hook(&lua, &meter, path).map_err(fail)?;
        lua.gc_collect().map_err(fail)?;
        let baseline = lua.used_memory();

        // The top level runs within ten times a call's budgets.
        meter.start(
            u64::from(limits.instructions) * u64::from(LOAD_FACTOR),
            limits.time * LOAD_FACTOR,
            limits.memory.saturating_mul(LOAD_FACTOR as usize),
            true,
        );
        let load_limit = limits.memory.saturating_mul(LOAD_FACTOR as usize).saturating_add(baseline);
        lua.set_memory_limit(load_limit).map_err(fail)?;
        meter.set_memory_limit(load_limit);
        let chunk = lua
            .load(source)
            .set_name(format!("@{path}"))
            .set_mode(ChunkMode::Text)
            .set_environment(d.clone())
            .into_function()
            .map_err(fail)?;
        chunk.call::<()>(()).map_err(|e| meter.message().unwrap_or_else(|| fail(e)))?;
        if meter.cut().is_some() {
            // The top level caught the cut-off error and went on: it still failed.
            return Err(meter.spent_error().to_string());
        }
        let on_send = match d.get::<Value>("on_send").map_err(fail)? {
            Value::Function(f) => f,
            _ => return Err(format!("{path}: the script must define function on_send(req)")),
        };
        lua.set_memory_limit(0).map_err(fail)?;
        meter.set_memory_limit(0);
        lua.gc_collect().map_err(fail)?;
        lua.gc_collect().map_err(fail)?;
        // What the loaded script keeps is bounded like what a call allocates, so that every string a call
        // can touch (and so every single instruction) stays within the memory budget.
        let held = lua.used_memory().saturating_sub(baseline);
        if held > limits.memory {
            return Err(format!(
                "{path}: the loaded script holds {} KiB, more than script_limits.memory ({} KiB)",
                held.div_ceil(1024),
                limits.memory >> 10
            ));
        }
        // The per-call budget counts from what the loaded script holds.
        let loaded = lua.used_memory();
        let memory_limit = loaded.saturating_add(limits.memory);
        let armed = Arc::new(AtomicUsize::new(memory_limit));
        let (arm_meter, arm_limit) = (meter.clone(), armed.clone());
        let arm = lua
            .create_function(move |lua, ()| {
                let limit = arm_limit.load(Relaxed);
                arm_meter.set_memory_limit(limit);
                lua.set_memory_limit(limit).map(drop)
            })
            .map_err(fail)?;
        let disarm_meter = meter.clone();
        let disarm = lua
            .create_function(move |lua, ()| {
                disarm_meter.set_memory_limit(0);
                lua.set_memory_limit(0).map(drop)
            })
            .map_err(fail)?;
        let invoke = make_invoke.call::<Function>((on_send, &*tenant, arm, disarm)).map_err(fail)?;
        lua.set_memory_limit(memory_limit).map_err(fail)?;
        meter.set_memory_limit(memory_limit);
        Ok(Sandbox { lua, invoke, context, meter, limits, loaded, held, armed })
    }

    /// The count hook: every `STEP` instructions, charge them and check the deadline.
    fn set_hook(lua: &Lua, meter: &Arc<Meter>, path: &str) -> mlua::Result<()> {
        let meter = meter.clone();
        let script: Arc<str> = path.into();
        lua.set_global_hook(HookTriggers::new().every_nth_instruction(STEP), move |lua, debug| {
            let Some(why) = meter.tick() else { return Ok(VmState::Continue) };
            // The line where the script was when the budget ran out; the prelude has no line worth showing.
            let at = match (debug.source().short_src, debug.current_line()) {
                (Some(src), Some(line)) if *src == *script => Some((src.into_owned(), line)),
                _ => None,
            };
            Err(meter.cut_off(lua, why, at))
        })
    }

    fn prelude(
        lua: &Lua,
        context: &Arc<Mutex<CallContext>>,
        meter: &Arc<Meter>,
        settings: &Settings,
    ) -> mlua::Result<(Table, Function)> {
        let m = meter.clone();
        // Whether a caught error must end the call: the budget or the deadline is spent, or memory ran out
        // (Lua's own error for it, which `pcall` would otherwise swallow).
        let spent = lua.create_function(move |lua, e: Value| {
            if m.cut().is_some() {
                return Ok(true);
            }
            if is_memory_error(&e) {
                m.memory_spent(lua);
                return Ok(true);
            }
            Ok(false)
        })?;
        // A library function's error, as the plain message Lua's own functions raise.
        let plain = lua.create_function(|lua, e: Value| match e {
            Value::Error(e) => lua.create_string(describe(&e)).map(Value::String),
            other => Ok(other),
        })?;
        let cx = context.clone();
        let emit = lua.create_function(move |_, (level, message): (String, mlua::String)| {
            let mut cx = lock(&cx);
            cx.logs += 1;
            if cx.logs > MAX_LOG_LINES {
                return Ok(());
            }
            let level = match level.as_str() {
                "trace" => Level::TRACE,
                "debug" => Level::DEBUG,
                "info" => Level::INFO,
                "warn" => Level::WARN,
                _ => Level::ERROR,
            };
            let message = message.to_string_lossy();
            let message = redact(truncate(&message, MAX_LOG_CHARS), cx.code.as_deref());
            match &mut cx.held {
                Some(held) => held.push((level, message)),
                None => cx.write(level, &message),
            }
            Ok(())
        })?;
        let m = meter.clone();
        let parse_phone = lua.create_function(move |lua, (text, country): (mlua::String, Option<String>)| {
            // A parse costs what a few thousand instructions do (the phonenumber crate's regular
            // expressions); its time does not count against the deadline, which is for the script's own
            // work (the first parse of a region also compiles that region's expressions).
            let started = std::time::Instant::now();
            m.charge_work(lua, text.as_bytes().len(), PARSE_PHONE_UNITS)?;
            if text.as_bytes().len() > MAX_PHONE_TEXT {
                return Ok((None, None));
            }
            let text = text.to_string_lossy();
            let country = country.and_then(|c| c.parse::<phonenumber::country::Id>().ok());
            let parsed = match Phone::from_native(&text, country) {
                Ok(p) => (Some(p.e164().to_owned()), Some(p.country_code().to_owned())),
                Err(_) => (None, None),
            };
            m.extend(started.elapsed());
            Ok(parsed)
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
        let c_select: Function = lua.named_registry_value(super::strlib::C_SELECT)?;
        lua.load(PRELUDE).set_name("=smsgate prelude").call((spent, plain, emit, parse_phone, s, c_select))
    }

    /// Runs `on_send(req)` once within the budgets (all of them, or a slice). The error is the script's
    /// fault, as one line. The flag says whether the state may serve again: not after a call that was cut
    /// off (budget or slice, deadline, memory), which may have left it anywhere.
    pub(super) fn call(&self, input: &HookInput<'_>, attempt: Attempt) -> (Result<RawVerdict, String>, bool) {
        let limits = self.limits;
        let (instructions, time, memory, slice) = match attempt {
            Attempt::Whole => (limits.instructions, limits.time, limits.memory, false),
            Attempt::Slice { instructions, time, memory } => {
                (instructions.min(limits.instructions), time.min(limits.time), memory.min(limits.memory), true)
            }
        };
        {
            let mut cx = lock(&self.context);
            cx.logs = 0;
            cx.budget = input.log_budget.cloned().unwrap_or_default();
            cx.request_id = input.request_id.map(str::to_owned);
            cx.code = input.code.map(str::to_owned);
            cx.held = slice.then(Vec::new);
        }
        self.armed.store(self.loaded.saturating_add(memory), Relaxed);
        self.meter.start(u64::from(instructions), time, memory, !slice);
        let (result, reusable) = self.finish(self.run(input));
        let mut cx = lock(&self.context);
        if let Some(held) = cx.held.take() {
            if reusable {
                for (level, message) in &held {
                    cx.write(*level, message);
                }
            }
        }
        (result, reusable)
    }

    /// The call's answer from what the trampoline returned, and whether the state may serve again.
    fn finish(&self, result: mlua::Result<Result<RawVerdict, String>>) -> (Result<RawVerdict, String>, bool) {
        if let Err(mlua::Error::MemoryError(_)) = &result {
            if self.meter.cut().is_none() {
                self.meter.cut_off(&self.lua, Cut::Memory, caller(&self.lua));
            }
        }
        if let Some(message) = self.meter.message() {
            return (Err(message), false);
        }
        let result = match result {
            Err(e) => Err(describe(&e)),
            Ok(Err(message)) => Err(message),
            Ok(Ok(verdict)) => Ok(verdict),
        };
        if result.is_err() {
            // A failed call may leave much garbage; free it before the next call counts.
            let _ = self.lua.gc_collect();
        }
        (result, true)
    }

    fn run(&self, input: &HookInput<'_>) -> mlua::Result<Result<RawVerdict, String>> {
        let _host = HostSteps::new(&self.lua, &self.meter, self.armed.load(Relaxed))?;
        let args = (
            input.phone.map(Phone::e164),
            input.raw_phone,
            input.phone.map(Phone::country_code),
            input.usage,
            input.code,
            input.ip.as_deref(),
            input.locale,
            input.providers.map_or(0, |via| via.code()),
            Variadic::from_iter(input.params.iter().map(String::as_str)),
        );
        let (status, a, usage, template_id, sign_name, region, provider, params_changed, params): Returned =
            self.invoke.call(args)?;
        Ok(match status {
            0 => Ok(RawVerdict::Proceed {
                phone: None,
                usage: None,
                params: None,
                template_id: None,
                sign_name: None,
                region: None,
                provider: None,
            }),
            1 => Ok(RawVerdict::Proceed {
                phone: a,
                usage,
                params: params_changed.then(|| params.into_iter().collect()),
                template_id,
                sign_name,
                region,
                provider,
            }),
            2 => Ok(RawVerdict::Reject(a.unwrap_or_default())),
            _ => Err(a.unwrap_or_else(|| "on_send failed".into())),
        })
    }

    /// Bytes the script's top level keeps (measured when the state was built).
    pub(super) fn held(&self) -> usize {
        self.held
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
