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

pub struct RedisStore {
    client: redis::Client,
    script: redis::Script,
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
