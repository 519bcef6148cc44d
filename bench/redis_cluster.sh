#!/usr/bin/env bash
# Two smsgate replicas on one Redis Cluster (6 nodes: 3 primaries, 3 replicas, all on this machine), each
# loaded by its own wrk. Prints:
#   (a) distinct numbers over 8 tenants (spread over the slots): requests/s through both replicas, Redis
#       round trips per decision (every command counted by INFO commandstats on all primaries, divided by the
#       requests served), and Redis memory per tracked number (used_memory on the primaries before and
#       after, divided by the numbers admitted; keys per number from DBSIZE);
#   (b) one number flooded through both replicas at once: how many were admitted in total (must equal the
#       rule's limit exactly).
# Tencent is not called (dry_run): the figures are the gateway and Redis, not an upstream.
#
#   bash bench/redis_cluster.sh               # 10 s per scenario
#   DURATION=5 bash bench/redis_cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
FLOOD_LIMIT=${FLOOD_LIMIT:-50}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
need wrk || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
if ! need redis-server || ! need redis-cli; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release --quiet --bin smsgate
BIN=${SMSGATE_BIN:-target/release/smsgate}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# The cluster.
NODES=()
for i in 0 1 2 3 4 5; do
  p=$(port); bus=$(port); mkdir -p "$WORK/n$i"
  redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --cluster-enabled yes --cluster-port "$bus" \
    --cluster-node-timeout 2000 --dir "$WORK/n$i" --cluster-config-file nodes.conf >/dev/null 2>&1 & PIDS+=($!)
  NODES+=("$p")
done
for p in "${NODES[@]}"; do wait_port "$p"; done
redis-cli --cluster create $(for p in "${NODES[@]}"; do printf '127.0.0.1:%s ' "$p"; done) --cluster-replicas 1 --cluster-yes >/dev/null
for _ in $(seq 300); do
  ok=0; for p in "${NODES[@]}"; do redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' && ok=$((ok + 1)); done
  [ "$ok" = 6 ] && break; sleep 0.1
done
PRIMARIES=(); for p in "${NODES[@]}"; do redis-cli -p "$p" role | head -1 | grep -q master && PRIMARIES+=("$p"); done
SEEDS=$(printf '"redis://127.0.0.1:%s", ' "${NODES[0]}" "${NODES[1]}" "${NODES[2]}"); SEEDS=${SEEDS%, }

# Two replicas: 8 tenants with a per-number rule (distinct numbers), and `flood` whose number gets FLOOD_LIMIT.
gateway_yaml() {
  cat <<YAML
server: { listen: "127.0.0.1:$1" }
limits_backend: { kind: redis, cluster: [$SEEDS], on_error: deny, timeout: 200ms, key: bench-storage-key-0123456789abcdef }
tenants:
YAML
  for t in 0 1 2 3 4 5 6 7; do
    cat <<YAML
  t$t:
    tokens: ["bench-token-tenant-000$t"]
    dedupe_window: 0s
    tencent: { accessKeyId: AKIDbench, accessKeySecret: bench-secret-$t, sdkAppId: "1400006666", region: ap-guangzhou,
               templates: [{ usageType: Generic, templateCode: "1113" }], dry_run: true }
    limits:
      - { name: hourly, key: phone, limit: 5, per: 1h }
YAML
  done
  cat <<YAML
  flood:
    tokens: ["bench-token-flood-0000"]
    dedupe_window: 0s
    tencent: { accessKeyId: AKIDbench, accessKeySecret: bench-secret-f, sdkAppId: "1400006666", region: ap-guangzhou,
               templates: [{ usageType: Generic, templateCode: "1113" }], dry_run: true }
    limits:
      - { name: hourly, key: phone, limit: $FLOOD_LIMIT, per: 1h }
YAML
}
GATES=()
for r in a b; do
  p=$(port); gateway_yaml "$p" > "$WORK/gateway-$r.yaml"
  RUST_LOG=warn "$BIN" serve --config "$WORK/gateway-$r.yaml" 2>"$WORK/smsgate-$r.log" & PIDS+=($!)
  GATES+=("$p")
done
for p in "${GATES[@]}"; do wait_port "$p"; done

cat > "$WORK/distinct.lua" <<'LUA'
local counter = 0
function request()
  counter = counter + 1
  local n = (offset + counter) % 100000000
  local token = string.format("bench-token-tenant-000%d", n % 8)
  local body = string.format('{"phone":"+86138%08d","usage":"SignIn","code":"123456"}', n)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }, body)
end
LUA
cat > "$WORK/flood.lua" <<'LUA'
local counter = 0
function request()
  counter = counter + 1
  local body = string.format('{"phone":"+8613900139000","usage":"SignIn","code":"%d"}', counter % 1000000)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer bench-token-flood-0000" }, body)
end
LUA

