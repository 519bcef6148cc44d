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

use super::memory::Check;
use redis::aio::MultiplexedConnection;
use std::sync::Mutex;
use std::time::Duration;

/// KEYS: one per rule. ARGV: now_ms, commit (1/0), then per rule: interval_ms, horizon_ms, shadow (1/0).
/// Returns each rule's stored TAT (0: none); the gateway derives the verdicts from them with `Gcra::check`.
const SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local commit = ARGV[2] == '1'
local n = #KEYS
local stored = {}
local fresh = {}
local all = true
for i = 1, n do
  local interval = tonumber(ARGV[3 * i])
  local horizon = tonumber(ARGV[3 * i + 1])
  local shadow = ARGV[3 * i + 2] == '1'
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
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
if commit and all then
  for i = 1, n do
    if fresh[i] then
      redis.call('SET', KEYS[i], string.format('%d', fresh[i]), 'PX', string.format('%d', fresh[i] - now))
    end
  end
end
return stored
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

pub struct RedisStore {
    client: redis::Client,
    script: redis::Script,
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
        let mut invocation = self.script.prepare_invoke();
        for check in checks {
            invocation.key(key_name(tenant, check));
        }
        invocation.arg(now_ms).arg(u8::from(commit));
        for check in checks {
            invocation.arg(check.gcra.interval_ms()).arg(check.gcra.horizon_ms()).arg(u8::from(check.shadow));
        }
        let stored: Vec<u64> = self.bounded(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        if stored.len() != checks.len() {
            return Err(RedisError::Shape(stored.len(), checks.len()));
        }
        Ok(stored.into_iter().map(|tat| (tat > 0).then_some(tat)).collect())
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

    /// Runs a prepared script invocation (another module's script) on the shared connection, bounded like
    /// every call.
    pub async fn run_script<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        self.bounded(|mut c| async move { invocation.invoke_async(&mut c).await }).await
    }

    /// Runs a pipeline of plain commands on the shared connection, bounded like every call.
    pub async fn run_pipeline<T: redis::FromRedisValue>(&self, pipe: redis::Pipeline) -> Result<T, RedisError> {
        self.bounded(|mut c| async move { pipe.query_async(&mut c).await }).await
    }

    /// Whether Redis answers PING within the time-out (the health probe after a failure).
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.bounded(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await.map(drop) }).await
    }
}

/// `smsgate:{tenant}:<rule id>:<key>`, all in hex but the tenant (config names are `[A-Za-z0-9_-]`).
pub fn key_name(tenant: &str, check: &Check) -> String {
    format!("smsgate:{{{tenant}}}:{:016x}:{:x}", check.rule_id, check.key)
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
