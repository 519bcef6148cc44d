//! The shared limiter store: every replica judges against the same Redis. One request is one EVALSHA of a
//! server-side Lua script that reads every rule's TAT, applies the same GCRA arithmetic as `gcra.rs`, and
//! writes only if all enforcing rules allow, atomically (Redis runs a script alone). The `redis` crate's
//! `Script` sends EVALSHA and reloads the script on NOSCRIPT (after a Redis restart or failover).
//!
//! Keys are `smsgate:{<tenant>}:<rule-id>:<key>`: the hash tag is the tenant, so all keys one request
//! touches live in one Cluster slot and the script may use them together. `<key>` (a number, a prefix, an
//! address) is never stored as it is: it is a keyed hash under the deployment's `limits_backend.key`
//! ([`StorageKey`], 64 bits in 11 base64url characters, as long as the hex of a phone number was). The price is that one tenant's
//! state sits on one Cluster shard; tenants spread over shards. Each key expires when its TAT passes, so
//! Redis holds state only for keys with live quota.
//!
//! The same calls run on one node, a Cluster or a Sentinel-watched primary (`connect.rs`): every call's keys
//! share one hash tag ([`Call`] and [`RedisStore::run_pipeline`] check it in debug builds), so a Cluster
//! routes it whole to the shard that owns the tenant. A call is never re-sent by this module; the Cluster
//! client re-sends it after a refusal that proves the script did not run (`MOVED`, `ASK`, `TRYAGAIN`) or after
//! its connection dropped, which is the one case where a decision can count twice (docs/limits-and-policy.md: "During a failover").
//!
//! Time comes from the gateway (unix milliseconds, passed as an argument), not from Redis `TIME`: it keeps
//! tests deterministic and the two backends comparable. Replicas therefore need synchronized clocks (NTP);
//! a skew of δ lets a key admit at most about δ / interval early requests when replicas alternate.

use super::connect::{Connection, Topology};
use super::gcra::GIVE_BACK_WINDOW_MS;
use super::memory::Check;
use crate::config::RedisConnect;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Mutex;
use std::time::Duration;

/// KEYS: one per rule, then the tenant's admission counter (a hash: `b`, where its numbers start, and `n`; it
/// lives as long as a request numbered by it may give back). ARGV: now_ms, commit (1/0), the give-back window (ms), then per rule: interval_ms,
/// horizon_ms, shadow (1/0), floor_ms. Returns each rule's stored TAT (0: none), then the
/// request's admission number (0: not recorded); the gateway derives the verdicts from the TATs with
/// `Gcra::check`. `floor` is the gateway's own record of the key (0: none), used only when Redis has no key
/// at all (Redis restarted empty or flushed): what this replica admitted is not handed out again, and a
/// committing call writes it back.
const SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local commit = ARGV[2] == '1'
local n = #KEYS - 1
local stored = {}
local fresh = {}
local restore = {}
local all = true
for i = 1, n do
  local interval = tonumber(ARGV[4 * i])
  local horizon = tonumber(ARGV[4 * i + 1])
  local shadow = ARGV[4 * i + 2] == '1'
  local tat = redis.call('GET', KEYS[i])
  if tat then
    tat = tonumber(tat)
  else
    tat = tonumber(ARGV[4 * i + 3])
    restore[i] = tat > now
  end
  stored[i] = tat
  local base = tat
  if base < now then base = now end
  local new_tat = base + interval
  if new_tat - now <= horizon then
    fresh[i] = new_tat
  else
    fresh[i] = false
    if not shadow then all = false end
  end
end
local seq = 0
if commit then
  for i = 1, n do
    local tat = false
    if all and fresh[i] then tat = fresh[i] elseif restore[i] then tat = stored[i] end
    if tat then
      redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', string.format('%d', tat - now))
    end
  end
  if all then
    -- A counter (re)born after Redis lost its state starts above every number handed out before.
    redis.call('HSETNX', KEYS[n + 1], 'b', string.format('%d', now * 1000))
    seq = tonumber(redis.call('HGET', KEYS[n + 1], 'b')) + redis.call('HINCRBY', KEYS[n + 1], 'n', 1)
    redis.call('PEXPIRE', KEYS[n + 1], ARGV[3])
  end
end
stored[n + 1] = seq
return stored
"#;

