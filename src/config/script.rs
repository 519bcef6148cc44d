//! A tenant's Lua hook as the config states it: the file (read when the config compiles, bounded, regular
//! files only), the settings the hook sees, its per-call budgets and what a failing hook does. Inert: the
//! script is compiled, and its pool of Lua states made, by `Runtime::build` (`ScriptHook::build`); that
//! runtime state lives in runtime.rs, built by Runtime::build, dropped with it on reload.

use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_INSTRUCTIONS: u32 = 200_000;
pub const DEFAULT_MEMORY: usize = 1 << 20;
pub const DEFAULT_TIME: Duration = Duration::from_millis(10);
/// The range of `script_limits.time`.
pub const TIME_RANGE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(1));
/// A script file is read only up to this size (1 MiB).
pub const MAX_SCRIPT_BYTES: u64 = 1 << 20;

/// Per-call budgets of a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptLimits {
    /// Lua VM instructions one call may run (counted in steps of 100), library work included at its
    /// instruction price.
    pub instructions: u32,
    /// Bytes one call may allocate beyond what the loaded script holds; also the most the loaded script
    /// may hold.
    pub memory: usize,
    /// Wall-clock time one call may run, from the moment a hook thread starts it.
    pub time: Duration,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits { instructions: DEFAULT_INSTRUCTIONS, memory: DEFAULT_MEMORY, time: DEFAULT_TIME }
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

/// A tenant's `script:` as compiled: what `ScriptHook::build` needs to make the hook.
#[derive(Clone)]
pub struct ScriptSpec {
    /// The file as the config writes it (relative to the config's folder): names the script in errors and
    /// Lua line numbers.
    pub path: String,
    /// The file's text, read when the config compiled.
    pub source: Arc<str>,
    pub settings: Settings,
    pub limits: ScriptLimits,
    pub on_error: OnScriptError,
    /// Line and column of the `script:` key's value in the config file: an error compiling the script points
    /// there.
    pub(crate) location: Option<(usize, usize)>,
}

impl std::fmt::Debug for ScriptSpec {
    // By hand: the size of the source, not its text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptSpec")
            .field("path", &self.path)
            .field("source_bytes", &self.source.len())
            .field("limits", &self.limits)
            .field("on_error", &self.on_error)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}
