//! The inline attempt: a hook call made first on the async worker that handles the request, within a slice
//! of its budget (`SLICE_INSTRUCTIONS`, `SLICE_TIME` and `SLICE_MEMORY`, whichever ends first), so that an
//! ordinary call costs no hand-off to the hook threads. A slice that is cut off counts as an overrun: its
//! state is discarded and the call is made again, from scratch and with the whole budget, on the hook
//! threads. The gate here sends a hook whose calls overran within the last `COOLDOWN` straight to the hook
//! threads, so a slow or hostile hook costs the workers one slice now and then; it also keeps away the
//! hooks and requests whose strings are too long for a slice, and counts which way calls went.

use super::meter::now_ns;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Instruction units an inline attempt may use: about 100 µs of interpreted Lua, some 50 times what the
/// shipped scripts need (a few hundred instructions; `smsgate.parse_phone` costs 1,500).
pub const SLICE_INSTRUCTIONS: u32 = 20_000;
/// Time an inline attempt may take, everything on the thread included (the host's own functions too):
/// the bound on VM instructions whose cost the count does not see (operations on long strings).
pub const SLICE_TIME: Duration = Duration::from_micros(200);
/// Bytes an inline attempt may allocate; also the most the loaded script may keep, and the request's
/// strings may total, for a call to go inline. So no string a slice touches is longer than this, which
/// bounds what a single VM instruction on strings (`<`, `..`, which count as one instruction) costs
/// between two checks of the clock, 100 instructions apart.
pub const SLICE_MEMORY: usize = 64 << 10;
/// How long after an overrun a hook's calls skip the inline attempt.
pub const COOLDOWN: Duration = Duration::from_secs(1);

/// Which way a hook's calls went, since it was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallPaths {
    /// Calls answered inline, on the async worker.
    pub inline: u64,
    /// Calls handed to the hook threads (overruns' second attempts included).
    pub pooled: u64,
    /// Inline attempts cut off at the end of their slice (or by the memory limit), then made again on
    /// the hook threads.
    pub overruns: u64,
}

/// The inline gate of one hook.
pub(super) struct Gate {
    /// The loaded script keeps little enough for its calls to go inline.
    eligible: bool,
    /// When the last overrun happened (`now_ns` + 1; 0: never).
    overrun_at: AtomicU64,
    inline: AtomicU64,
    pooled: AtomicU64,
    overruns: AtomicU64,
}

impl Gate {
    /// The gate of a hook whose loaded script keeps `held` bytes.
    pub(super) fn new(held: usize) -> Gate {
        Gate {
            eligible: held <= SLICE_MEMORY,
            overrun_at: AtomicU64::new(0),
            inline: AtomicU64::new(0),
            pooled: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
        }
    }

    /// Whether a call whose request strings total `input_bytes` may try the inline path: the hook is
    /// eligible, the request short enough, and no call overran within the last `COOLDOWN`.
    pub(super) fn open(&self, input_bytes: usize) -> bool {
        self.eligible && input_bytes <= SLICE_MEMORY && self.open_at(now_ns())
    }

    fn open_at(&self, now: u64) -> bool {
        let at = self.overrun_at.load(Relaxed);
        at == 0 || now.saturating_sub(at - 1) >= COOLDOWN.as_nanos() as u64
    }

    pub(super) fn answered_inline(&self) {
        self.inline.fetch_add(1, Relaxed);
    }

    pub(super) fn pooled(&self) {
        self.pooled.fetch_add(1, Relaxed);
    }

    /// An inline attempt was cut off: the gate closes for `COOLDOWN`.
    pub(super) fn overran(&self) {
        self.overran_at(now_ns());
    }

    fn overran_at(&self, now: u64) {
        self.overruns.fetch_add(1, Relaxed);
        self.overrun_at.store(now + 1, Relaxed);
    }

    pub(super) fn paths(&self) -> CallPaths {
        CallPaths {
            inline: self.inline.load(Relaxed),
            pooled: self.pooled.load(Relaxed),
            overruns: self.overruns.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overrun_closes_the_gate_for_the_cooldown() {
        let gate = Gate::new(0);
        let cooldown = COOLDOWN.as_nanos() as u64;
        assert!(gate.open_at(0) && gate.open_at(5 * cooldown), "no overrun yet");
        gate.overran_at(cooldown);
        assert!(!gate.open_at(cooldown));
        assert!(!gate.open_at(2 * cooldown - 1));
        assert!(gate.open_at(2 * cooldown));
        gate.overran_at(3 * cooldown);
        assert!(!gate.open_at(3 * cooldown + 1), "a later overrun closes it again");
        assert_eq!(gate.paths(), CallPaths { inline: 0, pooled: 0, overruns: 2 });
    }

    #[test]
    fn long_strings_never_go_inline() {
        assert!(Gate::new(SLICE_MEMORY).open(SLICE_MEMORY));
        assert!(!Gate::new(0).open(SLICE_MEMORY + 1), "a long request");
        assert!(!Gate::new(SLICE_MEMORY + 1).open(0), "a script that keeps long strings");
    }
}
