//! The shared limiter store: every replica judges against the same Redis. One request is one EVALSHA of a
//! server-side Lua script that reads every rule's TAT, applies the same GCRA arithmetic as `gcra.rs`, and
//! writes only if all enforcing rules allow, atomically (Redis runs a script alone). The `redis` crate's
//! `Script` sends EVALSHA and reloads the script on NOSCRIPT (after a Redis restart or failover).
//!
//! Keys are `smsgate:{<tenant>}:<rule-id>:<key>`: the hash tag is the tenant, so all keys one request
//! touches live in one Cluster slot and the script may use them together. The price is that one tenant's
//! state sits on one Cluster shard; tenants spread over shards. Each key expires when its TAT passes, so
//! Redis holds state only for keys with live quota.
//!
//! Time comes from the gateway (unix milliseconds, passed as an argument), not from Redis `TIME`: it keeps
//! tests deterministic and the two backends comparable. Replicas therefore need synchronized clocks (NTP);
//! a skew of δ lets a key admit at most about δ / interval early requests when replicas alternate.

use super::gcra::GIVE_BACK_WINDOW_MS;
use super::memory::Check;
use redis::aio::MultiplexedConnection;
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

/// KEYS: spend counters (hashes with fields m and f). ARGV per key: message cap, fee cap, ttl ms (0: no cap).
const SPEND_SCRIPT: &str = r#"
for i = 1, #KEYS do
  local m = tonumber(redis.call('HGET', KEYS[i], 'm') or '0')
  local f = tonumber(redis.call('HGET', KEYS[i], 'f') or '0')
  local mc = tonumber(ARGV[3 * i - 2])
  local fc = tonumber(ARGV[3 * i - 1])
  if mc > 0 and m >= mc then return {i, 0} end
  if fc > 0 and f >= fc then return {i, 1} end
end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'm', 1)
  redis.call('PEXPIRE', KEYS[i], ARGV[3 * i])
end
return {0, 0}
"#;

/// What the limiter script read: each rule's TAT (None: no state), and the request's admission number when
/// it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub tats: Vec<Option<u64>>,
    pub seq: Option<u64>,
}

pub struct RedisStore {
    client: redis::Client,
    script: redis::Script,
    give_back_script: redis::Script,
    merge_script: redis::Script,
    spend_script: redis::Script,
    /// Bound on one whole call, connecting included.
    timeout: Duration,
    /// The multiplexed connection, shared by all requests; dropped on any error so the next use reconnects.
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl RedisStore {
    pub fn new(url: &str, timeout: Duration) -> Result<RedisStore, redis::RedisError> {
        Ok(RedisStore {
            client: redis::Client::open(url)?,
            script: redis::Script::new(SCRIPT),
            give_back_script: redis::Script::new(GIVE_BACK_SCRIPT),
            merge_script: redis::Script::new(MERGE_SCRIPT),
            spend_script: redis::Script::new(SPEND_SCRIPT),
            timeout,
            connection: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(c) = self.connection.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(c);
        }
        let config =
            redis::AsyncConnectionConfig::new().set_connection_timeout(self.timeout).set_response_timeout(self.timeout);
        let c = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn forget_connection(&self) {
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Runs `call` on the shared connection within the time-out; any failure drops the connection.
    async fn bounded<T, F, Fut>(&self, call: F) -> Result<T, RedisError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
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
        let mut invocation = self.script.prepare_invoke();
        for check in checks {
            invocation.key(key_name(tenant, check));
        }
        invocation.key(sequence_key(tenant));
        invocation.arg(now_ms).arg(u8::from(commit)).arg(GIVE_BACK_WINDOW_MS);
        for (i, check) in checks.iter().enumerate() {
            let floor = floors.get(i).copied().flatten().unwrap_or(0);
            invocation
                .arg(check.gcra.interval_ms())
                .arg(check.gcra.horizon_ms())
                .arg(u8::from(check.shadow))
                .arg(floor);
        }
        let mut values: Vec<u64> = self.bounded(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
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
        let mut invocation = self.give_back_script.prepare_invoke();
        for (check, _) in taken {
            invocation.key(key_name(tenant, check));
        }
        for (check, _) in taken {
            invocation.key(ledger_key(tenant, check));
        }
        invocation.key(sequence_key(tenant));
        invocation.arg(now_ms).arg(GIVE_BACK_WINDOW_MS).arg(seq);
        for (check, tat) in taken {
            invocation.arg(*tat).arg(check.gcra.interval_ms());
        }
        let after: Vec<u64> = self.bounded(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        if after.len() != taken.len() {
            return Err(RedisError::Shape(after.len(), taken.len()));
        }
        Ok(after.into_iter().map(|tat| (tat > 0).then_some(tat)).collect())
    }

    /// Raises each (rule id, key) of `tenant` to at least the given TAT, with a TTL to match; returns how many
    /// keys were raised. One script call: keep batches small enough for the time-out.
    pub async fn merge(&self, tenant: &str, entries: &[(u64, u64, u64)], now_ms: u64) -> Result<usize, RedisError> {
        let mut invocation = self.merge_script.prepare_invoke();
        for &(rule_id, key, _) in entries {
            invocation.key(limiter_key(tenant, rule_id, key));
        }
        invocation.arg(now_ms);
        for &(_, _, tat) in entries {
            invocation.arg(tat);
        }
        self.bounded(|mut c| async move { invocation.invoke_async::<usize>(&mut c).await }).await
    }

    /// `SET key value NX PX ttl`: true when this call created the key.
    pub async fn set_new(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, RedisError> {
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

    /// Spend caps, atomically: if no counter has reached its caps, adds one message to each (and refreshes
    /// its expiry). `limits` holds (message cap, fee cap, ttl ms) per key, 0 meaning no cap. Returns the
    /// index of the first key at a cap and whether it was the fee cap, or None when reserved.
    pub async fn reserve_spend(
        &self,
        keys: &[String],
        limits: &[(u64, u64, u64)],
    ) -> Result<Option<(usize, bool)>, RedisError> {
        let mut invocation = self.spend_script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for (messages, fee, ttl) in limits {
            invocation.arg(*messages).arg(*fee).arg(*ttl);
        }
        let (index, fee): (usize, u8) =
            self.bounded(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        Ok((index > 0).then(|| (index - 1, fee == 1)))
    }

    /// Adds `delta` to field `m` (messages) or `f` (fee) of each spend counter.
    pub async fn adjust_spend(&self, keys: &[String], field: &'static str, delta: i64) -> Result<(), RedisError> {
        let keys = keys.to_vec();
        self.bounded(|mut c| async move {
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.cmd("HINCRBY").arg(key).arg(field).arg(delta).ignore();
            }
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Whether Redis answers PING within the time-out (the health probe after a failure).
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.bounded(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await.map(drop) }).await
    }
}

/// `smsgate:{tenant}:<rule id>:<key>`, all in hex but the tenant (config names are `[A-Za-z0-9_-]`).
pub fn key_name(tenant: &str, check: &Check) -> String {
    limiter_key(tenant, check.rule_id, check.key)
}

fn limiter_key(tenant: &str, rule_id: u64, key: u64) -> String {
    format!("smsgate:{{{tenant}}}:{rule_id:016x}:{key:x}")
}

/// The give-back ledger beside a limiter key: `smsgate:{tenant}:<rule id>:<key>:g`.
fn ledger_key(tenant: &str, check: &Check) -> String {
    format!("{}:g", key_name(tenant, check))
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
        assert_eq!(key_name("acme", &check), "smsgate:{acme}:00000000000000ab:7d58e7f5510");
    }
}
