//! The feedback loop in Redis (the redis limiter backend), so replicas share remembered sends, conversions
//! and blocks. Keys carry the tenant hash tag like the limiter's; numbers appear only as an HMAC under the
//! deployment's `limits_backend.key`, as de-duplication and the limiter write them:
//!
//! - `smsgate:{t}:fb:n:<hmac>`: the number's recent sends (a list of at most 32), for `remember_for`;
//! - `smsgate:{t}:fb:s:<sha256(SerialNo)>`: the send a delivery receipt names, for `remember_for`;
//! - `smsgate:{t}:fb:s:<sha256(SerialNo)>:r`: a receipt for it was counted (repeats are not), for
//!   `remember_for`;
//! - `smsgate:{t}:fb:p:<rule>:<key>`: a protection key's sends and conversions per step (`s<step>`,
//!   `c<step>`), for the rule's window;
//! - `smsgate:{t}:fb:blocks`: every block of the tenant, `<rule>:<key>` -> unix ms it ends.
//!
//! Nothing here runs on a send's request path: a send is recorded by a background task after its answer,
//! in one script call that also judges the send's keys (a trip writes the block and is logged by the replica
//! that tripped it). Replicas read the blocks every second (`refresh`), so a block reaches every replica
//! within about a second. Redis judges in steps of `max(1 s, conversion.window / 4, window / 64)`: a step
//! counts once it is wholly past its conversion window, so a trip can come up to one step later than in
//! memory, where each send is judged the moment its window closes.

use super::sends::SendInfo;
use crate::config::{ConversionSettings, ProtectionRule, Tenant};
use crate::policy::{Call, RedisError, RedisStore, StorageKey};
use crate::protection::{Event, KeySource};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// Sends kept per number (a number asked for a code over and over needs only its latest ones).
const PER_NUMBER: i64 = 32;

/// KEYS: number list, receipt key, blocks hash, then one stat hash per rule.
/// ARGV: now, remember_ms, record, receipt value ('' for none), conversion_ms, rule count, then per rule:
/// field, step_ms, window_ms, min_sends, min_conversion_ppm, block_ms, step index.
/// Returns `t:<rule>:<sends>:<converted>:<until>` for trips and `l:<rule>` for lifted blocks.
static RECORD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local now = tonumber(ARGV[1])
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[7 + 7 * tonumber(ARGV[6])]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[2]) end
local conv = tonumber(ARGV[5])
local out = {}
for i = 1, tonumber(ARGV[6]) do
  local a = 6 + (i - 1) * 7
  local field, step, window = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local min_sends, ppm, block, index = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), ARGV[a + 7]
  local stat = KEYS[3 + i]
  redis.call('HINCRBY', stat, 's' .. index, 1)
  redis.call('PEXPIRE', stat, window + conv + step)
  local held = redis.call('HGET', KEYS[3], field)
  if not (held and tonumber(held) > now) then
    if held then
      redis.call('HDEL', KEYS[3], field)
      table.insert(out, 'l:' .. i)
    end
    local all = redis.call('HGETALL', stat)
    local sends, got = 0, 0
    for j = 1, #all, 2 do
      local start = tonumber(string.sub(all[j], 2)) * step
      if start + step + conv <= now and start + step > now - window then
        if string.sub(all[j], 1, 1) == 's' then sends = sends + tonumber(all[j + 1])
        else got = got + tonumber(all[j + 1]) end
      end
    end
    if sends >= min_sends and got * 1000000 < ppm * sends then
      redis.call('DEL', stat)
      local untill = string.format('%d', now + block)
      redis.call('HSET', KEYS[3], field, untill)
      table.insert(out, 't:' .. i .. ':' .. sends .. ':' .. got .. ':' .. untill)
    end
  end
end
return out
"#,
    )
});