/// KEYS: one TAT key per rule, then each rule's give-back ledger (a list of `seq:at_seq:refund:until`, oldest
/// first), then the tenant's admission counter. ARGV: now_ms, window_ms, the request's admission number, then
/// per rule: the TAT it stored, interval_ms. Gives back the request's part of each key with the arithmetic
/// of `Gcra::give_back` and `Ledger`, atomically; returns each key's TAT afterwards (0: none).
const GIVE_BACK_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local seq = tonumber(ARGV[3])
local n = (#KEYS - 1) / 2
local counter = redis.call('HMGET', KEYS[2 * n + 1], 'b', 'n')
local born = tonumber(counter[1] or '0')
local at_seq = born + tonumber(counter[2] or '0')
local after = {}
for i = 1, n do
  local taken = tonumber(ARGV[2 * i + 2])
  local interval = tonumber(ARGV[2 * i + 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  after[i] = 0
  if tat > now then after[i] = tat end
  -- A counter born after the request was numbered: Redis lost its state (and the ledgers) since, so how far
  -- the request's interval moved is unknown; give nothing back.
  if tat > 0 and seq >= born then
    local moved = 0
    local expired = 0
    for j, entry in ipairs(redis.call('LRANGE', KEYS[n + i], 0, -1)) do
      local s, a, r, u = string.match(entry, '^(%d+):(%d+):(%d+):(%d+)$')
      s, a, r, u = tonumber(s), tonumber(a), tonumber(r), tonumber(u)
      if u <= now then
        if expired == j - 1 then expired = j end
      elseif a >= seq and s < seq then
        moved = moved + r
      end
    end
    if expired > 0 then redis.call('LTRIM', KEYS[n + i], expired, -1) end
    local refund = math.min(interval, math.max(0, taken - moved - now), tat)
    if refund > 0 then
      local left = tat - refund
      if left > now then
        redis.call('SET', KEYS[i], string.format('%d', left), 'PX', string.format('%d', left - now))
        after[i] = left
      else
        redis.call('DEL', KEYS[i])
        after[i] = 0
      end
      redis.call('RPUSH', KEYS[n + i], string.format('%d:%d:%d:%d', seq, at_seq, refund, now + window))
      redis.call('PEXPIRE', KEYS[n + i], window)
    end
  end
end
return after
"#;

/// KEYS: limiter keys. ARGV: now_ms, then one TAT per key. Each key keeps the later of its TAT and the given
/// one, with the TTL of the later one: how decisions made locally during an outage reach Redis. Returns how
/// many keys were raised.
const MERGE_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local raised = 0
for i = 1, #KEYS do
  local tat = tonumber(ARGV[i + 1])
  local stored = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat > now and tat > stored then
    redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', string.format('%d', tat - now))
    raised = raised + 1
  end
end
return raised
"#;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis answered {0} values for {1} rules")]
    Shape(usize, usize),
}

/// KEYS: spend counters (hashes with fields m and f). ARGV per key: message cap, fee cap (0: no cap), ttl ms,
/// then the gateway's mirror of the counter (messages, fee), which stands in for a counter Redis does not
/// hold (restarted empty, flushed) and is written there. If no counter has reached its caps, adds one
/// message to each. Returns the 1-based index of the first counter at a cap (0: reserved), whether it was the
/// fee cap, then every counter's messages and fee.
const SPEND_SCRIPT: &str = r#"
local counts = {}
local refused, fee = 0, 0
for i = 1, #KEYS do
  local m = redis.call('HGET', KEYS[i], 'm')
  local f = tonumber(redis.call('HGET', KEYS[i], 'f') or '0')
  if m then
    m = tonumber(m)
  else
    m = tonumber(ARGV[5 * i - 1])
    f = tonumber(ARGV[5 * i])
    if m > 0 or f > 0 then
      redis.call('HSET', KEYS[i], 'm', m, 'f', f)
      redis.call('PEXPIRE', KEYS[i], ARGV[5 * i - 2])
    end
  end
  counts[i] = {m, f}
  local mc = tonumber(ARGV[5 * i - 4])
  local fc = tonumber(ARGV[5 * i - 3])
  if refused == 0 and mc > 0 and m >= mc then refused = i end
  if refused == 0 and fc > 0 and f >= fc then refused, fee = i, 1 end
end
local out = {refused, fee}
for i = 1, #KEYS do
  if refused == 0 then
    counts[i][1] = redis.call('HINCRBY', KEYS[i], 'm', 1)
    redis.call('PEXPIRE', KEYS[i], ARGV[5 * i - 2])
  end
  out[2 * i + 1] = counts[i][1]
  out[2 * i + 2] = counts[i][2]
