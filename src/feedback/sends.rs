//! Remembered sends, in this process: one entry per accepted send (time, keyed hash of the number, the
//! country and prefix stem protection keys need, SerialNo and request id), bounded by age
//! (`conversion.remember_for`) and by a cap for the process (`server.max_remembered_sends`), in one log per
//! tenant ([`TenantSends`]): a tenant alone may fill the cap, and when the cap is reached the oldest sends of
//! the tenant holding the most are dropped (and counted), so a busy tenant evicts its own sends, never a
//! smaller tenant's. Bytes follow entries: an entry is fixed-size and its ids are cut at `MAX_ID` bytes. Numbers are never kept:
//! only a hash keyed with a per-process random key, as de-duplication keys its in-process entries.
//!
//! The log is 16 shards by number. In a shard, entries live in generations, each a sixteenth of `keep` (or of
//! the shard's cap) of sends: an entries vector and an arena of their id strings. An index maps a number to
//! its latest entry, and each entry links to the previous send to the same number. Expiry and the cap drop
//! whole generations, the oldest first, without touching the index: links into dropped generations are
//! dead and are pruned in one pass when the index has doubled since the last (amortized, like the
//! limiter's store). So a remembered send costs one index insertion and no random memory access later. A
//! delivery receipt names its number and SerialNo: it is found by walking the number's sends, so there is
//! no second index.

use crate::protection::KeySource;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// No earlier send to the same number.
const NONE: u64 = u64::MAX;
/// Generations an entry's lifetime (and a shard's cap) is cut into: an entry lives between `keep` and
/// `keep * (1 + 1/SPLIT)`, and the cap drops a sixteenth of a shard at a time.
const SPLIT: u64 = 16;
const SHARDS: usize = 16;
/// The index is pruned of dead links when it holds this many entries at least, and twice the live ones.
const MIN_PRUNE: usize = 1024;
/// Longest id kept (a SerialNo, a request id): longer ones are cut (they then never match).
const MAX_ID: usize = 96;

struct Entry {
    at_ms: u64,
    /// Keyed hash of (tenant, number).
    number: u64,
    /// (generation << 32 | index) of the previous send to the same number, or `NONE`.
    previous: u64,
    source: KeySource,
    /// Where `SerialNo` then the request id start in the generation's arena, and their lengths.
    ids_at: u32,
    serial_len: u8,
    request_len: u8,
    converted: bool,
    /// A delivery receipt has named this send (later ones are repeats).
    reported: bool,
}

struct Generation {
    /// Sequence number: links name generations by it.
    serial: u64,
    started_ms: u64,
    entries: Vec<Entry>,
    ids: String,
}

impl Generation {
    /// Sized like the previous generation and an eighth more: steady traffic fills it without doubling
    /// (a doubled vector is up to half empty).
    fn new(serial: u64, started_ms: u64, previous: Option<&Generation>) -> Generation {
        let (entries, ids) = previous.map_or((0, 0), |g| (g.entries.len(), g.ids.len()));
        Generation {
            serial,
            started_ms,
            entries: Vec::with_capacity(entries + entries / 8),
            ids: String::with_capacity(ids + ids / 8),
        }
    }

    fn serial_of(&self, e: &Entry) -> &str {
        let at = e.ids_at as usize;
        &self.ids[at..at + e.serial_len as usize]
    }

    fn request_of(&self, e: &Entry) -> &str {
        let at = e.ids_at as usize + e.serial_len as usize;
        &self.ids[at..at + e.request_len as usize]
    }

    fn info(&self, e: &Entry) -> SendInfo {
        SendInfo {
            at_ms: e.at_ms,
            source: e.source,
            serial: self.serial_of(e).to_owned(),
            request_id: self.request_of(e).to_owned(),
        }
    }
}

/// A remembered send, as conversions and receipts see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SendInfo {
    pub(crate) at_ms: u64,
    pub source: KeySource,
    /// Empty for dry-run sends.
    pub serial: String,
    pub request_id: String,
}

/// A send to remember.
pub(crate) struct NewSend<'a> {
    /// Keyed hash of (tenant, number).
    pub number: u64,
    pub(crate) at_ms: u64,
    pub source: KeySource,
    pub serial: &'a str,
    pub request_id: &'a str,
}

/// What a conversion found.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    /// Sends to the number within the window (matching the request id when one was given).
    pub found: usize,
    /// Those this conversion marked (the others had converted already).
    pub(crate) newly: Vec<SendInfo>,
}

