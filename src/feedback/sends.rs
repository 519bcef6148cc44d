//! Remembered sends, in this process: one entry per accepted send (time, keyed hash of the number, the
//! country and prefix stem protection keys need, SerialNo and request id), in arrival order, bounded by a
//! cap (the oldest are dropped and counted) and by age (`conversion.remember_for`). Two indexes find a send
//! by number (a conversion) and by SerialNo (a delivery receipt). Numbers are never kept: only a hash keyed
//! with a per-process random key, as de-duplication keys its in-process entries.

use crate::protection::KeySource;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// No earlier send to the same number.
const NONE: u64 = u64::MAX;

struct Entry {
    at_ms: u64,
    /// Keyed hash of (tenant, number).
    number: u64,
    /// Sequence number of the previous send to the same number, or `NONE`.
    previous: u64,
    source: KeySource,
    converted: bool,
    /// Keyed hash of (tenant, SerialNo), or `NONE` (dry run: no SerialNo).
    serial_key: u64,
    /// `SerialNo` and request id, `\n`-separated: one allocation.
    ids: Box<str>,
}

/// A send to remember.
pub struct NewSend<'a> {
    /// Keyed hash of (tenant, number).
    pub number: u64,
    /// Keyed hash of (tenant, SerialNo), when the send has one.
    pub serial_key: Option<u64>,
    pub at_ms: u64,
    pub source: KeySource,
    pub serial: &'a str,
    pub request_id: &'a str,
}

impl Entry {
    fn serial(&self) -> &str {
        self.ids.split_once('\n').map_or("", |(serial, _)| serial)
    }

    fn request_id(&self) -> &str {
        self.ids.split_once('\n').map_or("", |(_, id)| id)
    }

    fn info(&self) -> SendInfo {
        SendInfo {
            at_ms: self.at_ms,
            source: self.source,
            serial: self.serial().to_owned(),
            request_id: self.request_id().to_owned(),
        }
    }
}

/// A remembered send, as conversions and receipts see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendInfo {
    pub at_ms: u64,
    pub source: KeySource,
    /// Empty for dry-run sends.
    pub serial: String,
    pub request_id: String,
}

/// What a conversion found.
#[derive(Debug, Default)]
pub struct Converted {
    /// Sends to the number within the window (matching the request id when one was given).
    pub found: usize,
    /// Those this conversion marked (the others had converted already).
    pub newly: Vec<SendInfo>,
}

#[derive(Default)]
struct Log {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    first: u64,
    by_number: HashMap<u64, u64, foldhash::fast::RandomState>,
    by_serial: HashMap<u64, u64, foldhash::fast::RandomState>,
}

impl Log {
    fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        seq.checked_sub(self.first).and_then(|i| self.entries.get_mut(i as usize))
    }

    fn pop_front(&mut self) {
        let Some(entry) = self.entries.pop_front() else { return };
        let seq = self.first;
        self.first += 1;
        // The newest send to a number is evicted last, so when it goes its whole chain is gone.
        if self.by_number.get(&entry.number) == Some(&seq) {
            self.by_number.remove(&entry.number);
        }
        if entry.serial_key != NONE && self.by_serial.get(&entry.serial_key) == Some(&seq) {
            self.by_serial.remove(&entry.serial_key);
        }
    }
}

pub struct SendLog {
    log: Mutex<Log>,
    capacity: AtomicUsize,
    /// How long an entry may live (the longest `remember_for` of any tenant).
    keep_ms: AtomicU64,
    dropped: AtomicU64,
}