/// KEYS: number list. ARGV: now, window_ms, request-id hash ('' for any).
/// Marks one send within the window converted, the newest that matches (one verification converts one
/// send); returns the count found (0 or 1), then the record it marked.
static CONVERT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local now, window, rid = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local found, out = 0, {}
for i = #items, 1, -1 do
  local rec = items[i]
  local at, c, r = string.match(rec, '^(%d+):(%d):(%x*):')
  at = tonumber(at)
  if at and at <= now and at + window >= now and (rid == '' or r == rid) then
    found = 1
    if c == '0' then
      redis.call('LSET', KEYS[1], i - 1, (string.gsub(rec, '^(%d+):0:', '%1:1:', 1)))
      table.insert(out, rec)
    end
    break
  end
end
table.insert(out, 1, tostring(found))
return out
"#,
    )
});

/// KEYS: stat hashes. ARGV: the step index of each. Counts a conversion where the step still holds sends
/// (not after the key was reset by a trip or a lift).
static COUNT_CONVERSION: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
for i = 1, #KEYS do
  if redis.call('HEXISTS', KEYS[i], 's' .. ARGV[i]) == 1 then redis.call('HINCRBY', KEYS[i], 'c' .. ARGV[i], 1) end
end
return 0
"#,
    )
});

/// KEYS: blocks hash. ARGV: now, expire ('1': delete ended blocks and return them; '0': read only).
/// Returns `b:<field>:<until>` for live blocks and `l:<field>` for the ended ones it deleted.
static BLOCKS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local now = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for j = 1, #all, 2 do
  if tonumber(all[j + 1]) > now then
    table.insert(out, 'b:' .. all[j] .. ':' .. all[j + 1])
  elseif ARGV[2] == '1' then
    redis.call('HDEL', KEYS[1], all[j])
    table.insert(out, 'l:' .. all[j])
  end
end
return out
"#,
    )
});

/// What a record or a receipt key holds besides the time: the key source, SerialNo and request id.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(flatten)]
    source: KeySource,
    s: String,
    r: String,
}

fn hex16(bytes: &[u8]) -> String {
    hex::encode(&bytes[..16])
}

/// HMAC of the number under the deployment's storage key (what Redis holds instead of the number).
fn number_hmac(storage: &StorageKey, tenant: &Tenant, digits: u64) -> String {
    storage.hex16(&[b"feedback", tenant.name.as_bytes(), digits.to_string().as_bytes()])
}

fn number_key(tenant: &Tenant, hmac: &str) -> String {
    format!("smsgate:{{{}}}:fb:n:{hmac}", tenant.name)
}

fn receipt_key(tenant: &Tenant, serial: &str) -> String {
    format!("smsgate:{{{}}}:fb:s:{}", tenant.name, hex16(&Sha256::digest(serial.as_bytes())))
}

fn blocks_key(tenant: &Tenant) -> String {
    format!("smsgate:{{{}}}:fb:blocks", tenant.name)
}

fn stat_key(tenant: &Tenant, rule: u64, key: u64) -> String {
    format!("smsgate:{{{}}}:fb:p:{rule:016x}:{key:x}", tenant.name)
}

fn field(rule: u64, key: u64) -> String {
    format!("{rule:016x}:{key:x}")
}

fn parse_field(text: &str) -> Option<(u64, u64)> {
    let (rule, key) = text.split_once(':')?;
    Some((u64::from_str_radix(rule, 16).ok()?, u64::from_str_radix(key, 16).ok()?))
}

fn request_hash(request_id: &str) -> String {
    hex::encode(&Sha256::digest(request_id.as_bytes())[..8])
}

fn step_ms(rule: &ProtectionRule, conversion: &ConversionSettings) -> u64 {
    let window = rule.window.as_millis() as u64;
    (conversion.window.as_millis() as u64 / 4).max(window / 64).max(1000)
}