end
return out
"#;

/// KEYS: spend counters. ARGV per key: the messages and fee Redis had as last seen by the gateway, what the
/// gateway added since without Redis (messages, fee), ttl ms. Each counter becomes the larger of its value
/// and the one last seen, plus the additions: how spend decided locally during an outage reaches Redis, whether
/// Redis kept its state or came back empty. Returns every counter's messages and fee afterwards.
const SPEND_MERGE_SCRIPT: &str = r#"
local out = {}
for i = 1, #KEYS do
  local m = tonumber(redis.call('HGET', KEYS[i], 'm') or '0')
  local f = tonumber(redis.call('HGET', KEYS[i], 'f') or '0')
  m = math.max(m, tonumber(ARGV[5 * i - 4])) + tonumber(ARGV[5 * i - 2])
  f = math.max(f, tonumber(ARGV[5 * i - 3])) + tonumber(ARGV[5 * i - 1])
  redis.call('HSET', KEYS[i], 'm', m, 'f', f)
  redis.call('PEXPIRE', KEYS[i], ARGV[5 * i])
  out[2 * i - 1] = m
  out[2 * i] = f
end
return out
"#;

/// One spend counter of a reservation in Redis: its caps (0: none), the TTL to give it, and the gateway's
/// mirror of it (messages, fee), which stands in for a counter Redis does not hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpendCounter {
    pub(crate) message_cap: u64,
    pub(crate) fee_cap: u64,
    pub(crate) ttl_ms: u64,
    pub floor: (u64, u64),
}

/// What the spend script answered: the first counter at a cap (and whether the fee cap) or None when
/// reserved, and every counter's (messages, fee) afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpendAnswer {
    pub refused: Option<(usize, bool)>,
    pub counts: Vec<(u64, u64)>,
}

/// One counter written back after an outage: (messages, fee) Redis had as last seen by the gateway, what was
/// added since without Redis, and the TTL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpendMerge {
    pub base: (u64, u64),
    pub pending: (u64, u64),
    pub(crate) ttl_ms: u64,
}

/// What the limiter script read: each rule's TAT (None: no state), and the request's admission number when
/// it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub tats: Vec<Option<u64>>,
    pub seq: Option<u64>,
}

/// A script call being built, with its keys kept: every key of one call must share the tenant's hash tag
/// (one Cluster slot), which [`RedisStore::run_script`] asserts in debug builds and the unit tests check for
/// each call the gateway makes.
pub struct Call<'a> {
    invocation: redis::ScriptInvocation<'a>,
    keys: Vec<String>,
}

impl<'a> Call<'a> {
    pub fn new(script: &'a redis::Script) -> Self {
        Call { invocation: script.prepare_invoke(), keys: Vec::new() }
    }

    pub fn key(&mut self, key: String) -> &mut Self {
        self.invocation.key(&key);
        self.keys.push(key);
        self
    }

    pub fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.invocation.arg(arg);
        self
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }
}

/// The part of a key Redis Cluster hashes: the text between the first `{` and the next `}` when not empty,
/// else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// Whether every key hashes the same text (so all live in one Cluster slot).
pub fn one_slot<K: AsRef<[u8]>>(keys: &[K]) -> bool {
    keys.windows(2).all(|pair| hash_tag(pair[0].as_ref()) == hash_tag(pair[1].as_ref()))
}

/// The keys of a pipeline of the commands this crate sends (all arguments of `MGET`/`DEL`, the first of others).
pub fn pipeline_keys(pipe: &redis::Pipeline) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for cmd in pipe.cmd_iter() {
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(bytes) => Some(bytes.to_vec()),
                _ => None,
            })
            .collect();
        let Some((name, rest)) = args.split_first() else { continue };
        match name.to_ascii_uppercase().as_slice() {
            b"MGET" | b"DEL" => keys.extend(rest.iter().cloned()),
            _ => keys.extend(rest.first().cloned()),
        }
    }
    keys
}

/// The per-deployment key every number (and every other caller-chosen value) stored in Redis is hashed
/// under (`limits_backend.key`): a reader of Redis cannot tell which numbers it holds, and every replica
/// names a number's keys alike. HMAC-SHA256, keyed once.
#[derive(Clone)]
pub struct StorageKey(Hmac<Sha256>);

