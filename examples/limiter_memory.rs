//! Memory per tracked phone number in the in-process limiter, measured two ways at 1 million distinct
//! numbers under the shipped 3-rule phone policy (1/30s, 5/1h, 10/1d): the hash tables' exact allocation
//! (`MemoryStore::footprint`) and the process's resident memory (RSS from /proc/self/statm). Then the
//! windows expire and a sweep runs, and a spray of numbers over several days shows memory following the
//! numbers live in one window, not every number ever seen.
//! Run: `cargo run --release --example limiter_memory`. Figures are in BENCHMARKS.md.

use smsgate::policy::{Check, Gcra, MemoryStore};
use std::time::Duration;

const NUMBERS: u64 = 1_000_000;
const DAY_MS: u64 = 86_400_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn phone_checks(phone: u64) -> [Check; 3] {
    let rule = |rule_id, limit, secs| Check {
        rule_id,
        key: phone,
        gcra: Gcra::new(limit, Duration::from_secs(secs)),
        shadow: false,
    };
    [rule(1, 1, 30), rule(2, 5, 3600), rule(3, 10, 86_400)]
}

/// `count` mainland numbers never seen before (`seen` counts them), one request each, spread over one second
/// from `start`. Multiplying by a number coprime to 10^9 scatters them while keeping them distinct.
fn spray(store: &MemoryStore, seen: &mut u64, start: u64, count: u64) {
    for i in 0..count {
        let phone = 8_613_000_000_000 + (*seen * 987_654_323) % 1_000_000_000;
        *seen += 1;
        store.decide(&phone_checks(phone), start + i * 1000 / count, true);
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let mut seen = 0;
    let baseline = rss_bytes();
    let store = MemoryStore::default();
    spray(&store, &mut seen, 0, NUMBERS);
    let (buckets, table_bytes) = store.footprint();
    let rss = rss_bytes() - baseline;
    println!("distinct numbers          {NUMBERS}");
    println!("entries (rule, number)    {}", store.len());
    println!("hash-table buckets        {buckets}");
    println!(
        "table bytes               {:.1} MiB = {:.1} bytes per number",
        mib(table_bytes as u64),
        table_bytes as f64 / NUMBERS as f64
    );
    println!("RSS growth                {:.1} MiB = {:.1} bytes per number", mib(rss), rss as f64 / NUMBERS as f64);

    // Every window (the longest is a day) has expired.
    let later = DAY_MS + 2_000;
    store.sweep(later);
    let (_, after_bytes) = store.footprint();
    println!(
        "after expiry and sweep    {} entries, table bytes {after_bytes}, RSS {:.1} MiB above baseline",
        store.len(),
        mib(rss_bytes().saturating_sub(baseline))
    );

    // A spray of a million new numbers a day for five days: memory follows one window's numbers (at most
    // twice that between the store's own sweeps), not the five million seen.
    let mut peak_entries = 0;
    let mut peak_bytes = 0;
    for day in 1..=5 {
        spray(&store, &mut seen, later + day * (DAY_MS + 2_000), NUMBERS);
        peak_entries = peak_entries.max(store.len());
        peak_bytes = peak_bytes.max(store.footprint().1);
    }
    println!("5 days x 1M new numbers   peak {peak_entries} entries, peak table {:.1} MiB", mib(peak_bytes as u64));
}
