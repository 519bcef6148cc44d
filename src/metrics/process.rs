//! Process metrics under the names Prometheus' client libraries use (`process_*`, no prefix), read when
//! `/metrics` is scraped, never on a request's path: CPU seconds (the process CPU clock), resident and
//! virtual memory, open and maximum file descriptors from `/proc/self`, and the start time. Only the
//! process's own `/proc/self` entries are read (they stay visible under systemd's `ProcSubset=pid`). Where
//! `/proc` is missing the memory and descriptor metrics are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug)]
pub(crate) struct ProcessCollector {
    /// Unix seconds the process started.
    start_time: f64,
}

impl ProcessCollector {
    pub(crate) fn new() -> ProcessCollector {
        ProcessCollector { start_time: start_time().unwrap_or_else(now) }
    }
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `/proc/self/stat`'s fields after the command name (the name may hold spaces and parentheses): index 0 is
/// field 3 (state), so field N is at N - 3.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect())
}

/// Start time: the boot time plus the process's start in clock ticks since boot (field 22). The boot time is
/// `/proc/stat`'s `btime`, or now minus `/proc/uptime`; where both are hidden (systemd's `ProcSubset=pid`),
/// `None`, and the caller takes the time the collector was made (at start-up).
fn start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks: f64 = stat_fields(&stat)?.get(22 - 3)?.parse().ok()?;
    let since_boot = ticks / rustix::param::clock_ticks_per_second() as f64;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok()))
        .or_else(|| {
            let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
            Some(now() - uptime)
        })?;
    Some(boot + since_boot)
}

/// Resident and virtual memory in bytes, from `/proc/self/status` (`VmRSS`, `VmSize`, in kB).
fn memory() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<f64> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        Some(line.trim().trim_end_matches("kB").trim().parse::<f64>().ok()? * 1024.0)
    };
    Some((kb("VmRSS:")?, kb("VmSize:")?))
}

/// Open descriptors (the entries of `/proc/self/fd`, the one reading it included, as other clients count).
fn open_fds() -> Option<f64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
}

/// The soft limit on open descriptors, from `/proc/self/limits` (`unlimited` is left out).
fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cpu = ConstCounter::new(cpu_time::ProcessTime::try_now().map_or(0.0, |t| t.as_duration().as_secs_f64()));
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        if let Some((resident, virtual_)) = memory() {
            gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size in bytes", resident)?;
            gauge(&mut encoder, "process_virtual_memory_bytes", "Virtual memory size in bytes", virtual_)?;
        }
        if let Some(open) = open_fds() {
            gauge(&mut encoder, "process_open_fds", "Number of open file descriptors", open)?;
        }
        if let Some(max) = max_fds() {
            gauge(&mut encoder, "process_max_fds", "Maximum number of open file descriptors", max)?;
        }
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            self.start_time,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (smsgate (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 5 0 123456 1000 250";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(fields[14 - 3], "7", "utime");
        assert_eq!(fields[22 - 3], "123456", "starttime");
    }

    #[test]
    fn this_process_reads_plausibly() {
        let started = start_time().expect("Linux /proc");
        assert!(started <= now() && started > now() - 86_400.0 * 30.0, "{started}");
        let (resident, virtual_) = memory().unwrap();
        assert!(resident > 0.0 && virtual_ >= resident);
        assert!(open_fds().unwrap() >= 3.0);
        assert!(max_fds().unwrap() >= 3.0);
    }
}