#[derive(Default)]
struct Log {
    /// Oldest first.
    generations: VecDeque<Generation>,
    next_serial: u64,
    len: usize,
    /// Number -> (generation serial << 32 | index) of its latest send; links into dropped generations are
    /// dead until pruned.
    latest: HashMap<u64, u64, foldhash::fast::RandomState>,
}

impl Log {
    fn generation_mut(&mut self, serial: u64) -> Option<&mut Generation> {
        let first = self.generations.front()?.serial;
        serial.checked_sub(first).and_then(|i| self.generations.get_mut(i as usize))
    }

    /// Drops the oldest generation; how many entries went with it.
    fn drop_oldest(&mut self) -> usize {
        let dropped = self.generations.pop_front().map_or(0, |g| g.entries.len());
        self.len -= dropped;
        dropped
    }

    fn live(&self, link: u64) -> bool {
        self.generations.front().is_some_and(|g| link != NONE && link >> 32 >= g.serial)
    }

    /// Drops dead links once the index has doubled beyond the live entries.
    fn prune(&mut self) {
        if self.latest.len() < MIN_PRUNE.max(2 * self.len) {
            return;
        }
        let first = self.generations.front().map_or(u64::MAX, |g| g.serial);
        self.latest.retain(|_, link| *link >> 32 >= first);
        if self.latest.capacity() > 4 * self.latest.len().max(MIN_PRUNE) {
            self.latest.shrink_to_fit();
        }
    }

    /// Walks the sends to `number`, newest first, while `visit` says go on.
    fn walk(&mut self, number: u64, mut visit: impl FnMut(&mut Generation, usize) -> bool) {
        let mut link = self.latest.get(&number).copied().unwrap_or(NONE);
        while link != NONE {
            let Some(generation) = self.generation_mut(link >> 32) else { return };
            let index = (link & u64::from(u32::MAX)) as usize;
            let Some(entry) = generation.entries.get(index) else { return };
            if entry.number != number {
                return;
            }
            let previous = entry.previous;
            if !visit(generation, index) {
                return;
            }
            link = previous;
        }
    }
}

pub(crate) struct SendLog {
    shards: Box<[Mutex<Log>]>,
    /// Per shard.
    capacity: AtomicUsize,
    /// How long an entry lives at least (the longest `remember_for` of any tenant).
    keep_ms: AtomicU64,
    dropped: AtomicU64,
    /// Entries held in all shards (kept up to date without locking every shard).
    held: AtomicUsize,
}

impl SendLog {
    pub(crate) fn new(capacity: usize) -> SendLog {
        let log = SendLog {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            capacity: AtomicUsize::new(1),
            keep_ms: AtomicU64::new(3_600_000),
            dropped: AtomicU64::new(0),
            held: AtomicUsize::new(0),
        };
        log.set_limits(capacity, 3_600_000);
        log
    }

    /// `capacity` for the whole log (each shard holds a sixteenth of it).
    pub(crate) fn set_limits(&self, capacity: usize, keep_ms: u64) {
        self.capacity.store(capacity.div_ceil(SHARDS).max(1), Ordering::Relaxed);
        self.keep_ms.store(keep_ms, Ordering::Relaxed);
    }