/// The call that records a send and judges its keys.
#[allow(clippy::too_many_arguments)]
fn record_call(
    storage: &StorageKey,
    tenant: &Tenant,
    conversion: &ConversionSettings,
    source: &KeySource,
    digits: u64,
    request_id: &str,
    serial: &str,
    now: u64,
) -> Call<'static> {
    let hmac = number_hmac(storage, tenant, digits);
    let stored = serde_json::to_string(&Stored { source: *source, s: serial.to_owned(), r: request_id.to_owned() })
        .expect("serializes");
    let record = format!("{now}:0:{}:{stored}", request_hash(request_id));
    let remember = conversion.remember_for.as_millis() as u64;
    let mut invocation = Call::new(&RECORD);
    invocation.key(number_key(tenant, &hmac)).key(receipt_key(tenant, serial)).key(blocks_key(tenant));
    invocation.arg(now).arg(remember).arg(record);
    invocation.arg(if serial.is_empty() { String::new() } else { format!("{hmac}:{now}:{stored}") });
    invocation.arg(conversion.window.as_millis() as u64).arg(tenant.protection.len());
    for rule in &tenant.protection {
        let key = source.key(rule.key);
        let step = step_ms(rule, conversion);
        invocation.key(stat_key(tenant, rule.id, key));
        invocation
            .arg(field(rule.id, key))
            .arg(step)
            .arg(rule.window.as_millis() as u64)
            .arg(rule.min_sends)
            .arg(rule.min_conversion_ppm)
            .arg(rule.block_for.as_millis() as u64)
            .arg(now / step);
    }
    invocation.arg(PER_NUMBER);
    invocation
}

/// Records an accepted send and judges its keys; the trips and lifts it caused.
#[allow(clippy::too_many_arguments)]
pub(super) async fn record(
    store: &RedisStore,
    tenant: &Tenant,
    conversion: &ConversionSettings,
    source: &KeySource,
    digits: u64,
    request_id: &str,
    serial: &str,
    now: u64,
) -> Result<Vec<Event>, RedisError> {
    let invocation = record_call(store.storage_key(), tenant, conversion, source, digits, request_id, serial, now);
    let out: Vec<String> = store.run_script(invocation).await?;
    let mut events = Vec::new();
    for line in out {
        let parts: Vec<&str> = line.split(':').collect();
        let rule = parts.get(1).and_then(|i| i.parse::<usize>().ok()).and_then(|i| i.checked_sub(1));
        let Some((rule, protection)) = rule.and_then(|i| tenant.protection.get(i).map(|r| (i, r))) else { continue };
        let key = source.key(protection.key);
        let number = |i: usize| parts.get(i).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        match parts[0] {
            "t" => events.push(Event::Tripped {
                rule,
                key,
                sends: number(2) as u32,
                converted: number(3) as u32,
                excess: 0,
                strike: 1,
                until_ms: number(4),
            }),
            "l" => events.push(Event::Lifted { rule, key }),
            _ => {}
        }
    }
    Ok(events)
}

fn parse_stored(at_ms: u64, json: &str) -> Option<SendInfo> {
    let stored: Stored = serde_json::from_str(json).ok()?;
    Some(SendInfo { at_ms, source: stored.source, serial: stored.s, request_id: stored.r })
}

/// Marks the sends to the number within the window converted (only `request_id`'s when given), and counts
/// them for the tenant's protection keys. Returns how many sends it found and those it marked.
pub(super) async fn convert(
    store: &RedisStore,
    tenant: &Tenant,
    conversion: &ConversionSettings,
    digits: u64,
    request_id: Option<&str>,
    now: u64,
) -> Result<(usize, Vec<SendInfo>), RedisError> {
    let call = convert_call(store.storage_key(), tenant, conversion, digits, request_id, now);
    let out: Vec<String> = store.run_script(call).await?;
    let found = out.first().and_then(|n| n.parse().ok()).unwrap_or(0);
    let converted: Vec<SendInfo> = out
        .iter()
        .skip(1)
        .filter_map(|rec| {
            let mut parts = rec.splitn(4, ':');
            let at = parts.next()?.parse().ok()?;
            parse_stored(at, parts.nth(2)?)
        })
        .collect();
    if !tenant.protection.is_empty() && !converted.is_empty() {
        store.run_script::<i64>(count_conversion_call(tenant, conversion, &converted)).await?;
    }
    Ok((found, converted))
}