impl StorageKey {
    pub fn new(key: &[u8]) -> StorageKey {
        StorageKey(Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key"))
    }

    /// The keyed hash of `parts` (each ended by a zero byte, so part boundaries count).
    pub fn digest(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
            mac.update(&[0]);
        }
        mac.finalize().into_bytes().into()
    }

    /// The first 128 bits of [`StorageKey::digest`] in hex.
    pub(crate) fn hex16(&self, parts: &[&[u8]]) -> String {
        hex::encode(&self.digest(parts)[..16])
    }
}

impl std::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageKey(**REDACTED**)")
    }
}

pub struct RedisStore {
    topology: Topology,
    storage_key: StorageKey,
    script: redis::Script,
    give_back_script: redis::Script,
    merge_script: redis::Script,
    spend_script: redis::Script,
    spend_merge_script: redis::Script,
    /// Bound on one whole call, connecting included.
    timeout: Duration,
    /// The connection, shared by all requests; dropped on any error so the next use reconnects (and, with
    /// Sentinel, asks the sentinels for the primary again; in a Cluster, reads the slots again).
    connection: Mutex<Option<Connection>>,
}

impl RedisStore {
    /// A store on one node at `url`, hashing numbers under `key`.
    pub fn new(url: &str, timeout: Duration, key: &[u8]) -> Result<RedisStore, redis::RedisError> {
        RedisStore::connect(&RedisConnect::node(url), timeout, key)
    }