    fn lock(&self, number: u64) -> std::sync::MutexGuard<'_, Log> {
        let shard = (number.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % SHARDS;
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn all(&self) -> impl Iterator<Item = std::sync::MutexGuard<'_, Log>> {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Drops generations wholly older than `keep`; then, over the cap, the oldest ones (counted).
    fn expire(&self, log: &mut Log, now_ms: u64, incoming: usize) -> u64 {
        let keep_ms = self.keep_ms.load(Ordering::Relaxed);
        let capacity = self.capacity.load(Ordering::Relaxed);
        // A generation is all older than `keep` once the next one started before `now - keep`.
        while log.generations.len() > 1 && log.generations[1].started_ms.saturating_add(keep_ms) < now_ms {
            log.drop_oldest();
        }
        if log.generations.len() == 1 && log.generations[0].entries.last().is_some_and(|e| e.at_ms + keep_ms < now_ms) {
            log.drop_oldest();
        }
        let mut dropped = 0;
        while log.len + incoming > capacity && !log.generations.is_empty() {
            dropped += log.drop_oldest() as u64;
        }
        dropped
    }

    /// Remembers a send. Returns how many older sends the cap pushed out, and how many are held now.
    #[cfg(test)]
    pub(crate) fn push(&self, send: NewSend<'_>) -> (u64, usize) {
        let (dropped, held, _) = self.push_changed(send);
        (dropped, held)
    }

    /// [`SendLog::push`], also returning the change of the entries held (wrapping: a drop is negative).
    fn push_changed(&self, send: NewSend<'_>) -> (u64, usize, usize) {
        let keep_ms = self.keep_ms.load(Ordering::Relaxed);
        let capacity = self.capacity.load(Ordering::Relaxed);
        let span = (keep_ms / SPLIT).max(1);
        let serial = &send.serial[..floor_char(send.serial, MAX_ID)];
        let request = &send.request_id[..floor_char(send.request_id, MAX_ID)];
        let mut log = self.lock(send.number);
        let before = log.len;
        let dropped = self.expire(&mut log, send.at_ms, 1);
        let fresh = match log.generations.back() {
            None => true,
            Some(g) => {
                send.at_ms >= g.started_ms + span
                    || g.entries.len() >= (capacity / SPLIT as usize).max(1)
                    || g.ids.len() + serial.len() + request.len() > u32::MAX as usize
            }
        };
        if fresh {
            let serial_no = log.next_serial;
            log.next_serial += 1;
            let generation = Generation::new(serial_no, send.at_ms, log.generations.back());
            log.generations.push_back(generation);
        }
        let generation = log.generations.back_mut().expect("one generation at least");
        let link = generation.serial << 32 | generation.entries.len() as u64;
        let ids_at = generation.ids.len() as u32;
        generation.ids.push_str(serial);
        generation.ids.push_str(request);
        let previous = log.latest.insert(send.number, link).unwrap_or(NONE);
        let previous = if log.live(previous) { previous } else { NONE };
        let generation = log.generations.back_mut().expect("one generation at least");
        generation.entries.push(Entry {
            at_ms: send.at_ms,
            number: send.number,
            previous,
            source: send.source,
            ids_at,
            serial_len: serial.len() as u8,
            request_len: request.len() as u8,
            converted: false,
            reported: false,
        });
        log.len += 1;
        log.prune();
        // Wrapping adds of the signed change keep the total exact.
        let change = (log.len as isize - before as isize) as usize;
        drop(log);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        (dropped, self.held.fetch_add(change, Ordering::Relaxed).wrapping_add(change), change)
    }

    /// Marks one send to `number` made within `window_ms` before `now_ms` as converted: the one answered with
    /// `request_id` when given, else the most recent. One verification converts one send, so a number that
    /// verifies once does not convert every send to it (`found` is 0 or 1).
    pub(crate) fn convert(&self, number: u64, now_ms: u64, window_ms: u64, request_id: Option<&str>) -> Converted {
        let mut out = Converted::default();
        self.lock(number).walk(number, |generation, index| {
            let entry = &generation.entries[index];
            if entry.at_ms.saturating_add(window_ms) < now_ms {
                return false;
            }
            if entry.at_ms <= now_ms && request_id.is_none_or(|id| generation.request_of(entry) == id) {
                out.found = 1;
                if !entry.converted {
                    out.newly.push(generation.info(entry));
                    generation.entries[index].converted = true;
                }
                return false;
            }
            true
        });
        out
    }

    /// The send to `number` with this SerialNo, while it is remembered.
    #[cfg(test)]
    pub(crate) fn by_serial(&self, number: u64, serial: &str) -> Option<SendInfo> {
        let mut found = None;
        self.lock(number).walk(number, |generation, index| {
            let entry = &generation.entries[index];
            if !serial.is_empty() && generation.serial_of(entry) == serial {
                found = Some(generation.info(entry));
                return false;
            }
            true
        });
        found
    }

    /// [`SendLog::by_serial`] for a delivery receipt: also whether it is the first receipt naming the send
    /// (the send is marked, so a receipt repeated within a callback or across callbacks counts once).
    pub(crate) fn receipt(&self, number: u64, serial: &str) -> Option<(SendInfo, bool)> {
        let mut found = None;
        self.lock(number).walk(number, |generation, index| {
            let entry = &generation.entries[index];
            if !serial.is_empty() && generation.serial_of(entry) == serial {
                found = Some((generation.info(entry), !entry.reported));
                generation.entries[index].reported = true;
                return false;
            }
            true
        });
        found
    }

    /// Drops what has aged out (so memory follows traffic even when no send comes to trigger it).
    pub(crate) fn sweep(&self, now_ms: u64) {
        for shard in self.shards.iter() {
            let mut log = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = log.len;
            let dropped = self.expire(&mut log, now_ms, 0);
            self.held.fetch_sub(before - log.len, Ordering::Relaxed);
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            log.prune();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.all().map(|log| log.len).sum()
    }

    /// Drops the oldest generation of the shard whose oldest is the oldest (counted as dropped); how many
    /// entries went with it.
    fn shed_oldest(&self) -> usize {
        let oldest = self
            .shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let log = s.lock().unwrap_or_else(|p| p.into_inner());
                log.generations.front().map(|g| (g.started_ms, i))
            })
            .min();
        let Some((_, shard)) = oldest else { return 0 };
        let mut log = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        let dropped = log.drop_oldest();
        log.prune();
        drop(log);
        self.held.fetch_sub(dropped, Ordering::Relaxed);
        self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }

    /// Entries held (without locking the shards).
    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Sends pushed out by the cap so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes the log's vectors, arenas and indexes hold (what the memory example reports beside RSS).
    pub(crate) fn footprint(&self) -> usize {
        self.all()
            .map(|log| {
                let capacity = log.latest.capacity();
                let buckets = if capacity == 0 { 0 } else { (capacity * 8 / 7).next_power_of_two() };
                let generations: usize = log
                    .generations
                    .iter()
                    .map(|g| g.entries.capacity() * std::mem::size_of::<Entry>() + g.ids.capacity())
                    .sum();
                generations + buckets * (16 + 1)
            })
            .sum()
    }
}

/// The remembered sends of every tenant: one [`SendLog`] each, under one cap for the process.
pub(crate) struct TenantSends {
    logs: std::sync::RwLock<HashMap<Arc<str>, Arc<SendLog>>>,
    capacity: AtomicUsize,
    keep_ms: AtomicU64,
    /// Sends dropped by the cap in logs since removed.
    dropped_before: AtomicU64,
    /// Entries held in all logs (kept up to date by differences, recounted by each sweep).
    held: AtomicUsize,
}

impl TenantSends {
    pub(crate) fn new(capacity: usize) -> TenantSends {
        TenantSends {
            logs: Default::default(),
            capacity: AtomicUsize::new(capacity.max(1)),
            keep_ms: AtomicU64::new(3_600_000),
            dropped_before: AtomicU64::new(0),
            held: AtomicUsize::new(0),
        }
    }