# Round trips: the calls clients sent. commandstats also counts the commands a script runs inside Redis, so
# count EVALSHA/EVAL (one per script call) and the plain commands smsgate sends (SET/GET/DEL/MGET/HINCRBY/HDEL,
# which its scripts also use, hence measured in a run whose tenants use no de-duplication, spend caps or
# feedback: any plain command here would be an extra round trip).
calls() { local s=0; for p in "${PRIMARIES[@]}"; do
  c=$(redis-cli -p "$p" info commandstats | awk -F'[=,:]' '/^cmdstat_(evalsha|eval|script)[:]/ { s += $3 } END { print s + 0 }')
  s=$((s + c)); done; echo "$s"; }
total_processed() { local s=0; for p in "${PRIMARIES[@]}"; do s=$((s + $(redis-cli -p "$p" info stats | awk -F: '/^total_commands_processed:/ { print $2 + 0 }'))); done; echo "$s"; }
memory() { local s=0; for p in "${PRIMARIES[@]}"; do s=$((s + $(redis-cli -p "$p" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }'))); done; echo "$s"; }
keys() { local s=0; for p in "${PRIMARIES[@]}"; do s=$((s + $(redis-cli -p "$p" dbsize))); done; echo "$s"; }

# Warm-up (connections, scripts loaded on every node), then reset the counters.
for p in "${GATES[@]}"; do
  curl -s -o /dev/null -X POST "http://127.0.0.1:$p/v1/sms/send" -H 'Authorization: Bearer bench-token-tenant-0000' \
    -H 'content-type: application/json' -d '{"phone":"+8613700137000","usage":"SignIn","code":"1"}'
done
for p in "${PRIMARIES[@]}"; do redis-cli -p "$p" config resetstat >/dev/null; done

# (a) distinct numbers through both replicas at once.
CALLS0=$(calls); MEM0=$(memory); KEYS0=$(keys); TOTAL0=$(total_processed)
# Each wrk its own numbers (wrk's random generator starts from the same seed in every process).
{ echo "offset = 10000000"; cat "$WORK/distinct.lua"; } > "$WORK/distinct-a.lua"
{ echo "offset = 60000000"; cat "$WORK/distinct.lua"; } > "$WORK/distinct-b.lua"
wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/distinct-a.lua" "http://127.0.0.1:${GATES[0]}/v1/sms/send" > "$WORK/a.out" &
W=$!
wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/distinct-b.lua" "http://127.0.0.1:${GATES[1]}/v1/sms/send" > "$WORK/b.out"
wait "$W"
CALLS1=$(calls); MEM1=$(memory); KEYS1=$(keys); TOTAL1=$(total_processed)
total() { awk '/requests in/ { n += $1 } END { print n + 0 }' "$@"; }
non2xx() { awk '/Non-2xx/ { n += $5 } END { print n + 0 }' "$@"; }
rps() { awk '/Requests\/sec/ { r += $2 } END { printf "%.0f", r }' "$@"; }
N=$(total "$WORK/a.out" "$WORK/b.out"); BAD=$(non2xx "$WORK/a.out" "$WORK/b.out"); OK=$((N - BAD))
echo "(a) distinct numbers, 8 tenants, two replicas, ${DURATION}s each with $CONNECTIONS connections:"
echo "    requests/s (both replicas): $(rps "$WORK/a.out" "$WORK/b.out"); requests $N, non-2xx $BAD"
awk -v c=$((CALLS1 - CALLS0)) -v t=$((TOTAL1 - TOTAL0)) -v n="$N" 'BEGIN {
  printf "    script calls per decision (EVALSHA+EVAL+SCRIPT, all primaries): %.3f; total_commands_processed per decision (incl. the commands scripts run, INFO/DBSIZE of this script): %.2f\n", c / n, t / n }'
for p in "${PRIMARIES[@]}"; do redis-cli -p "$p" info commandstats | grep -E '^cmdstat_' | grep -vE 'cmdstat_(get|set|hsetnx|hget|hincrby|pexpire|info|config|dbsize|cluster|ping|command|client|role)[:]' | sed "s/^/    $p /"; done
awk -v m=$((MEM1 - MEM0)) -v k=$((KEYS1 - KEYS0)) -v n="$OK" 'BEGIN {
  printf "    numbers admitted %d, keys added %d (%.2f per number), used_memory +%d bytes: %.0f bytes per number, %.0f MiB per million\n", n, k, k / n, m, m / n, m / n * 1e6 / 1048576 }'

# (b) one number flooded through both replicas at once.
wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/flood.lua" "http://127.0.0.1:${GATES[0]}/v1/sms/send" > "$WORK/fa.out" &
W=$!
wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/flood.lua" "http://127.0.0.1:${GATES[1]}/v1/sms/send" > "$WORK/fb.out"
wait "$W"
N=$(total "$WORK/fa.out" "$WORK/fb.out"); BAD=$(non2xx "$WORK/fa.out" "$WORK/fb.out")
echo "(b) one number flooded through both replicas: requests/s $(rps "$WORK/fa.out" "$WORK/fb.out"), requests $N, admitted $((N - BAD)) (limit $FLOOD_LIMIT)"
echo "    mode switches logged: $(cat "$WORK"/smsgate-*.log | grep -c 'redis unavailable' || true)"
[ $((N - BAD)) = "$FLOOD_LIMIT" ] || { echo "FAIL: admitted $((N - BAD)) != limit $FLOOD_LIMIT" >&2; exit 1; }