    /// A store on the configured node, Cluster or Sentinel primary, hashing numbers under `key`
    /// (`limits_backend.key`). Connecting is lazy.
    pub fn connect(connect: &RedisConnect, timeout: Duration, key: &[u8]) -> Result<RedisStore, redis::RedisError> {
        Ok(RedisStore {
            topology: Topology::new(connect, timeout)?,
            storage_key: StorageKey::new(key),
            script: redis::Script::new(SCRIPT),
            give_back_script: redis::Script::new(GIVE_BACK_SCRIPT),
            merge_script: redis::Script::new(MERGE_SCRIPT),
            spend_script: redis::Script::new(SPEND_SCRIPT),
            spend_merge_script: redis::Script::new(SPEND_MERGE_SCRIPT),
            timeout,
            connection: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<Connection, RedisError> {
        if let Some(c) = self.connection.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(c);
        }
        let c = self.topology.connect(self.timeout).await?;
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn forget_connection(&self) {
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Runs `call` on the shared connection within the time-out; any failure drops the connection.
    async fn bounded<T, F, Fut>(&self, call: F) -> Result<T, RedisError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, redis::RedisError>>,
    {
        let attempt = async {
            let connection = self.connection().await?;
            Ok::<T, RedisError>(call(connection).await?)
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        };
        if result.is_err() {
            self.forget_connection();
        }
        result
    }

    /// The stored TATs (ms) of every check, after the script has recorded the request when `commit` and all
    /// enforcing checks allow.
    pub async fn decide(
        &self,
        tenant: &str,
        checks: &[Check],
        now_ms: u64,
        commit: bool,
    ) -> Result<Vec<Option<u64>>, RedisError> {
        Ok(self.decide_with_floors(tenant, checks, &[], now_ms, commit).await?.tats)
    }

    /// [`RedisStore::decide`], with this replica's own record of each key (`floors`, in the order of `checks`;
    /// missing or None: no record) standing in for keys Redis does not hold; also returns the request's
    /// admission number when it was recorded.
    pub async fn decide_with_floors(
        &self,
        tenant: &str,
        checks: &[Check],
        floors: &[Option<u64>],
        now_ms: u64,
        commit: bool,
    ) -> Result<Stored, RedisError> {
        let call = decide_call(&self.script, &self.storage_key, tenant, checks, floors, now_ms, commit);
        let mut values: Vec<u64> = self.run_script(call).await?;
        if values.len() != checks.len() + 1 {
            return Err(RedisError::Shape(values.len(), checks.len()));
        }
        let seq = values.pop().filter(|&seq| seq > 0);
        Ok(Stored { tats: values.into_iter().map(|tat| (tat > 0).then_some(tat)).collect(), seq })
    }

    /// Gives back what committed request `seq` took (each check and the TAT it stored), in one script call.
    /// Returns each key's TAT afterwards (None: no state left).
    pub async fn give_back(
        &self,
        tenant: &str,
        taken: &[(Check, u64)],
        seq: u64,
        now_ms: u64,
    ) -> Result<Vec<Option<u64>>, RedisError> {
        let call = give_back_call(&self.give_back_script, &self.storage_key, tenant, taken, seq, now_ms);
        let after: Vec<u64> = self.run_script(call).await?;
        if after.len() != taken.len() {
            return Err(RedisError::Shape(after.len(), taken.len()));
        }
        Ok(after.into_iter().map(|tat| (tat > 0).then_some(tat)).collect())
    }

    /// Raises each (rule id, key) of `tenant` to at least the given TAT, with a TTL to match; returns how many
    /// keys were raised. One script call: keep batches small enough for the time-out.
    pub(crate) async fn merge(
        &self,
        tenant: &str,
        entries: &[(u64, u64, u64)],
        now_ms: u64,
    ) -> Result<usize, RedisError> {
        self.run_script(merge_call(&self.merge_script, &self.storage_key, tenant, entries, now_ms)).await
    }

    /// `SET key value NX PX ttl`: true when this call created the key.
    pub(crate) async fn set_new(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, RedisError> {
        let (key, value, ttl) = (key.to_owned(), value.to_owned(), ttl.as_millis().max(1) as u64);
        self.bounded(|mut c| async move {
            let set: Option<String> =
                redis::cmd("SET").arg(key).arg(value).arg("NX").arg("PX").arg(ttl).query_async(&mut c).await?;
            Ok(set.is_some())
        })
        .await
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, RedisError> {
        let key = key.to_owned();
        self.bounded(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await }).await
    }

    /// `SET key value PX ttl`.
    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), RedisError> {
        let (key, value, ttl) = (key.to_owned(), value.to_owned(), ttl.as_millis().max(1) as u64);
        self.bounded(|mut c| async move {
            redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ttl).query_async(&mut c).await
        })
        .await
    }

    pub async fn delete(&self, key: &str) -> Result<(), RedisError> {
        let key = key.to_owned();
        self.bounded(|mut c| async move { redis::cmd("DEL").arg(key).query_async::<i64>(&mut c).await.map(drop) }).await
    }

    /// Spend caps, atomically (see [`SPEND_SCRIPT`]): if no counter has reached its caps, adds one message to
    /// each (and refreshes its expiry).
    pub(crate) async fn reserve_spend(
        &self,
        keys: &[String],
        counters: &[SpendCounter],
    ) -> Result<SpendAnswer, RedisError> {
        let values: Vec<u64> = self.run_script(spend_call(&self.spend_script, keys, counters)).await?;
        if values.len() != 2 + 2 * keys.len() {
            return Err(RedisError::Shape(values.len(), keys.len()));
        }
        let (index, fee) = (values[0] as usize, values[1] == 1);
        let counts = values[2..].chunks(2).map(|c| (c[0], c[1])).collect();
        Ok(SpendAnswer { refused: (index > 0).then(|| (index - 1, fee)), counts })
    }

    /// Writes the gateway's spend counters back (see [`SPEND_MERGE_SCRIPT`]); every counter's (messages,
    /// fee) afterwards.
    pub(crate) async fn merge_spend(
        &self,
        keys: &[String],
        merges: &[SpendMerge],
    ) -> Result<Vec<(u64, u64)>, RedisError> {
        let values: Vec<u64> = self.run_script(spend_merge_call(&self.spend_merge_script, keys, merges)).await?;
        if values.len() != 2 * keys.len() {
            return Err(RedisError::Shape(values.len(), keys.len()));
        }
        Ok(values.chunks(2).map(|c| (c[0], c[1])).collect())
    }

    /// Adds `delta` to field `m` (messages) or `f` (fee) of each spend counter.
    pub(crate) async fn adjust_spend(
        &self,
        keys: &[String],
        field: &'static str,
        delta: i64,
    ) -> Result<(), RedisError> {
        self.run_pipeline(adjust_spend_pipeline(keys, field, delta)).await
    }

    /// Runs a script call (this module's or another's) on the shared connection, bounded like every call.
    pub(crate) async fn run_script<T: redis::FromRedisValue>(&self, call: Call<'_>) -> Result<T, RedisError> {
        debug_assert!(one_slot(call.keys()), "keys of one call in several slots: {:?}", call.keys());
        let invocation = call.invocation;
        self.bounded(|mut c| async move { invocation.invoke_async(&mut c).await }).await
    }

    /// Runs a pipeline of plain commands on the shared connection, bounded like every call.
    pub(crate) async fn run_pipeline<T: redis::FromRedisValue>(&self, pipe: redis::Pipeline) -> Result<T, RedisError> {
        debug_assert!(one_slot(&pipeline_keys(&pipe)), "keys of one pipeline in several slots");
        self.bounded(|mut c| async move { pipe.query_async(&mut c).await }).await
    }

    /// Whether Redis takes calls within the time-out (the health probe after a failure): PING the node, or
    /// every primary of a Cluster.
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.bounded(|mut c| async move { c.ping().await }).await
    }

    /// The key numbers are hashed under in this store's keys.
    pub(crate) fn storage_key(&self) -> &StorageKey {
        &self.storage_key
    }

    /// `node`, `cluster` or `sentinel`.
    pub fn kind(&self) -> &'static str {
        match self.topology {
            Topology::Node(_) => "node",
            Topology::Cluster(_) => "cluster",
            Topology::Sentinel(_) => "sentinel",
        }
    }
}

/// The limiter script's call for one decision (see [`SCRIPT`]).
fn decide_call<'a>(
    script: &'a redis::Script,
    storage: &StorageKey,
    tenant: &str,
    checks: &[Check],
    floors: &[Option<u64>],
    now_ms: u64,
    commit: bool,
) -> Call<'a> {
    let mut call = Call::new(script);
    for check in checks {
        call.key(key_name(storage, tenant, check));
    }
    call.key(sequence_key(tenant));
    call.arg(now_ms).arg(u8::from(commit)).arg(GIVE_BACK_WINDOW_MS);
    for (i, check) in checks.iter().enumerate() {
        let floor = floors.get(i).copied().flatten().unwrap_or(0);
        call.arg(check.gcra.interval_ms()).arg(check.gcra.horizon_ms()).arg(u8::from(check.shadow)).arg(floor);
    }
    call
}

