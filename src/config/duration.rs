//! Config durations: an integer and one unit, `500ms`, `30s`, `10m`, `1h`, `1d`. Nothing fancier, so a typo
//! such as `30` or `1hr` is an error rather than a surprise.

use std::time::Duration;

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let expected = || format!("expected a duration like 500ms, 30s, 10m, 1h or 1d, found `{text}`");
    let n: u64 = digits.parse().map_err(|_| expected())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(expected()),
    };
    n.checked_mul(unit_ms).map(Duration::from_millis).ok_or_else(|| format!("duration `{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86400));
    }

    #[test]
    fn rejects_ambiguous_forms() {
        for bad in ["30", "1hr", "s", "-1s", "1.5s", "", "1 h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
