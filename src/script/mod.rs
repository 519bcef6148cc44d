//! Script stage: a tenant's Lua hook (`on_send(req)`) may rewrite the number, usage, params, template, sign
//! name or region, or refuse the request. Whatever it changes is checked again here, as strictly as ingress
//! and config values are. The config holds the script as read ([`ScriptSpec`]: source, settings, limits,
//! error policy); [`ScriptHook::build`] compiles it when the runtime is built (`Runtime::build`, at start and
//! on reload), and a pool of ready Lua states per script serves the calls, so no request compiles anything.
//! A call is first tried inline, on the async worker, within a small slice of its budget (`inline.rs`); one
//! that overruns the slice, finds no ready state or finds the hook's lane busy runs on the hook threads
//! (`pool.rs`) with the whole budget: an instruction budget, a deadline and a memory limit (`meter.rs`) that
//! every way Lua code can run and every costly library function (`strlib.rs`, `pattern.rs`) pays into.
//! States are built only at load and on the hook threads. The hook never reaches files, the network, the
//! environment or the process (see `sandbox.rs` and `prelude.lua`).

mod call;
mod inline;
mod meter;
mod pattern;
mod pool;
mod sandbox;
mod strlib;

pub use crate::config::{
    OnScriptError, ScriptLimits, ScriptSpec, Settings, DEFAULT_INSTRUCTIONS, DEFAULT_MEMORY, DEFAULT_TIME, TIME_RANGE,
};
use crate::config::{Tenant, MAX_SCRIPT_BYTES};
use crate::error::GatewayError;
use crate::phone::{mask_numbers, Phone};
use crate::sms::{ProviderId, SendRequest, Via};
pub(crate) use call::redact;
pub use call::{HookInput, LogBudget, RawVerdict};
pub use inline::{CallPaths, COOLDOWN, SLICE_INSTRUCTIONS, SLICE_MEMORY, SLICE_TIME};
pub use pool::Load;
use sandbox::{Attempt, Sandbox};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

const MAX_REJECT_CHARS: usize = 100;
const MAX_PARAMS: usize = 16;
const MAX_PARAM_CHARS: usize = 64;
const MAX_SHORT: usize = 64;

/// A tenant's compiled hook, its pool of Lua states and its lane on the hook threads.
pub struct ScriptHook {
    inner: Arc<Inner>,
    pub limits: ScriptLimits,
    pub on_error: OnScriptError,
}

struct Inner {
    path: String,
    source: Arc<str>,
    settings: Settings,
    tenant: Arc<str>,
    limits: ScriptLimits,
    states: Mutex<Vec<Sandbox>>,
    max_pooled: usize,
    lane: Arc<pool::Lane>,
    gate: inline::Gate,
}

impl std::fmt::Debug for ScriptHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptHook")
            .field("path", &self.inner.path)
            .field("limits", &self.limits)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

/// What an inline attempt ([`ScriptHook::call_inline`]) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceOutcome {
    /// It completed within the slice: the answer, a script error included.
    Answered(Result<RawVerdict, String>),
    /// It was cut off at the end of the slice (or by its memory), which the message names
    /// (`t.lua:3: instruction budget exhausted (20000 per call)`): the gateway would make the call again
    /// on the hook threads.
    CutOff(String),
    /// No state was ready (none is built for an inline attempt).
    NoState,
}

/// Why a hook call gave no verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The script failed, ran over a budget or returned something invalid: the message, for the log.
    Failed(String),
    /// The tenant's share of the hook threads stayed taken: the call never started.
    Busy,
}

impl ScriptHook {
    /// Compiles a tenant's script as the config read it and fills the pool: one state per call the hook may
    /// run at once. The error names the script and the line (`scripts/x.lua:2: ...`).
    pub fn build(spec: &ScriptSpec) -> Result<ScriptHook, String> {
        ScriptHook::compile(&spec.path, spec.source.clone(), spec.settings.clone(), spec.limits, spec.on_error)
    }