    /// The cap for the process, and how long an entry lives at least.
    pub(crate) fn set_limits(&self, capacity: usize, keep_ms: u64) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
        self.keep_ms.store(keep_ms, Ordering::Relaxed);
        for log in self.logs.read().unwrap_or_else(|p| p.into_inner()).values() {
            log.set_limits(capacity, keep_ms);
        }
    }

    fn log(&self, tenant: &str) -> Option<Arc<SendLog>> {
        self.logs.read().unwrap_or_else(|p| p.into_inner()).get(tenant).cloned()
    }

    /// Remembers a send of `tenant`. Returns how many sends the cap pushed out (the tenant's own, or those of
    /// the tenant holding the most), and how many are held now.
    pub(crate) fn push(&self, tenant: &Arc<str>, send: NewSend<'_>) -> (u64, usize) {
        let log = self.log(tenant).unwrap_or_else(|| {
            let mut logs = self.logs.write().unwrap_or_else(|p| p.into_inner());
            logs.entry(tenant.clone())
                .or_insert_with(|| {
                    let log = SendLog::new(self.capacity.load(Ordering::Relaxed));
                    log.set_limits(self.capacity.load(Ordering::Relaxed), self.keep_ms.load(Ordering::Relaxed));
                    Arc::new(log)
                })
                .clone()
        });
        let (mut dropped, _, change) = log.push_changed(send);
        let mut held = self.held.fetch_add(change, Ordering::Relaxed).wrapping_add(change);
        let capacity = self.capacity.load(Ordering::Relaxed);
        while held > capacity {
            let largest =
                self.logs.read().unwrap_or_else(|p| p.into_inner()).values().max_by_key(|l| l.held()).cloned();
            let shed = largest.map_or(0, |l| l.shed_oldest());
            if shed == 0 {
                break;
            }
            dropped += shed as u64;
            held = self.held.fetch_sub(shed, Ordering::Relaxed).saturating_sub(shed);
        }
        (dropped, held)
    }

    /// [`SendLog::convert`] in `tenant`'s log.
    pub(crate) fn convert(
        &self,
        tenant: &str,
        number: u64,
        now_ms: u64,
        window_ms: u64,
        request_id: Option<&str>,
    ) -> Converted {
        self.log(tenant).map(|l| l.convert(number, now_ms, window_ms, request_id)).unwrap_or_default()
    }

    /// [`SendLog::by_serial`] in `tenant`'s log.
    #[cfg(test)]
    pub(crate) fn by_serial(&self, tenant: &str, number: u64, serial: &str) -> Option<SendInfo> {
        self.log(tenant)?.by_serial(number, serial)
    }

    /// [`SendLog::receipt`] in `tenant`'s log.
    pub(crate) fn receipt(&self, tenant: &str, number: u64, serial: &str) -> Option<(SendInfo, bool)> {
        self.log(tenant)?.receipt(number, serial)
    }

    /// Drops what has aged out, and the logs left empty.
    pub(crate) fn sweep(&self, now_ms: u64) {
        let logs: Vec<Arc<SendLog>> = self.logs.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for log in &logs {
            log.sweep(now_ms);
        }
        let mut logs = self.logs.write().unwrap_or_else(|p| p.into_inner());
        self.held.store(logs.values().map(|l| l.held()).sum(), Ordering::Relaxed);
        logs.retain(|_, log| {
            let keep = log.held() > 0;
            if !keep {
                self.dropped_before.fetch_add(log.dropped(), Ordering::Relaxed);
            }
            keep
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.logs.read().unwrap_or_else(|p| p.into_inner()).values().map(|l| l.len()).sum()
    }

    /// Sends pushed out by the cap so far.
    pub(crate) fn dropped(&self) -> u64 {
        let live: u64 = self.logs.read().unwrap_or_else(|p| p.into_inner()).values().map(|l| l.dropped()).sum();
        self.dropped_before.load(Ordering::Relaxed) + live
    }

    /// Bytes the logs hold.
    pub(crate) fn footprint(&self) -> usize {
        self.logs.read().unwrap_or_else(|p| p.into_inner()).values().map(|l| l.footprint()).sum()
    }
}

/// The largest char boundary of `s` at most `max`.
fn floor_char(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> KeySource {
        KeySource { country: *b"CN", stem: 861380, stem_len: 6 }
    }

    fn push(log: &SendLog, number: u64, at: u64, serial: &str, id: &str) -> u64 {
        log.push(NewSend { number, at_ms: at, source: source(), serial, request_id: id }).0
    }

    /// Issue 19 item 9: one verification converts the most recent send in the window, not every send.
    #[test]
    fn regression_one_verification_converts_one_send() {
        let log = SendLog::new(100);
        push(&log, 1, 1_000, "s1", "r1");
        push(&log, 2, 2_000, "s2", "r2");
        push(&log, 1, 3_000, "s3", "r3");
        push(&log, 1, 50_000, "s4", "r4");
        let c = log.convert(1, 60_000, 58_000, None);
        assert_eq!((c.found, c.newly.len(), c.newly[0].serial.as_str()), (1, 1, "s4"));
        // A repeat finds the same send and converts nothing new: s3 stays unconverted.
        let again = log.convert(1, 60_000, 58_000, None);
        assert_eq!((again.found, again.newly.len()), (1, 0));
        // Another number, or no send in the window.
        assert_eq!(log.convert(3, 60_000, 58_000, None).found, 0);
        assert_eq!(log.convert(2, 60_001, 58_000, None).found, 0);
        // A request id still picks its own send, older ones included.
        assert_eq!(log.convert(1, 60_000, 58_000, Some("r3")).newly[0].serial, "s3");
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
        push(&log, 1, 2_000, "s2", "r2");
        push(&log, 2, 2_000, "", "dry-run");
        assert_eq!(log.by_serial(1, "s1").unwrap().request_id, "r1");
        assert_eq!(log.by_serial(2, "s1"), None, "a report naming another number is not ours");
        assert_eq!(log.by_serial(1, "zz"), None);
        assert_eq!(log.by_serial(2, ""), None, "dry-run sends have no SerialNo");
    }

    #[test]
    fn the_cap_drops_the_oldest_and_counts_them() {
        // A cap of 256 is 16 per shard, cut into generations of 2 sends.
        let log = SendLog::new(256);
        for i in 0..1_000 {
            push(&log, i, i * 10, &format!("s{i}"), "r");
        }
        assert!(log.len() <= 256 && log.len() >= 200, "{}", log.len());
        assert_eq!(log.dropped() as usize + log.len(), 1_000);
        assert_eq!(log.convert(0, 10_000, 100_000, None).found, 0, "the oldest are gone");
        assert!(log.by_serial(1, "s1").is_none());
        assert_eq!(log.convert(999, 10_000, 100_000, None).found, 1);
        assert_eq!(
            log.push(NewSend { number: 1_000, at_ms: 10_000, source: source(), serial: "x", request_id: "r" }).1,
            log.len()
        );
    }

    /// A spray of distinct numbers: the index is pruned of dead links, so it follows the live entries.
    #[test]
    fn the_index_follows_the_live_entries() {
        let log = SendLog::new(1_000_000);
        log.set_limits(1_000_000, 1_000);
        for i in 0..200_000u64 {
            push(&log, i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i, "s", "r");
        }
        let indexed: usize = log.all().map(|l| l.latest.len()).sum();
        assert!(log.len() <= 1_200, "{}", log.len());
        assert!(indexed <= 16 * MIN_PRUNE.max(2 * 1_200 / 16) + 16, "{indexed}");
    }

    #[test]
    fn old_sends_expire_without_counting_as_dropped() {
        let log = SendLog::new(100);
        log.set_limits(100, 60_000);
        push(&log, 1, 0, "s1", "r1");
        push(&log, 2, 10_000, "s2", "r2");
        log.sweep(200_000);
        assert_eq!((log.len(), log.dropped()), (0, 0));
        assert!(log.by_serial(1, "s1").is_none());
        // Sends live at least `keep`: at 65 s the one made at 10 s is still there.
        push(&log, 1, 100_000, "s3", "r3");
        push(&log, 2, 110_000, "s4", "r4");
        log.sweep(165_000);
        assert!(log.by_serial(2, "s4").is_some());
    }

    /// A number sent to over and over (a test device, a user retrying) keeps its newest sends findable
    /// across generations, and dropping an old generation cuts its chain cleanly.
    #[test]
    fn regression_a_numbers_chain_spans_generations() {
        let log = SendLog::new(1_000);
        log.set_limits(1_000, 8_000);
        for at in 0..20 {
            push(&log, 1, at * 1_000, &format!("s{at}"), &format!("r{at}"));
        }
        for at in 16..20 {
            let c = log.convert(1, 19_000, 3_000, Some(&format!("r{at}")));
            assert_eq!(c.newly.iter().map(|s| s.serial.as_str()).collect::<Vec<_>>(), [format!("s{at}")]);
        }
        assert_eq!(log.convert(1, 19_000, 3_000, Some("r15")).found, 0, "outside the window");
        assert!(log.by_serial(1, "s11").is_some());
        assert!(log.by_serial(1, "s2").is_none(), "dropped with its generation");
    }

    #[test]
    fn ids_are_cut_at_a_char_boundary() {
        let log = SendLog::new(10);
        let long = "é".repeat(100);
        push(&log, 1, 0, &long, &long);
        assert_eq!(log.convert(1, 0, 10, None).newly[0].serial.len(), 96);
    }

    /// The cap is for the process, eviction within the tenant holding the most: a tenant alone may fill it,
    /// and a busy one pushes out its own oldest sends, never a small tenant's.
    #[test]
    fn the_cap_evicts_within_the_tenant_holding_the_most() {
        let sends = TenantSends::new(1_000);
        let (busy, small): (Arc<str>, Arc<str>) = ("busy".into(), "small".into());
        let new = |number, at_ms| NewSend { number, at_ms, source: source(), serial: "s", request_id: "r" };
        for i in 0..10 {
            sends.push(&small, new(1_000_000 + i, i));
        }
        for i in 0..5_000 {
            let (_, held) = sends.push(&busy, new(i, 100 + i));
            assert!(held <= 1_000, "{held}");
        }
        assert!(sends.len() <= 1_000 && sends.len() >= 900, "{}", sends.len());
        for i in 0..10 {
            assert!(sends.by_serial("small", 1_000_000 + i, "s").is_some(), "small's send {i} kept");
        }
        assert!(sends.by_serial("busy", 0, "s").is_none(), "busy's oldest went");
        assert!(sends.by_serial("busy", 4_999, "s").is_some());
        assert_eq!(sends.dropped() as usize + sends.len(), 5_010);
        assert!(sends.by_serial("busy", 1_000_000, "s").is_none(), "a number is looked up in its tenant's log");
    }
}
