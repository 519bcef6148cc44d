//! The budget of one hook call: instruction units (VM instructions, counted by the count hook every
//! `STEP`, plus what the charged library functions pay for the work they do inside C or Rust), a time
//! limit checked at each count hook and each charge, and the memory the call may still allocate. The time
//! limit is a deadline on the monotonic clock; when it passes, the thread's CPU clock says whether the call
//! really ran that long or waited for a CPU on a busy machine (then it gets the rest of its time, up to
//! `WALL_SLACK` more in wall-clock time). Once the call is cut off (budget, time or memory),
//! a hook that fails every instruction is installed, so no Lua code runs again in that call whatever catches
//! the error: message handlers, `pcall` and every metamethod stop at their first instruction.

use mlua::{HookTriggers, Lua, VmState};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// VM instructions between two count hooks: the most a call runs between two budget and deadline
/// checks. Each hook costs about 100 ns, so 100 adds about 1 ns per instruction (measured in
/// BENCHMARKS.md); a larger step would let a loop of expensive instructions (comparing or
/// concatenating strings near the memory limit) run that many more before its deadline is noticed.
pub(crate) const STEP: u32 = 100;
/// Bytes copied or scanned by a library function for the price of one instruction. Measured: a VM
/// instruction takes about 5 ns under the count hook; copying takes about 0.1 ns a byte and scanning
/// less, so 32 bytes a unit charges such work at or above its time.
pub(crate) const BYTES_PER_UNIT: u64 = 32;

/// A call's wall-clock time is capped at its time limit plus this, however long it waited for a CPU (a
/// container whose CPU quota runs out stalls every thread for up to a quota period, 100 ms by default).
pub(crate) const WALL_SLACK: Duration = Duration::from_secs(1);

/// Why a call was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    Instructions,
    Time,
    Memory,
}