    /// Reads and compiles `file` (named `path` as the config writes it, in errors and Lua line numbers) and
    /// fills the pool, as [`ScriptHook::build`] does (for benches and tests: the gateway reads the file with
    /// the config).
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
        ScriptHook::compile(path, source.into(), settings, limits, on_error)
    }

    fn compile(
        path: &str,
        source: Arc<str>,
        settings: Settings,
        limits: ScriptLimits,
        on_error: OnScriptError,
    ) -> Result<ScriptHook, String> {
        let tenant: Arc<str> = settings.name.as_str().into();
        // The number metadata loads on first use (milliseconds): not inside a hook call's deadline.
        let _ = Phone::from_e164("+8613800138000");
        let share = pool::share();
        let mut states = Vec::with_capacity(share);
        for _ in 0..share {
            states.push(Sandbox::new(path, &source, &settings, limits, tenant.clone())?);
        }
        let gate = inline::Gate::new(states.iter().map(Sandbox::held).max().unwrap_or(0));
        let inner = Inner {
            path: path.to_owned(),
            source,
            settings,
            tenant,
            limits,
            states: Mutex::new(states),
            // Calls made on other threads (a bench, `explain` beside `serve`) may grow the pool this far.
            max_pooled: share * 4,
            lane: Arc::default(),
            gate,
        };
        Ok(ScriptHook { inner: Arc::new(inner), limits, on_error })
    }

    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// Calls `on_send` here, on the calling thread, on a pooled state, with the whole budget. The error is
    /// for the log (file and line, numbers unmasked). The gateway goes through [`ScriptHook::dispatch`]
    /// instead.
    pub fn call(&self, input: &HookInput<'_>) -> Result<RawVerdict, String> {
        self.inner.call(input).0
    }

    /// Makes only the inline attempt of a call, on this thread, whatever the gate says (for tests and the
    /// bench): what it came to. A cut-off state is dropped here and not replaced.
    pub fn call_inline(&self, input: &HookInput<'_>) -> SliceOutcome {
        match self.inner.slice(input) {
            Inline::Answered(result) => SliceOutcome::Answered(result),
            Inline::NotTried => SliceOutcome::NoState,
            Inline::CutOff(_, why) => SliceOutcome::CutOff(why),
        }
    }

    /// Calls `on_send` and hands the request back: inline, on this thread, within a slice of the budget
    /// when the gate is open, the lane quiet and a state ready; otherwise (or when the slice was cut off,
    /// and then from scratch) on a hook thread, within the tenant's share of them, with the whole budget.
    pub async fn dispatch(
        &self,
        request: SendRequest,
        phone: Option<Phone>,
        providers: Option<Via>,
        request_id: &str,
        log_budget: &LogBudget,
    ) -> Option<(Result<RawVerdict, CallError>, SendRequest)> {
        let cut_off = match self.inner.try_inline(&request, phone.as_ref(), providers, request_id, log_budget) {
            Inline::Answered(result) => return Some((result.map_err(CallError::Failed), request)),
            Inline::NotTried => None,
            Inline::CutOff(state, _) => Some(state),
        };
        self.inner.gate.pooled();
        let (reply, answer) = oneshot::channel();
        let job = Box::new(HookJob {
            hook: self.inner.clone(),
            request: Some(request),
            phone,
            providers,
            request_id: request_id.to_owned(),
            log_budget: log_budget.clone(),
            reply: Some(reply),
            cut_off,
        });
        if let Err(job) = self.inner.lane.submit(job) {
            job.refuse();
        }
        answer.await.ok()
    }

    /// Calls of this hook running on the hook threads and waiting for one.
    pub fn load_now(&self) -> Load {
        self.inner.lane.load()
    }

    /// How many of this hook's calls were answered inline, went to the hook threads, overran their slice.
    pub fn call_paths(&self) -> CallPaths {
        self.inner.gate.paths()
    }

    /// Bytes held by the pooled states after a full collection.
    pub fn used_memory(&self) -> usize {
        self.inner.states.lock().unwrap_or_else(|p| p.into_inner()).iter().map(Sandbox::used_memory).sum()
    }

    /// Lua states pooled, ready for a call.
    pub fn pooled(&self) -> usize {
        self.inner.states.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// What the inline attempt came to.
enum Inline {
    /// The call completed within its slice: the answer (a script error too).
    Answered(Result<RawVerdict, String>),
    /// The gate was closed, the lane busy or no state ready.
    NotTried,
    /// The slice was cut off (or the call panicked): the state it left, to be dropped off this thread,
    /// and why.
    CutOff(Sandbox, String),
}

/// The request as the hook sees it.
fn hook_input<'a>(
    tenant: &'a str,
    request: &'a SendRequest,
    phone: Option<&'a Phone>,
    providers: Option<Via>,
    request_id: &'a str,
    log_budget: &'a LogBudget,
) -> HookInput<'a> {
    let raw_phone = match &request.phone {
        crate::sms::PhoneInput::Logto(s) | crate::sms::PhoneInput::Native(s) => s.as_str(),
    };
    HookInput {
        tenant,
        phone,
        raw_phone,
        usage: &request.usage,
        code: request.code.as_deref(),
        params: &request.params,
        providers,
        ip: request.ip.map(|ip| ip.to_string()),
        locale: request.locale.as_deref(),
        request_id: Some(request_id),
        log_budget: Some(log_budget),
    }
}

