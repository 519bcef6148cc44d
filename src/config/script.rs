//! A tenant's Lua hook as the config states it: the settings the hook sees, its per-call budgets and what a
//! failing hook does. Inert values, shared with the script stage (`crate::script` re-exports them).

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