impl SendLog {
    pub fn new(capacity: usize) -> SendLog {
        SendLog {
            log: Mutex::default(),
            capacity: AtomicUsize::new(capacity.max(1)),
            keep_ms: AtomicU64::new(3_600_000),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn set_limits(&self, capacity: usize, keep_ms: u64) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
        self.keep_ms.store(keep_ms, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a send. Returns how many old entries the cap pushed out, and how many are held now.
    pub fn push(&self, send: NewSend<'_>) -> (u64, usize) {
        let mut ids = String::with_capacity(send.serial.len() + 1 + send.request_id.len());
        ids.push_str(send.serial);
        ids.push('\n');
        ids.push_str(send.request_id);
        let capacity = self.capacity.load(Ordering::Relaxed);
        let keep_ms = self.keep_ms.load(Ordering::Relaxed);
        let mut dropped = 0;
        let mut log = self.lock();
        while log.entries.front().is_some_and(|e| e.at_ms.saturating_add(keep_ms) < send.at_ms) {
            log.pop_front();
        }
        while log.entries.len() >= capacity {
            log.pop_front();
            dropped += 1;
        }
        let seq = log.first + log.entries.len() as u64;
        let previous = log.by_number.insert(send.number, seq).unwrap_or(NONE);
        if let Some(key) = send.serial_key {
            log.by_serial.insert(key, seq);
        }
        log.entries.push_back(Entry {
            at_ms: send.at_ms,
            number: send.number,
            previous,
            source: send.source,
            converted: false,
            serial_key: send.serial_key.unwrap_or(NONE),
            ids: ids.into(),
        });
        let len = log.entries.len();
        drop(log);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        (dropped, len)
    }

    /// Marks the sends to `number` made within `window_ms` before `now_ms` as converted (only the one with
    /// `request_id` when given).
    pub fn convert(&self, number: u64, now_ms: u64, window_ms: u64, request_id: Option<&str>) -> Converted {
        let mut out = Converted::default();
        let mut log = self.lock();
        let mut seq = log.by_number.get(&number).copied().unwrap_or(NONE);
        while let Some(entry) = log.get_mut(seq) {
            if entry.at_ms.saturating_add(window_ms) < now_ms {
                break;
            }
            let wanted =
                entry.number == number && entry.at_ms <= now_ms && request_id.is_none_or(|id| entry.request_id() == id);
            if wanted {
                out.found += 1;
                if !entry.converted {
                    entry.converted = true;
                    out.newly.push(entry.info());
                }
            }
            seq = entry.previous;
        }
        out
    }

    /// The send with this SerialNo, when it was made to `number`.
    pub fn by_serial(&self, serial_key: u64, number: u64) -> Option<SendInfo> {
        let mut log = self.lock();
        let seq = *log.by_serial.get(&serial_key)?;
        log.get_mut(seq).filter(|e| e.number == number).map(|e| e.info())
    }

    /// Drops entries older than the longest `remember_for`, and gives memory back after a burst.
    pub fn sweep(&self, now_ms: u64) {
        let keep_ms = self.keep_ms.load(Ordering::Relaxed);
        let mut log = self.lock();
        while log.entries.front().is_some_and(|e| e.at_ms.saturating_add(keep_ms) < now_ms) {
            log.pop_front();
        }
        if log.entries.capacity() > 1024 && log.entries.len() * 4 < log.entries.capacity() {
            log.entries.shrink_to_fit();
            log.by_number.shrink_to_fit();
            log.by_serial.shrink_to_fit();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends pushed out by the cap so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes held by the log's tables, the id strings included (what the memory example reports).
    pub fn footprint(&self) -> usize {
        let log = self.lock();
        let table = |capacity: usize| {
            // hashbrown: a power-of-two bucket count at 7/8 load, one control byte per bucket.
            let buckets = if capacity == 0 { 0 } else { (capacity * 8 / 7).next_power_of_two() };
            buckets * (16 + 1)
        };
        let strings: usize = log.entries.iter().map(|e| e.ids.len()).sum();
        log.entries.capacity() * std::mem::size_of::<Entry>()
            + strings
            + table(log.by_number.capacity())
            + table(log.by_serial.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> KeySource {
        KeySource { country: *b"CN", stem: 861380, stem_len: 6 }
    }

    fn serial_key(serial: &str) -> u64 {
        serial.bytes().fold(7, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
    }

    fn push(log: &SendLog, number: u64, at: u64, serial: &str, id: &str) -> u64 {
        let send = NewSend {
            number,
            serial_key: Some(serial_key(serial)),
            at_ms: at,
            source: source(),
            serial,
            request_id: id,
        };
        log.push(send).0
    }

    #[test]
    fn conversions_mark_every_send_to_the_number_within_the_window() {
        let log = SendLog::new(100);
        push(&log, 1, 1_000, "s1", "r1");
        push(&log, 2, 2_000, "s2", "r2");
        push(&log, 1, 3_000, "s3", "r3");
        push(&log, 1, 50_000, "s4", "r4");
        // At 60 s with a 58 s window, sends made from 2 s on count: s3 and s4, not s1.
        let c = log.convert(1, 60_000, 58_000, None);
        assert_eq!(c.found, 2);
        let serials: Vec<_> = c.newly.iter().map(|s| s.serial.as_str()).collect();
        assert_eq!(serials, ["s4", "s3"]);
        // A repeat finds them, converts nothing new.
        let again = log.convert(1, 60_000, 58_000, None);
        assert_eq!((again.found, again.newly.len()), (2, 0));
        // Another number, or no send in the window.
        assert_eq!(log.convert(3, 60_000, 58_000, None).found, 0);
        assert_eq!(log.convert(2, 60_001, 58_000, None).found, 0);
    }

    #[test]
    fn a_request_id_picks_one_send() {
        let log = SendLog::new(100);
        push(&log, 1, 1_000, "s1", "r1");
        push(&log, 1, 2_000, "s2", "r2");
        let c = log.convert(1, 3_000, 10_000, Some("r1"));
        assert_eq!((c.found, c.newly[0].serial.as_str()), (1, "s1"));
        assert_eq!(log.convert(1, 3_000, 10_000, Some("nope")).found, 0);
    }

    #[test]
    fn receipts_find_the_send_by_serial_and_number() {
        let log = SendLog::new(100);
        push(&log, 1, 1_000, "s1", "r1");
        assert_eq!(log.by_serial(serial_key("s1"), 1).unwrap().request_id, "r1");
        assert_eq!(log.by_serial(serial_key("s1"), 2), None, "a report naming another number is not ours");
        assert_eq!(log.by_serial(serial_key("zz"), 1), None);
    }

    #[test]
    fn the_cap_drops_the_oldest_and_counts_them() {
        let log = SendLog::new(3);
        for i in 0..5 {
            push(&log, i, i * 10, &format!("s{i}"), "r");
        }
        assert_eq!((log.len(), log.dropped()), (3, 2));
        assert_eq!(log.convert(0, 50, 1_000, None).found, 0, "evicted");
        assert!(log.by_serial(serial_key("s1"), 1).is_none(), "its index entry went with it");
        assert_eq!(log.convert(4, 50, 1_000, None).found, 1);
    }

    #[test]
    fn old_sends_expire_without_counting_as_dropped() {
        let log = SendLog::new(100);
        log.set_limits(100, 60_000);
        push(&log, 1, 0, "s1", "r1");
        push(&log, 2, 10_000, "s2", "r2");
        log.sweep(65_000);
        assert_eq!((log.len(), log.dropped()), (1, 0));
        assert!(log.by_serial(serial_key("s1"), 1).is_none());
        // A push expires by age too.
        push(&log, 3, 200_000, "s3", "r3");
        assert_eq!(log.len(), 1);
    }

    /// A number sent to over and over (a test device, a user retrying) keeps one index entry however long its
    /// chain: evicting its old sends must not drop the index of its newest.
    #[test]
    fn regression_evicting_an_old_send_keeps_the_numbers_newest() {
        let log = SendLog::new(2);
        push(&log, 1, 0, "a", "r");
        push(&log, 1, 1, "b", "r");
        push(&log, 1, 2, "c", "r");
        let c = log.convert(1, 3, 1_000, None);
        assert_eq!(c.newly.iter().map(|s| s.serial.as_str()).collect::<Vec<_>>(), ["c", "b"]);
    }
}