fn give_back_call<'a>(
    script: &'a redis::Script,
    storage: &StorageKey,
    tenant: &str,
    taken: &[(Check, u64)],
    seq: u64,
    now_ms: u64,
) -> Call<'a> {
    let mut call = Call::new(script);
    for (check, _) in taken {
        call.key(key_name(storage, tenant, check));
    }
    for (check, _) in taken {
        call.key(ledger_key(storage, tenant, check));
    }
    call.key(sequence_key(tenant));
    call.arg(now_ms).arg(GIVE_BACK_WINDOW_MS).arg(seq);
    for (check, tat) in taken {
        call.arg(*tat).arg(check.gcra.interval_ms());
    }
    call
}

fn merge_call<'a>(
    script: &'a redis::Script,
    storage: &StorageKey,
    tenant: &str,
    entries: &[(u64, u64, u64)],
    now_ms: u64,
) -> Call<'a> {
    let mut call = Call::new(script);
    for &(rule_id, key, _) in entries {
        call.key(limiter_key(storage, tenant, rule_id, key));
    }
    call.arg(now_ms);
    for &(_, _, tat) in entries {
        call.arg(tat);
    }
    call
}

fn spend_call<'a>(script: &'a redis::Script, keys: &[String], counters: &[SpendCounter]) -> Call<'a> {
    let mut call = Call::new(script);
    for key in keys {
        call.key(key.clone());
    }
    for c in counters {
        call.arg(c.message_cap).arg(c.fee_cap).arg(c.ttl_ms).arg(c.floor.0).arg(c.floor.1);
    }
    call
}

fn spend_merge_call<'a>(script: &'a redis::Script, keys: &[String], merges: &[SpendMerge]) -> Call<'a> {
    let mut call = Call::new(script);
    for key in keys {
        call.key(key.clone());
    }
    for m in merges {
        call.arg(m.base.0).arg(m.base.1).arg(m.pending.0).arg(m.pending.1).arg(m.ttl_ms);
    }
    call
}

fn adjust_spend_pipeline(keys: &[String], field: &'static str, delta: i64) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("HINCRBY").arg(key).arg(field).arg(delta).ignore();
    }
    pipe
}

/// `smsgate:{tenant}:<rule id>:<hashed key>`: the rule id in hex, the key (a number, a prefix, an address)
/// as its keyed hash (config names are `[A-Za-z0-9_-]`; base64url has no `{`, so the hash tag stays the
/// tenant).
pub fn key_name(storage: &StorageKey, tenant: &str, check: &Check) -> String {
    limiter_key(storage, tenant, check.rule_id, check.key)
}