fn convert_call(
    storage: &StorageKey,
    tenant: &Tenant,
    conversion: &ConversionSettings,
    digits: u64,
    request_id: Option<&str>,
    now: u64,
) -> Call<'static> {
    let hmac = number_hmac(storage, tenant, digits);
    let mut invocation = Call::new(&CONVERT);
    invocation.key(number_key(tenant, &hmac));
    invocation.arg(now).arg(conversion.window.as_millis() as u64).arg(request_id.map(request_hash).unwrap_or_default());
    invocation
}

fn count_conversion_call(tenant: &Tenant, conversion: &ConversionSettings, converted: &[SendInfo]) -> Call<'static> {
    let mut invocation = Call::new(&COUNT_CONVERSION);
    for send in converted {
        for rule in &tenant.protection {
            invocation.key(stat_key(tenant, rule.id, send.source.key(rule.key)));
            invocation.arg(send.at_ms / step_ms(rule, conversion));
        }
    }
    invocation
}

/// The sends delivery receipts name, in order: `(SerialNo, E.164 digits)` -> the send, when this tenant made
/// it to that number.
pub(super) async fn receipts(
    store: &RedisStore,
    tenant: &Tenant,
    wanted: &[(&str, u64)],
) -> Result<Vec<Option<SendInfo>>, RedisError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let (values,): (Vec<Option<String>>,) = store.run_pipeline(receipts_pipeline(tenant, wanted)).await?;
    Ok(values
        .into_iter()
        .zip(wanted)
        .map(|(value, (_, digits))| {
            let value = value?;
            let mut parts = value.splitn(3, ':');
            let (hmac, at, json) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?);
            (hmac == number_hmac(store.storage_key(), tenant, *digits)).then(|| parse_stored(at, json)).flatten()
        })
        .collect())
}

/// Marks each SerialNo's receipt as counted, for `remember_ms`; true for each the first to do so (a repeat
/// within the call, or of an earlier call on any replica, is false).
pub(crate) async fn first_receipts(
    store: &RedisStore,
    tenant: &Tenant,
    serials: &[&str],
    remember_ms: u64,
) -> Result<Vec<bool>, RedisError> {
    if serials.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for serial in serials {
        pipe.cmd("SET").arg(format!("{}:r", receipt_key(tenant, serial))).arg(1).arg("NX").arg("PX").arg(remember_ms);
    }
    let set: Vec<Option<String>> = store.run_pipeline(pipe).await?;
    Ok(set.into_iter().map(|s| s.is_some()).collect())
}

/// One `MGET` of the receipt keys (all under the tenant's tag: one slot).
fn receipts_pipeline(tenant: &Tenant, wanted: &[(&str, u64)]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    let mut get = redis::cmd("MGET");
    for (serial, _) in wanted {
        get.arg(receipt_key(tenant, serial));
    }
    pipe.add_command(get);
    pipe
}

/// The tenant's live blocks `(rule id, key, until)` and, when `expire`, the ended ones this call deleted
/// (each is returned to exactly one caller, which logs the lift).
pub(super) async fn blocks(
    store: &RedisStore,
    tenant: &Tenant,
    now: u64,
    expire: bool,
) -> Result<(Vec<(u64, u64, u64)>, Vec<(u64, u64)>), RedisError> {
    let mut invocation = Call::new(&BLOCKS);
    invocation.key(blocks_key(tenant)).arg(now).arg(if expire { "1" } else { "0" });
    let out: Vec<String> = store.run_script(invocation).await?;
    let (mut live, mut lifted) = (Vec::new(), Vec::new());
    for line in out {
        if let Some(rest) = line.strip_prefix("b:") {
            let Some((field, until)) = rest.rsplit_once(':') else { continue };
            if let (Some((rule, key)), Ok(until)) = (parse_field(field), until.parse()) {
                live.push((rule, key, until));
            }
        } else if let Some((rule, key)) = line.strip_prefix("l:").and_then(parse_field) {
            lifted.push((rule, key));
        }
    }
    Ok((live, lifted))
}