impl Cut {
    fn from_u8(v: u8) -> Option<Cut> {
        match v {
            1 => Some(Cut::Instructions),
            2 => Some(Cut::Time),
            3 => Some(Cut::Memory),
            _ => None,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Cut::Instructions => 1,
            Cut::Time => 2,
            Cut::Memory => 3,
        }
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds on the monotonic clock since the first call (the process's hook epoch).
pub(super) fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// CPU time this thread has used (a system call: read at a call's start and when its deadline passes).
fn thread_cpu_ns() -> Option<u64> {
    cpu_time::ThreadTime::try_now().ok().map(|t| t.as_duration().as_nanos() as u64)
}

/// What one Lua state shares between its count hook and its charged functions. A state serves one call
/// at a time; the atomics only make it `Sync` (they are never contended).
pub(crate) struct Meter {
    /// Instruction units left in this call; at or below zero the budget is spent.
    left: AtomicI64,
    /// When to look at the time again (monotonic clock).
    deadline_ns: AtomicU64,
    /// The wall-clock cap: the limit plus `WALL_SLACK`.
    hard_ns: AtomicU64,
    /// The thread's CPU clock at the call's start (`u64::MAX`: none, the wall clock decides alone).
    cpu_start_ns: AtomicU64,
    /// Time the host's own functions took, which does not count.
    credit_ns: AtomicU64,
    /// Whether the host's own functions get their time back (`extend`): not in a slice, whose clock
    /// bounds how long the thread is held, whatever runs.
    credit_host: AtomicBool,
    time_ns: AtomicU64,
    cut: AtomicU8,
    /// The state's heap limit while the script runs (0: none, while the host works).
    memory_limit: AtomicUsize,
    /// The first cut-off's message, with the script line where it happened.
    message: Mutex<Option<String>>,
    script: Arc<str>,
    /// The per-call budget and time, for messages.
    instructions: AtomicU64,
    time: Mutex<Duration>,
    memory: AtomicUsize,
}

impl Meter {
    pub(super) fn new(script: Arc<str>) -> Arc<Meter> {
        Arc::new(Meter {
            left: AtomicI64::new(0),
            deadline_ns: AtomicU64::new(0),
            hard_ns: AtomicU64::new(0),
            cpu_start_ns: AtomicU64::new(u64::MAX),
            credit_ns: AtomicU64::new(0),
            credit_host: AtomicBool::new(true),
            time_ns: AtomicU64::new(0),
            cut: AtomicU8::new(0),
            memory_limit: AtomicUsize::new(0),
            message: Mutex::new(None),
            script,
            instructions: AtomicU64::new(0),
            time: Mutex::new(Duration::ZERO),
            memory: AtomicUsize::new(0),
        })
    }

    /// Starts a call (or the script's load): `instructions` units, `time` from now. `credit_host`: whether
    /// the time the host's own functions take is given back (see [`Meter::extend`]).
    pub(super) fn start(&self, instructions: u64, time: Duration, memory: usize, credit_host: bool) {
        self.left.store(instructions.min(i64::MAX as u64) as i64, Relaxed);
        let (now, time_ns) = (now_ns(), time.as_nanos() as u64);
        self.deadline_ns.store(now.saturating_add(time_ns), Relaxed);
        self.hard_ns.store(now.saturating_add(time_ns).saturating_add(WALL_SLACK.as_nanos() as u64), Relaxed);
        self.cpu_start_ns.store(thread_cpu_ns().unwrap_or(u64::MAX), Relaxed);
        self.credit_ns.store(0, Relaxed);
        self.credit_host.store(credit_host, Relaxed);
        self.time_ns.store(time_ns, Relaxed);
        self.cut.store(0, Relaxed);
        self.instructions.store(instructions, Relaxed);
        self.memory.store(memory, Relaxed);
        *self.time.lock().unwrap_or_else(|p| p.into_inner()) = time;
        *self.message.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn set_memory_limit(&self, limit: usize) {
        self.memory_limit.store(limit, Relaxed);
    }

    /// Whether the call has used up its time: past the deadline, it ran that long on a CPU (or passed the
    /// wall-clock cap). A call that only waited for a CPU gets a later deadline instead.
    fn time_up(&self) -> bool {
        let now = now_ns();
        if now <= self.deadline_ns.load(Relaxed) {
            return false;
        }
        if now >= self.hard_ns.load(Relaxed) {
            return true;
        }
        let start = self.cpu_start_ns.load(Relaxed);
        let (Some(cpu), true) = (thread_cpu_ns(), start != u64::MAX) else { return true };
        let used = cpu.saturating_sub(start).saturating_sub(self.credit_ns.load(Relaxed));
        let time = self.time_ns.load(Relaxed);
        if used >= time {
            return true;
        }
        self.deadline_ns.store(now + (time - used), Relaxed);
        false
    }

    /// Why the call was cut off, if it was.
    pub(super) fn cut(&self) -> Option<Cut> {
        Cut::from_u8(self.cut.load(Relaxed))
    }

    /// The message of the cut-off: `scripts/x.lua:12: instruction budget exhausted (200000 per call)`.
    pub(super) fn message(&self) -> Option<String> {
        self.message.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The count hook: `STEP` more instructions ran. `Some` when that ends the call (the hook then calls
    /// `cut_off` with the line it is at).
    pub(crate) fn tick(&self) -> Option<Cut> {
        let left = self.left.fetch_sub(i64::from(STEP), Relaxed) - i64::from(STEP);
        if left <= 0 {
            return Some(Cut::Instructions);
        }
        if self.time_up() {
            return Some(Cut::Time);
        }
        None
    }

    /// Pays `units` for work done outside the VM (by a library function called from `lua`).
    pub(crate) fn charge(&self, lua: &Lua, units: u64) -> mlua::Result<()> {
        if self.cut().is_some() {
            return Err(self.spent_error());
        }
        let units = units.min(i64::MAX as u64) as i64;
        let left = self.left.fetch_sub(units, Relaxed) - units;
        if left < 0 {
            return Err(self.cut_off(lua, Cut::Instructions, caller(lua)));
        }
        if self.time_up() {
            return Err(self.cut_off(lua, Cut::Time, caller(lua)));
        }
        Ok(())
    }

    /// Pays for `bytes` copied or scanned, plus `items` values moved.
    pub(crate) fn charge_work(&self, lua: &Lua, bytes: usize, items: usize) -> mlua::Result<()> {
        self.charge(lua, bytes as u64 / BYTES_PER_UNIT + items as u64 + 1)
    }

    /// Takes up to `want` units (at least one) for work paid in advance, such as pattern matching steps;
    /// `refund` gives back what was not used.
    pub(crate) fn draw(&self, lua: &Lua, want: u64) -> mlua::Result<u64> {
        if self.cut().is_some() {
            return Err(self.spent_error());
        }
        if self.time_up() {
            return Err(self.cut_off(lua, Cut::Time, caller(lua)));
        }
        let left = self.left.load(Relaxed);
        if left <= 0 {
            return Err(self.cut_off(lua, Cut::Instructions, caller(lua)));
        }
        let take = want.clamp(1, left as u64);
        self.left.fetch_sub(take as i64, Relaxed);
        Ok(take)
    }

    /// Moves the deadline by `by`: the time the host's own functions took, which their charge pays for.
    /// Nothing in a slice started without that credit.
    pub(super) fn extend(&self, by: Duration) {
        if !self.credit_host.load(Relaxed) {
            return;
        }
        let by = by.as_nanos() as u64;
        self.deadline_ns.fetch_add(by, Relaxed);
        self.hard_ns.fetch_add(by, Relaxed);
        self.credit_ns.fetch_add(by, Relaxed);
    }

    pub(crate) fn refund(&self, units: u64) {
        self.left.fetch_add(units.min(i64::MAX as u64) as i64, Relaxed);
    }

    /// Checks that `bytes` more may be allocated (by a function that builds its result outside Lua's
    /// heap before handing it over) without passing the call's memory limit.
    pub(super) fn room(&self, lua: &Lua, bytes: usize) -> mlua::Result<()> {
        let limit = self.memory_limit.load(Relaxed);
        let fits = || limit == 0 || lua.used_memory().saturating_add(bytes) <= limit;
        // Like Lua's allocator, collect the garbage before giving up.
        if fits() || (lua.gc_collect().is_ok() && fits()) {
            return Ok(());
        }
        Err(self.cut_off(lua, Cut::Memory, caller(lua)))
    }

    /// Marks the call cut off by memory (the script caught Lua's own "not enough memory").
    pub(crate) fn memory_spent(&self, lua: &Lua) -> mlua::Error {
        self.cut_off(lua, Cut::Memory, caller(lua))
    }

    /// The error a cut-off call raises wherever it is.
    pub(crate) fn spent_error(&self) -> mlua::Error {
        mlua::Error::RuntimeError(self.message().unwrap_or_else(|| format!("{}: call cut off", self.script)))
    }

    /// Records why the call stops and makes sure no Lua instruction runs again in it: from now on the
    /// count hook fires before every instruction and fails.
    pub(super) fn cut_off(&self, lua: &Lua, why: Cut, at: Option<(String, usize)>) -> mlua::Error {
        let first = self.cut.compare_exchange(0, why.to_u8(), Relaxed, Relaxed).is_ok();
        if first {
            let at = match at {
                Some((src, line)) if *src == *self.script => format!("{src}:{line}: "),
                _ => format!("{}: ", self.script),
            };
            let what = match why {
                Cut::Instructions => {
                    format!("instruction budget exhausted ({} per call)", self.instructions.load(Relaxed))
                }
                Cut::Time => {
                    let time = *self.time.lock().unwrap_or_else(|p| p.into_inner());
                    format!("time limit exceeded ({} per call)", duration_text(time))
                }
                Cut::Memory => format!("memory limit exceeded ({} KiB per call)", self.memory.load(Relaxed) >> 10),
            };
            *self.message.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{at}{what}"));
            let message = self.spent_error();
            let kill = move |_: &Lua, _: &mlua::Debug| -> mlua::Result<VmState> { Err(message.clone()) };
            // Failing to install it leaves the regular hook, which also fails from now on (the budget
            // is marked spent), only up to STEP instructions later.
            let _ = lua.set_global_hook(HookTriggers::new().every_nth_instruction(1), kill);
            self.left.store(0, Relaxed);
        }
        self.spent_error()
    }
}

/// File and line of the Lua code that called the running library function.
pub(super) fn caller(lua: &Lua) -> Option<(String, usize)> {
    lua.inspect_stack(1 + wrapper_frames(lua), |d| {
        let line = d.current_line()?;
        let src = d.source().short_src?.into_owned();
        Some((src, line))
    })
    .flatten()
}

/// The chunk name of the sandbox's own Lua wrappers around library functions. Error positions and names
/// skip their frames, so an error reads as if the script had called the library function itself.
pub(crate) const WRAPPER_CHUNK: &str = "=smsgate";

/// How many stack levels just above the running host function are sandbox wrappers.
pub(crate) fn wrapper_frames(lua: &Lua) -> usize {
    let mut n = 0;
    while lua.inspect_stack(1 + n, |d| d.source().source.as_deref() == Some(WRAPPER_CHUNK)).unwrap_or(false) {
        n += 1;
    }
    n
}

/// `10ms`, `1s`, `200µs`: a duration as the config writes it (an inline slice's, below a millisecond).
pub(crate) fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return format!("{}µs", d.as_micros());
    }
    if ms >= 1000 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
/// The innermost, one-line message of a Lua error (mlua wraps callback errors and adds tracebacks). A
/// position inside the sandbox's own prelude is dropped: it says nothing to the script's author.
pub(super) fn describe(e: &mlua::Error) -> String {
    let message = match e {
        // Lua appends a traceback to runtime errors; the first part carries file, line and message.
        mlua::Error::RuntimeError(m) => m.split("\nstack traceback:").next().unwrap_or_default().to_owned(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(_) => "memory limit exceeded".into(),
        mlua::Error::CallbackError { cause, .. } => describe(cause),
        mlua::Error::WithContext { cause, .. } => describe(cause),
        other => other.to_string().lines().next().unwrap_or_default().to_owned(),
    };
    match message.strip_prefix("smsgate prelude:").and_then(|rest| rest.split_once(": ")) {
        Some((line, rest)) if line.bytes().all(|b| b.is_ascii_digit()) => rest.to_owned(),
        _ => message,
    }
}