fn limiter_key(storage: &StorageKey, tenant: &str, rule_id: u64, key: u64) -> String {
    let digest = storage.digest(&[b"limit", tenant.as_bytes(), &rule_id.to_be_bytes(), &key.to_be_bytes()]);
    let hashed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..8]);
    format!("smsgate:{{{tenant}}}:{rule_id:016x}:{hashed}")
}

/// The give-back ledger beside a limiter key: `smsgate:{tenant}:<rule id>:<hashed key>:g`.
fn ledger_key(storage: &StorageKey, tenant: &str, check: &Check) -> String {
    format!("{}:g", key_name(storage, tenant, check))
}

/// The tenant's admission counter.
fn sequence_key(tenant: &str) -> String {
    format!("smsgate:{{{tenant}}}:seq")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Gcra;

    #[test]
    fn keys_share_the_tenant_hash_tag() {
        let check =
            Check { rule_id: 0xab, key: 8613800138000, gcra: Gcra::new(1, Duration::from_secs(1)), shadow: false };
        let storage = StorageKey::new(b"test-storage-key-0123456789abcdef");
        let key = key_name(&storage, "acme", &check);
        assert!(key.starts_with("smsgate:{acme}:00000000000000ab:"), "{key}");
        // As long as the hex of the number was (the memory figure holds), and it does not show the number.
        assert_eq!(key.len(), "smsgate:{acme}:00000000000000ab:7d58e7f5510".len(), "{key}");
        assert!(!key.contains("7d58e7f5510"), "{key}");
        assert_ne!(key, key_name(&StorageKey::new(b"another-deployment-key-0123456789"), "acme", &check));
        assert_ne!(key, key_name(&storage, "beta", &check).replace("{beta}", "{acme}"), "tenants hash apart");
    }

    #[test]
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(hash_tag(b"smsgate:{acme}:seq"), b"acme");
        assert_eq!(hash_tag(b"a{}b{c}"), b"a{}b{c}");
        assert_eq!(hash_tag(b"plain"), b"plain");
        assert_eq!(hash_tag(b"{x"), b"{x");
        assert!(one_slot(&["smsgate:{a}:1", "smsgate:{a}:2"]));
        assert!(!one_slot(&["smsgate:{a}:1", "smsgate:{b}:1"]));
        let mut pipe = redis::pipe();
        pipe.cmd("HDEL").arg("smsgate:{a}:x").arg("field");
        pipe.cmd("MGET").arg("smsgate:{a}:y").arg("smsgate:{b}:z");
        assert_eq!(
            pipeline_keys(&pipe),
            [b"smsgate:{a}:x".to_vec(), b"smsgate:{a}:y".to_vec(), b"smsgate:{b}:z".to_vec()]
        );
        assert!(!one_slot(&pipeline_keys(&pipe)));
    }

    /// Every call the limiter, spend caps and write-back make: all keys of one call share the tenant's tag.
    #[test]
    fn every_call_keeps_its_keys_in_one_slot() {
        let script = redis::Script::new("return 0");
        let checks: Vec<Check> = (0..4)
            .map(|i| Check {
                rule_id: i,
                key: 8613800138000 + i,
                gcra: Gcra::new(5, Duration::from_secs(60)),
                shadow: i == 3,
            })
            .collect();
        for tenant in ["acme", "t-1", "x_y"] {
            let storage = StorageKey::new(b"k");
            let decide = decide_call(&script, &storage, tenant, &checks, &[Some(1), None], 1_000, true);
            assert_eq!(decide.keys().len(), checks.len() + 1);
            let taken: Vec<(Check, u64)> = checks.iter().map(|c| (*c, 5_000)).collect();
            let give_back = give_back_call(&script, &storage, tenant, &taken, 7, 1_000);
            assert_eq!(give_back.keys().len(), 2 * checks.len() + 1);
            let merge = merge_call(&script, &storage, tenant, &[(1, 2, 3), (4, 5, 6)], 1_000);
            for call in [&decide, &give_back, &merge] {
                assert!(one_slot(call.keys()), "{:?}", call.keys());
                assert!(call.keys().iter().all(|k| hash_tag(k.as_bytes()) == tenant.as_bytes()), "{:?}", call.keys());
            }
        }
    }
}
