//! What every config section's compiler shares: the problem list (every problem found, not just the first,
//! as `(key path, message)`), scalar and duration readers, and the name rule. Sections (`compile.rs`,
//! `doors.rs`, `feedback.rs`, `redis.rs`...) import this; nothing here imports a section.

use super::duration::parse_duration;
use super::raw::Scalar;
use std::time::Duration;

/// One problem, at a key path such as `tenants.acme.limits[2].per`.
pub(crate) type KeyProblem = (String, String);

pub(super) const MIN_TOKEN_LEN: usize = 16;
pub(super) const REDIS_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(10));

pub(super) struct Compiler {
    pub(super) problems: Vec<KeyProblem>,
}

impl Compiler {
    pub(super) fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push((path.into(), message.into()));
    }

    /// A scalar's text (already interpolated when it was read). Always Some; an Option so that checks chain.
    pub(super) fn text(&mut self, _path: &str, scalar: &Scalar) -> Option<String> {
        Some(scalar.0.clone())
    }

    /// Requires a non-empty value.
    pub(super) fn required(&mut self, path: &str, scalar: &Scalar) -> Option<String> {
        let text = self.text(path, scalar)?;
        if text.trim().is_empty() {
            self.problem(path, "must not be empty");
            return None;
        }
        Some(text)
    }

    pub(super) fn duration(
        &mut self,
        path: &str,
        scalar: Option<&Scalar>,
        default: Duration,
        range: (Duration, Duration),
    ) -> Duration {
        let Some(scalar) = scalar else { return default };
        let Some(text) = self.text(path, scalar) else { return default };
        match parse_duration(&text) {
            Ok(d) if d < range.0 || d > range.1 => {
                self.problem(path, format!("must be between {} and {}", show(range.0), show(range.1)));
                default
            }
            Ok(d) => d,
            Err(message) => {
                self.problem(path, message);
                default
            }
        }
    }
}

pub(super) fn show(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

pub(super) fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
