//! The budget of one hook call: instruction units (VM instructions, counted by the count hook every
//! `STEP`, plus what the charged library functions pay for the work they do inside C or Rust), a
//! wall-clock deadline checked at each count hook and each charge, and the memory the call may still
//! allocate. Once the call is cut off (budget, deadline or memory), a hook that fails every instruction
//! is installed, so no Lua code runs again in that call whatever catches the error: message handlers,
//! `pcall`, `__close` and every other metamethod stop at their first instruction.

use mlua::{HookTriggers, Lua, VmState};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// VM instructions between two count hooks: the most a call runs between two budget and deadline
/// checks. Each hook costs about 100 ns, so 100 adds about 1 ns per instruction (measured in
/// BENCHMARKS.md); a larger step would let a loop of expensive instructions (comparing or
/// concatenating strings near the memory limit) run that many more before its deadline is noticed.
pub const STEP: u32 = 100;
/// Bytes copied or scanned by a library function for the price of one instruction. Measured: a VM
/// instruction takes about 5 ns under the count hook; copying takes about 0.1 ns a byte and scanning
/// less, so 32 bytes a unit charges such work at or above its time.
pub const BYTES_PER_UNIT: u64 = 32;

/// Why a call was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
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

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// What one Lua state shares between its count hook and its charged functions. A state serves one call
/// at a time; the atomics only make it `Sync` (they are never contended).
pub struct Meter {
    /// Instruction units left in this call; at or below zero the budget is spent.
    left: AtomicI64,
    deadline_ns: AtomicU64,
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
    pub fn new(script: Arc<str>) -> Arc<Meter> {
        Arc::new(Meter {
            left: AtomicI64::new(0),
            deadline_ns: AtomicU64::new(0),
            cut: AtomicU8::new(0),
            memory_limit: AtomicUsize::new(0),
            message: Mutex::new(None),
            script,
            instructions: AtomicU64::new(0),
            time: Mutex::new(Duration::ZERO),
            memory: AtomicUsize::new(0),
        })
    }

    /// Starts a call (or the script's load): `instructions` units, `time` from now.
    pub fn start(&self, instructions: u64, time: Duration, memory: usize) {
        self.left.store(instructions.min(i64::MAX as u64) as i64, Relaxed);
        self.deadline_ns.store(now_ns().saturating_add(time.as_nanos() as u64), Relaxed);
        self.cut.store(0, Relaxed);
        self.instructions.store(instructions, Relaxed);
        self.memory.store(memory, Relaxed);
        *self.time.lock().unwrap_or_else(|p| p.into_inner()) = time;
        *self.message.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn set_memory_limit(&self, limit: usize) {
        self.memory_limit.store(limit, Relaxed);
    }

    /// Why the call was cut off, if it was.
    pub fn cut(&self) -> Option<Cut> {
        Cut::from_u8(self.cut.load(Relaxed))
    }

    /// The message of the cut-off: `scripts/x.lua:12: instruction budget exhausted (200000 per call)`.
    pub fn message(&self) -> Option<String> {
        self.message.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Units used so far in this call (for tests and benches).
    pub fn used(&self) -> u64 {
        let left = self.left.load(Relaxed);
        self.instructions.load(Relaxed).saturating_sub(left.max(0) as u64)
    }

    /// The count hook: `STEP` more instructions ran. `Some` when that ends the call (the hook then calls
    /// `cut_off` with the line it is at).
    pub fn tick(&self) -> Option<Cut> {
        let left = self.left.fetch_sub(i64::from(STEP), Relaxed) - i64::from(STEP);
        if left <= 0 {
            return Some(Cut::Instructions);
        }
        if now_ns() > self.deadline_ns.load(Relaxed) {
            return Some(Cut::Time);
        }
        None
    }

    /// Pays `units` for work done outside the VM (by a library function called from `lua`).
    pub fn charge(&self, lua: &Lua, units: u64) -> mlua::Result<()> {
        if self.cut().is_some() {
            return Err(self.spent_error());
        }
        let units = units.min(i64::MAX as u64) as i64;
        let left = self.left.fetch_sub(units, Relaxed) - units;
        if left < 0 {
            return Err(self.cut_off(lua, Cut::Instructions, caller(lua)));
        }
        if now_ns() > self.deadline_ns.load(Relaxed) {
            return Err(self.cut_off(lua, Cut::Time, caller(lua)));
        }
        Ok(())
    }

    /// Pays for `bytes` copied or scanned, plus `items` values moved.
    pub fn charge_work(&self, lua: &Lua, bytes: usize, items: usize) -> mlua::Result<()> {
        self.charge(lua, bytes as u64 / BYTES_PER_UNIT + items as u64 + 1)
    }

    /// Takes up to `want` units (at least one) for work paid in advance, such as pattern matching steps;
    /// `refund` gives back what was not used.
    pub fn draw(&self, lua: &Lua, want: u64) -> mlua::Result<u64> {
        if self.cut().is_some() {
            return Err(self.spent_error());
        }
        if now_ns() > self.deadline_ns.load(Relaxed) {
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
    pub fn extend(&self, by: Duration) {
        self.deadline_ns.fetch_add(by.as_nanos() as u64, Relaxed);
    }

    pub fn refund(&self, units: u64) {
        self.left.fetch_add(units.min(i64::MAX as u64) as i64, Relaxed);
    }

    /// Checks that `bytes` more may be allocated (by a function that builds its result outside Lua's
    /// heap before handing it over) without passing the call's memory limit.
    pub fn room(&self, lua: &Lua, bytes: usize) -> mlua::Result<()> {
        let limit = self.memory_limit.load(Relaxed);
        let fits = || limit == 0 || lua.used_memory().saturating_add(bytes) <= limit;
        // Like Lua's allocator, collect the garbage before giving up.
        if fits() || (lua.gc_collect().is_ok() && fits()) {
            return Ok(());
        }
        Err(self.cut_off(lua, Cut::Memory, caller(lua)))
    }

    /// Marks the call cut off by memory (the script caught Lua's own "not enough memory").
    pub fn memory_spent(&self, lua: &Lua) -> mlua::Error {
        self.cut_off(lua, Cut::Memory, caller(lua))
    }

    /// The error a cut-off call raises wherever it is.
    pub fn spent_error(&self) -> mlua::Error {
        mlua::Error::RuntimeError(self.message().unwrap_or_else(|| format!("{}: call cut off", self.script)))
    }

    /// Records why the call stops and makes sure no Lua instruction runs again in it: from now on the
    /// count hook fires before every instruction and fails.
    pub fn cut_off(&self, lua: &Lua, why: Cut, at: Option<(String, usize)>) -> mlua::Error {
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
pub fn caller(lua: &Lua) -> Option<(String, usize)> {
    lua.inspect_stack(1, |d| {
        let line = d.current_line()?;
        let src = d.source().short_src?.into_owned();
        Some((src, line))
    })
    .flatten()
}

/// `10ms`, `1s`: a duration as the config writes it.
pub fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