/// Bytes of the request's strings the hook sees.
fn request_bytes(request: &SendRequest) -> usize {
    let phone = match &request.phone {
        crate::sms::PhoneInput::Logto(s) | crate::sms::PhoneInput::Native(s) => s.len(),
    };
    let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    phone
        + request.usage.len()
        + optional(&request.code)
        + optional(&request.locale)
        + request.params.iter().map(String::len).sum::<usize>()
}

impl Inner {
    fn new_state(&self) -> Result<Sandbox, String> {
        Sandbox::new(&self.path, &self.source, &self.settings, self.limits, self.tenant.clone())
    }

    fn pop_state(&self) -> Option<Sandbox> {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_back(&self, sandbox: Sandbox) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if states.len() < self.max_pooled {
            states.push(sandbox);
        }
    }

    /// Names the script in an error that does not already.
    fn located(&self, result: Result<RawVerdict, String>) -> Result<RawVerdict, String> {
        result.map_err(|e| if e.starts_with(&self.path) { e } else { format!("{}: {e}", self.path) })
    }

    /// The inline attempt, on the calling thread: only on a state already built, only while no call of
    /// this hook waits for a hook thread and none overran lately.
    fn try_inline(
        &self,
        request: &SendRequest,
        phone: Option<&Phone>,
        providers: Option<Via>,
        request_id: &str,
        log: &LogBudget,
    ) -> Inline {
        if !self.gate.open(request_bytes(request)) || !self.lane.quiet() {
            return Inline::NotTried;
        }
        self.slice(&hook_input(&self.tenant, request, phone, providers, request_id, log))
    }

    /// One call within the slice on a pooled state (none built here); a cut-off closes the gate.
    fn slice(&self, input: &HookInput<'_>) -> Inline {
        let Some(sandbox) = self.pop_state() else { return Inline::NotTried };
        let slice = Attempt::Slice { instructions: SLICE_INSTRUCTIONS, time: SLICE_TIME, memory: SLICE_MEMORY };
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sandbox.call(input, slice)));
        match called {
            Ok((result, true)) => {
                self.put_back(sandbox);
                self.gate.answered_inline();
                Inline::Answered(self.located(result))
            }
            Ok((result, false)) => {
                self.gate.overran();
                Inline::CutOff(sandbox, self.located(result).err().unwrap_or_default())
            }
            Err(_) => {
                self.gate.overran();
                Inline::CutOff(sandbox, format!("{}: the hook call panicked", self.path))
            }
        }
    }

    /// One call on a pooled state (or a new one); whether the state was discarded (the call was cut off).
    fn call(&self, input: &HookInput<'_>) -> (Result<RawVerdict, String>, bool) {
        let sandbox = match self.pop_state() {
            Some(s) => s,
            None => match self.new_state() {
                Ok(s) => s,
                Err(e) => return (Err(e), false),
            },
        };
        let (result, reusable) = sandbox.call(input, Attempt::Whole);
        if reusable {
            self.put_back(sandbox);
        }
        (self.located(result), !reusable)
    }

    /// Replaces a discarded state, so that the next call finds one ready.
    fn refill(&self) {
        if self.states.lock().unwrap_or_else(|p| p.into_inner()).len() >= pool::share() {
            return;
        }
        if let Ok(sandbox) = self.new_state() {
            self.put_back(sandbox);
        }
    }
}