/// Lifts a block (an operator's call) and starts the key afresh; whether a block was there.
pub(super) async fn lift(store: &RedisStore, tenant: &Tenant, rule: u64, key: u64) -> Result<bool, RedisError> {
    let (removed,): (i64,) = store.run_pipeline(lift_pipeline(tenant, rule, key)).await?;
    Ok(removed > 0)
}

fn lift_pipeline(tenant: &Tenant, rule: u64, key: u64) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd("HDEL").arg(blocks_key(tenant)).arg(field(rule, key));
    pipe.cmd("DEL").arg(stat_key(tenant, rule, key)).ignore();
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant `acme` with the feedback loop and two protection rules.
    fn acme() -> crate::Config {
        crate::Config::from_yaml(
            r#"
tenants:
  acme:
    tokens: ["token-for-acme-00001"]
    conversion: {}
    protection:
      - { name: prefix, key: { phone_prefix: 6 }, window: 1h, min_sends: 3, min_conversion: 0.5, block_for: 30m }
      - { name: country, key: country, window: 1h, min_sends: 3, min_conversion: 0.5, block_for: 30m }
    tencent: { accessKeyId: a, accessKeySecret: secret-b, sdkAppId: "1", region: ap-guangzhou,
               templates: [{ usageType: Generic, templateCode: "1" }] }
"#,
            std::path::Path::new("t.yaml"),
            &std::collections::HashMap::new(),
        )
        .unwrap()
    }

    #[test]
    fn fields_round_trip_and_keys_share_the_tenant_tag() {
        assert_eq!(parse_field(&field(0xab, 0x1234)), Some((0xab, 0x1234)));
        assert_eq!(parse_field("zz:1"), None);
        let config = acme();
        let tenant = config.tenant("acme").unwrap();
        let hmac = number_hmac(&StorageKey::new(b"test-storage-key"), tenant, 8613800138000);
        assert_eq!(hmac.len(), 32);
        assert!(!hmac.contains("13800138000"));
        for key in
            [number_key(tenant, &hmac), receipt_key(tenant, "2019:0"), blocks_key(tenant), stat_key(tenant, 1, 2)]
        {
            assert!(key.starts_with("smsgate:{acme}:fb:"), "{key}");
        }
    }

    /// Every script call and pipeline of the feedback loop keeps all its keys under the tenant's tag.
    #[test]
    fn every_call_keeps_its_keys_in_one_slot() {
        use crate::policy::{hash_tag, one_slot, pipeline_keys};
        let config = acme();
        let tenant = config.tenant("acme").unwrap();
        let conversion = tenant.conversion.as_ref().expect("conversion configured");
        let source = KeySource { country: *b"CN", stem: 861380013, stem_len: 9 };
        let storage = StorageKey::new(b"test-storage-key");
        let send = SendInfo { at_ms: 1_000, source, serial: "2019:1".into(), request_id: "r1".into() };
        let calls = [
            record_call(&storage, tenant, conversion, &source, 8613800138000, "r1", "2019:1", 5_000),
            convert_call(&storage, tenant, conversion, 8613800138000, Some("r1"), 5_000),
            count_conversion_call(tenant, conversion, &[send.clone(), send]),
        ];
        for call in &calls {
            assert!(call.keys().iter().all(|k| hash_tag(k.as_bytes()) == b"acme"), "{:?}", call.keys());
        }
        assert_eq!(calls[0].keys().len(), 3 + tenant.protection.len());
        for pipe in [receipts_pipeline(tenant, &[("2019:1", 1), ("2019:2", 2)]), lift_pipeline(tenant, 1, 2)] {
            let keys = pipeline_keys(&pipe);
            assert!(keys.len() >= 2 && one_slot(&keys), "{keys:?}");
            assert!(keys.iter().all(|k| hash_tag(k) == b"acme"), "{keys:?}");
        }
    }
}