/// One call handed to the hook threads; it always answers (dropped unanswered, it answers that the call
/// failed), so the caller gets its request back.
struct HookJob {
    hook: Arc<Inner>,
    request: Option<SendRequest>,
    phone: Option<Phone>,
    providers: Option<Via>,
    request_id: String,
    log_budget: LogBudget,
    reply: Option<oneshot::Sender<(Result<RawVerdict, CallError>, SendRequest)>>,
    /// The call's inline attempt was cut off: the state it left, dropped here (freeing a state's heap
    /// is work for a hook thread too) and replaced after the answer.
    cut_off: Option<Sandbox>,
}

impl HookJob {
    fn answer(&mut self, result: Result<RawVerdict, CallError>) {
        if let (Some(reply), Some(request)) = (self.reply.take(), self.request.take()) {
            let _ = reply.send((result, request));
        }
    }
}

impl pool::Job for HookJob {
    fn run(mut self: Box<Self>) {
        let Some(request) = self.request.as_ref() else { return };
        let input = hook_input(
            &self.hook.tenant,
            request,
            self.phone.as_ref(),
            self.providers,
            &self.request_id,
            &self.log_budget,
        );
        let hook = self.hook.clone();
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook.call(&input)));
        let (result, discarded) = match called {
            Ok((result, discarded)) => (result.map_err(CallError::Failed), discarded),
            Err(_) => (Err(CallError::Failed(format!("{}: the hook call panicked", hook.path))), true),
        };
        self.answer(result);
        let cut_off = self.cut_off.take();
        let replace = discarded || cut_off.is_some();
        drop(cut_off);
        if replace {
            // After the answer: the caller does not wait for the replacement state to load.
            hook.refill();
        }
    }

    fn refuse(mut self: Box<Self>) {
        self.answer(Err(CallError::Busy));
    }

    fn abandoned(&self) -> bool {
        self.reply.as_ref().is_none_or(|r| r.is_closed())
    }
}

impl Drop for HookJob {
    fn drop(&mut self) {
        let path = self.hook.path.clone();
        self.answer(Err(CallError::Failed(format!("{path}: the hook call was dropped"))));
    }
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
    /// The provider the hook chose to send first (`req.provider`).
    pub provider: Option<crate::sms::ProviderId>,
}

/// The script stage. `normalized` is the normalize stage's result: a hook may repair a number that did not
/// parse; without a repair such a request stays `invalid_phone`. The hook runs inline or on the hook
/// threads (see [`ScriptHook::dispatch`]); the report is `None` when it never ran because the tenant's share
/// of the hook threads stayed taken (`script_busy`,
/// whatever `on_script_error` says: skipping the hook under load would let a flood bypass its policy).
pub async fn stage(
    hook: &ScriptHook,
    tenant: &Tenant,
    request: SendRequest,
    normalized: Result<Phone, GatewayError>,
    request_id: &str,
    log_budget: &LogBudget,
) -> (Result<Routed, GatewayError>, Option<ScriptReport>) {
    let before = normalized.as_ref().ok().cloned();
    let report = |outcome| Some(ScriptReport { path: hook.inner.path.clone(), before: before.clone(), outcome });
    let providers =
        before.as_ref().map(|p| Via::from_iter(tenant.route_for(p.country_code(), p.e164()).via.iter().copied()));
    let Some((called, request)) = hook.dispatch(request, before.clone(), providers, request_id, log_budget).await
    else {
        let detail = format!("{}: the hook call was lost", hook.path());
        return (Err(GatewayError::Internal(detail.clone())), report(ScriptOutcome::Failed(detail)));
    };
    let verdict = match called {
        Ok(verdict) => Ok(verdict),
        Err(CallError::Busy) => return (Err(GatewayError::ScriptBusy), None),
        Err(CallError::Failed(detail)) => Err(detail),
    };
    let raw_phone = match &request.phone {
        crate::sms::PhoneInput::Logto(s) | crate::sms::PhoneInput::Native(s) => s.as_str(),
    };
    let input = HookInput {
        tenant: &tenant.name,
        phone: before.as_ref(),
        raw_phone,
        usage: &request.usage,
        code: request.code.as_deref(),
        params: &request.params,
        providers,
        ip: None,
        locale: request.locale.as_deref(),
        request_id: Some(request_id),
        log_budget: None,
    };
    let checked = verdict.and_then(|verdict| check(tenant, &input, verdict));
    let code = request.code.as_deref();
    match checked {
        Ok(Verdict::Routed(routed, changes)) => (Ok(routed), report(ScriptOutcome::Changed(changes))),
        Ok(Verdict::NoNumber) => {
            (Err(GatewayError::InvalidPhone { upstream: None }), report(ScriptOutcome::Changed(Vec::new())))
        }
        Ok(Verdict::Reject(message)) => {
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
                    tracing::warn!(tenant = %tenant.name, request_id, script = %hook.inner.path,
                        detail = %detail, "script failed; on_script_error: skip, going on without it");
                    let unhooked = normalized.map(|phone| Routed {
                        phone,
                        usage: request.usage.clone(),
                        params: request.params.clone(),
                        template_id: None,
                        sign_name: None,
                        region: None,
                        provider: None,
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

enum Verdict {
    Routed(Routed, Vec<Change>),
    Reject(String),
    /// Neither the caller nor the hook gave a valid number: the caller's fault, as without a hook.
    NoNumber,
}

/// Checks the hook's changes as strictly as ingress and config values; `Err` is the hook's fault
/// (`script_error`).
fn check(tenant: &Tenant, input: &HookInput<'_>, verdict: RawVerdict) -> Result<Verdict, String> {
    let (phone, usage, params, template_id, sign_name, region, provider) = match verdict {
        RawVerdict::Reject(message) => return Ok(Verdict::Reject(message)),
        RawVerdict::Proceed { phone, usage, params, template_id, sign_name, region, provider } => {
            (phone, usage, params, template_id, sign_name, region, provider)
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
            Err(_) if before.is_none() => return Ok(Verdict::NoNumber),
            Err(_) => return Err("on_send set req.phone to a number that does not parse".into()),
        },
        (None, Some(before)) => before.clone(),
        (None, None) => return Ok(Verdict::NoNumber),
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
        let templates = tenant.tencent.as_ref().map(|t| t.templates_for(final_phone.is_mainland_china()).0);
        if !templates.is_some_and(|t| t.contains_id(id)) {
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
        let from = tenant.tencent.as_ref().and_then(|t| t.sign_name.clone());
        changes.push(Change { field: "sign_name", from, to: name.clone() });
    }
    if let Some(r) = &region {
        let ok = matches!(r.split_once('-'), Some((a, b)) if a.len() == 2
            && a.bytes().all(|x| x.is_ascii_lowercase())
            && !b.is_empty() && r.len() <= MAX_SHORT
            && b.bytes().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == b'-'));
        if !ok {
            return Err("req.region must be a Tencent Cloud region such as ap-singapore".into());
        }
        let from = tenant.tencent.as_ref().map(|t| t.region.clone());
        changes.push(Change { field: "region", from, to: r.clone() });
    }
    let provider = match provider {
        None => None,
        Some(name) => match ProviderId::from_name(&name).filter(|id| tenant.upstream(*id).is_some()) {
            Some(id) => {
                changes.push(Change { field: "provider", from: None, to: id.to_string() });
                Some(id)
            }
            None => {
                let names: Vec<&str> = tenant.providers().map(ProviderId::as_str).collect();
                return Err(format!("req.provider must be one of the tenant's providers: {}", names.join(", ")));
            }
        },
    };
    let routed = Routed {
        phone: final_phone,
        usage: final_usage,
        params: final_params,
        template_id,
        sign_name,
        region,
        provider,
    };
    Ok(Verdict::Routed(routed, changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A hook with the default budgets but a deadline far off: only the tests about time may depend on
    /// how fast this (debug, shared) machine runs.
    fn hook(source: &str) -> ScriptHook {
        hook_with(source, ScriptLimits { time: Duration::from_secs(1), ..ScriptLimits::default() })
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

    fn with_input<T>(params: &[&str], f: impl FnOnce(&HookInput<'_>) -> T) -> T {
        let phone = Phone::from_e164("+8613800138000").unwrap();
        let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
        f(&HookInput {
            tenant: "acme",
            phone: Some(&phone),
            raw_phone: "13800138000",
            usage: "SignIn",
            code: Some("123456"),
            params: &params,
            providers: None,
            ip: None,
            locale: None,
            request_id: Some("r1"),
            log_budget: None,
        })
    }

    /// A call with the whole budget, on this thread.
    fn call(hook: &ScriptHook, params: &[&str]) -> Result<RawVerdict, String> {
        with_input(params, |input| hook.call(input))
    }

    /// Only the inline attempt, on this thread.
    fn slice(hook: &ScriptHook, params: &[&str]) -> SliceOutcome {
        with_input(params, |input| hook.call_inline(input))
    }

    /// A call as the gateway makes it (inline first, then the hook threads), from a one-thread runtime.
    fn dispatch(hook: &ScriptHook, params: &[&str]) -> Result<RawVerdict, CallError> {
        let request = SendRequest {
            phone: crate::sms::PhoneInput::Native("+8613800138000".into()),
            usage: "SignIn".into(),
            params: params.iter().map(|s| s.to_string()).collect(),
            code: Some("123456".into()),
            ip: None,
            locale: None,
            idempotency_key: None,
            vouched: false,
        };
        let phone = Phone::from_e164("+8613800138000").ok();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(hook.dispatch(request, phone, None, "r1", &LogBudget::default())).expect("an answer").0
    }

    /// Whether a cut-off message names the slice's own limits (not the call's whole budget).
    /// A fast call's inline attempt. The slice's time is wall-clock: on a busy machine a fast call can be
    /// preempted past it, so a cut-off by time alone (never by instructions or memory, never an answer) is
    /// tried again, on fresh states, a few times.
    fn fast_slice(hook: &ScriptHook) -> SliceOutcome {
        let mut outcome = slice(hook, &["fast"]);
        for _ in 0..5 {
            match &outcome {
                SliceOutcome::CutOff(why) if why.contains("time limit exceeded") => {
                    hook.inner.refill();
                    outcome = slice(hook, &["fast"]);
                }
                _ => break,
            }
        }
        outcome
    }

    fn sliced(why: &str) -> bool {
        why.contains(&format!("instruction budget exhausted ({SLICE_INSTRUCTIONS} per call)"))
            || why.contains("time limit exceeded (200µs per call)")
    }

    /// Top-level state that a call taints before it spins and clears when it completes: a state that
    /// served again after a cut-off would refuse.
    const TAINTED: &str = r#"
        local state = { tainted = false }
        function on_send(req)
          if state.tainted then return {reject = "a cut-off state served again"} end
          local which = req.params[1]
          smsgate.log("warn", "attempt " .. which)
          if which == "slow" then
            state.tainted = true
            local n = 0
            for i = 1, 50000 do n = n + 1 end
            state.tainted = false
            return {reject = "counted " .. n}
          end
          if which == "big" then local s = ("x"):rep(200000) return {reject = "built " .. #s} end
          if which == "error" then error("boom") end
          if which == "reject" then return {reject = "no"} end
        end"#;

    #[test]
    fn a_slice_cut_off_discards_its_state_and_the_whole_budget_gives_the_answer() {
        let h = hook(TAINTED);
        let pooled = h.pooled();
        assert!(pooled >= 1);
        // 50,000 loop iterations: past the slice (20,000 instructions), within the budget (200,000).
        let SliceOutcome::CutOff(why) = slice(&h, &["slow"]) else { panic!("cut off") };
        assert!(sliced(&why), "{why}");
        assert_eq!(h.pooled(), pooled - 1, "the cut-off state is not pooled again");
        assert_eq!(h.call_paths(), CallPaths { inline: 0, pooled: 0, overruns: 1 });
        // Made again with the whole budget (as on the hook threads), it completes.
        assert_eq!(call(&h, &["slow"]), Ok(RawVerdict::Reject("counted 50000".into())));
        h.inner.refill();
        // Every state left answers inline, and none is the tainted one.
        for _ in 0..h.pooled() {
            assert_eq!(fast_slice(&h), SliceOutcome::Answered(Ok(unchanged())));
        }
        // The slice's memory is its own: 200 KB is past it, within the call's 1 MiB.
        let SliceOutcome::CutOff(why) = slice(&h, &["big"]) else { panic!("cut off") };
        assert!(why.contains("memory limit exceeded (64 KiB per call)"), "{why}");
        assert_eq!(call(&h, &["big"]), Ok(RawVerdict::Reject("built 200000".into())));
    }

    #[test]
    fn errors_and_rejects_within_the_slice_are_answers() {
        let h = hook(TAINTED);
        let SliceOutcome::Answered(Err(e)) = slice(&h, &["error"]) else { panic!("an answer") };
        assert!(e.starts_with("t.lua:") && e.ends_with("boom"), "{e}");
        assert_eq!(slice(&h, &["reject"]), SliceOutcome::Answered(Ok(RawVerdict::Reject("no".into()))));
        assert_eq!(h.call_paths(), CallPaths { inline: 2, pooled: 0, overruns: 0 });
    }

    #[test]
    fn a_cut_off_slice_leaves_no_log_line() {
        let h = hook(TAINTED);
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            assert!(matches!(slice(&h, &["slow"]), SliceOutcome::CutOff(_)));
            assert_eq!(call(&h, &["slow"]), Ok(RawVerdict::Reject("counted 50000".into())));
            assert_eq!(fast_slice(&h), SliceOutcome::Answered(Ok(unchanged())));
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<_> = log.lines().filter(|l| l.contains("attempt")).collect();
        assert_eq!(lines.len(), 2, "one line for the complete slow call, one for the fast one:\n{log}");
        assert!(lines[0].contains("attempt slow") && lines[0].contains("request_id=\"r1\""), "{log}");
        assert!(lines[1].contains("attempt fast"), "{log}");
    }

    #[test]
    fn the_gateway_answers_fast_calls_inline_and_overruns_on_the_hook_threads() {
        let h = hook(TAINTED);
        assert_eq!(dispatch(&h, &["reject"]), Ok(RawVerdict::Reject("no".into())));
        assert_eq!(h.call_paths(), CallPaths { inline: 1, pooled: 0, overruns: 0 });
        // Past the slice: cut off, then made again on a hook thread, which answers.
        assert_eq!(dispatch(&h, &["slow"]), Ok(RawVerdict::Reject("counted 50000".into())));
        let paths = h.call_paths();
        assert_eq!((paths.overruns, paths.pooled), (1, 1), "{paths:?}");
    }

    #[test]
    fn long_strings_keep_calls_off_the_inline_path() {
        // A script that keeps more than a slice's memory: every call goes to the hook threads.
        let h = hook(r#"local BIG = ("x"):rep(100000) function on_send(req) return {reject = "held " .. #BIG} end"#);
        assert_eq!(dispatch(&h, &["1"]), Ok(RawVerdict::Reject("held 100000".into())));
        assert_eq!(h.call_paths(), CallPaths { inline: 0, pooled: 1, overruns: 0 });
        // A request whose strings are longer than a slice's memory, to a hook that would go inline.
        let h = hook(TAINTED);
        let long = "x".repeat(SLICE_MEMORY);
        assert_eq!(dispatch(&h, &["reject", &long]), Ok(RawVerdict::Reject("no".into())));
        assert_eq!(h.call_paths(), CallPaths { inline: 0, pooled: 1, overruns: 0 });
    }

    fn unchanged() -> RawVerdict {
        RawVerdict::Proceed {
            phone: None,
            usage: None,
            params: None,
            template_id: None,
            sign_name: None,
            region: None,
            provider: None,
        }
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
            // A deadline far off: this test is about the instruction and memory budgets.
            ScriptLimits { instructions: 100_000, memory: 256 << 10, time: Duration::from_secs(1) },
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
        // The hook serves again after each failure (on a fresh state: a cut-off one is dropped).
        assert_eq!(call(&h, &["fine"]), Ok(unchanged()));
    }

    #[test]
    fn no_script_code_runs_once_a_call_is_cut_off() {
        let h = hook_with(
            r#"
            local function after() smsgate.log("error", "script code ran after the cut-off: " .. W) end
            function on_send(req)
              local which = req.params[1]
              W = which
              if which == "handler" then xpcall(function() while true do end end, after) end
              if which == "handler_of_error" then xpcall(function() error("x") end, function() while true do end end) after() end
              if which == "pcall" then pcall(function() while true do end end) after() end
              if which == "gsub" then string.gsub("abcdef", "%w", function() after() while true do end end) end
              if which == "sort" then table.sort({3, 1, 2, 5, 4}, function(a, b) after() while true do end end) end
              if which == "memory" then
                pcall(function() local t = {} for i = 1, 1e9 do t[i] = {} end end)
                after()
              end
              if which == "memory_rep" then pcall(string.rep, "x", 1 << 20) after() end
              if which == "deadline" then pcall(function() local s = ("x"):rep(1000) while true do local _ = s < s end end) after() end
            end"#,
            ScriptLimits { instructions: 100_000, memory: 256 << 10, time: Duration::from_millis(50) },
        );
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            for which in ["handler", "handler_of_error", "pcall", "gsub", "sort", "memory", "memory_rep", "deadline"] {
                let e = call(&h, &[which]).unwrap_err();
                let cut = ["instruction budget exhausted", "time limit exceeded", "memory limit exceeded"];
                assert!(cut.iter().any(|c| e.contains(c)), "{which}: {e}");
            }
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let ran: Vec<_> = log.lines().filter(|l| l.contains("after the cut-off")).collect();
        // `gsub` and `sort` log once each before they spin: that is before the cut-off.
        assert_eq!(ran.len(), 2, "{log}");
    }

    #[test]
    fn regression_no_value_can_become_closable() {
        // Lua runs the __close handlers of the frame the count hook stops while the hook's error unwinds,
        // with hooks off: a `local x <close>` next to an endless loop escaped every budget.
        let h = hook(
            r#"
            function on_send(req)
              local which = req.params[1]
              local spin = function() while true do end end
              if which == "set" then local x <close> = setmetatable({}, {__close = spin}) while true do end end
              if which == "later" then
                local mt = {}
                local o = setmetatable({}, mt)
                mt.__close = spin
                local x <close> = o
                while true do end
              end
              if which == "for" then
                local mt = {}
                local o = setmetatable({}, mt)
                mt.__close = spin
                for _ in next, {1}, nil, o do while true do end end
              end
              if which == "gc" then setmetatable({}, {__gc = spin}) end
              if which == "identity" then
                local mt = {__index = {x = 1}}
                local o = setmetatable({}, mt)
                if getmetatable(o) ~= mt or o.x ~= 1 then return {reject = "identity"} end
                mt.__index = {x = 2}
                if o.x ~= 1 then return {reject = "a later change applied"} end
                setmetatable(o, {__index = {x = 3}})
                if o.x ~= 3 then return {reject = "could not replace it"} end
                setmetatable(o, nil)
                if getmetatable(o) ~= nil then return {reject = "could not remove it"} end
                local p = setmetatable({}, {__metatable = "locked"})
                if getmetatable(p) ~= "locked" then return {reject = "__metatable"} end
                if pcall(setmetatable, p, {}) then return {reject = "a protected metatable changed"} end
                local ok, e = pcall(setmetatable, smsgate, {})
                if ok then return {reject = "the API's metatable changed"} end
              end
            end"#,
        );
        let e = call(&h, &["set"]).unwrap_err();
        assert!(e.contains("t.lua:5: __close metamethods are not available in hooks"), "{e}");
        for which in ["later", "for"] {
            let e = call(&h, &[which]).unwrap_err();
            assert!(e.contains("non-closable value"), "{which}: {e}");
        }
        assert!(call(&h, &["gc"]).unwrap_err().contains("__gc metamethods are not available in hooks"));
        assert_eq!(call(&h, &["identity"]), Ok(unchanged()));
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
        let e = call(&h, &["typo"]).unwrap_err();
        assert!(e.contains("req.templat_id"), "{e}");
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
