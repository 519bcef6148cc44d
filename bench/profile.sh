#!/usr/bin/env bash
# Profiles smsgate under one load shape with `perf record -g` (frame pointers) and prints the top frames, plus
# `perf stat` context switches and migrations. Same harness as bench/load.sh: nginx answering as Tencent on
# CPU 1 with wrk, smsgate on CPU 0.
#
#   bash bench/profile.sh accepted        # distinct numbers, 3 phone rules + the premium_block.lua hook
#   bash bench/profile.sh denied          # one number flooded, 3 phone rules, no hook (429s)
#   bash bench/profile.sh denied-hook     # the same with the hook
#   bash bench/profile.sh spray           # random numbers against a tenant-wide rule (429s)
#   SMSGATE_BIN=/path/to/smsgate DURATION=8 bash bench/profile.sh accepted
#   PERF_OUT=/tmp/denied.data bash bench/profile.sh denied   # keeps perf.data for `perf report -i`
#   SYSCALLS=1 bash bench/profile.sh denied                  # also counts recv/writev/epoll_wait/futex calls
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPE=${1:-accepted}
DURATION=${DURATION:-8}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }
command -v wrk >/dev/null && command -v nginx >/dev/null \
  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null; nginx -s stop 2>/dev/null || true; }
if [ -z "${SMSGATE_BIN:-}" ]; then
  RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release --quiet --bin smsgate --target-dir target/profile
  SMSGATE_BIN=target/profile/release/smsgate
fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; exit 1; }
P_STANDIN=$(port); P_GATE=$(port)
cat > "$WORK/standin.conf" <<NGINX
worker_processes 1; worker_cpu_affinity 10; daemon off; pid $WORK/standin.pid; error_log $WORK/standin.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$P_STANDIN; location / { default_type application/json;
    return 200 '{"Response":{"SendStatusSet":[{"SerialNo":"2433:3283298393123","PhoneNumber":"+8613800138000","Fee":1,"SessionContext":"","Code":"Ok","Message":"send success","IsoCode":"CN"}],"RequestId":"a0aabda6-cf91-4f3e-a81f-9198114a2279"}}'; } } }
NGINX
nginx -c "$WORK/standin.conf" -p "$WORK" & PIDS+=($!)
wait_port "$P_STANDIN"
cat > "$WORK/gateway.yaml" <<YAML
server: { listen: "127.0.0.1:$P_GATE" }
tenants:
  load:
    tokens: ["load-token-0123456789"]
    tencent: &tencent
      accessKeyId: AKIDload
      accessKeySecret: load-secret-key
      signName: Load
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates: [{ usageType: SignIn, templateCode: "1110" }, { usageType: Generic, templateCode: "1113" }]
      endpoint: http://127.0.0.1:$P_STANDIN
    script: $PWD/scripts/premium_block.lua
    limits: &phone_limits
      - { name: burst, key: phone, limit: 1, per: 30s }
      - { name: hourly, key: phone, limit: 5, per: 1h }
      - { name: daily, key: phone, limit: 10, per: 1d }
  guard:
    tokens: ["guard-token-0123456789"]
    tencent: *tencent
    limits: *phone_limits
  flood:
    tokens: ["flood-token-0123456789"]
    tencent: *tencent
    limits:
      - { name: tenant, key: tenant, limit: 100, per: 1s }
YAML
TOKIO_WORKER_THREADS=1 taskset -c 0 "$SMSGATE_BIN" serve --config "$WORK/gateway.yaml" 2>/dev/null & PIDS+=($!)
GATE_PID=$!
wait_port "$P_GATE"
case "$SHAPE" in
  accepted) TOKEN=load-token-0123456789; GEN=distinct ;;
  denied) TOKEN=guard-token-0123456789; GEN=one ;;
  denied-hook) TOKEN=load-token-0123456789; GEN=one ;;
  spray) TOKEN=flood-token-0123456789; GEN=distinct ;;
  *) echo "unknown shape $SHAPE" >&2; exit 2 ;;
esac
if [ "$GEN" = distinct ]; then
  BODY='string.format([[{"phone":"+86138%08d","usage":"SignIn","code":"123456"}]], (base + counter) % 100000000)'
else
  BODY='string.format([[{"phone":"+8613800138000","usage":"SignIn","code":"%d"}]], counter % 1000000)'
fi
cat > "$WORK/gen.lua" <<LUA
local counter = 0
function setup(thread) thread:set("base", math.random(0, 9000) * 10000) end
function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/sms/send", { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer $TOKEN" }, $BODY)
end
LUA
# Warm up (connections, pools, the first numbers), then measure.
taskset -c 1 wrk -t1 -c32 -d2s -s "$WORK/gen.lua" "http://127.0.0.1:$P_GATE" >/dev/null
taskset -c 1 wrk -t1 -c32 -d"$((DURATION + 2))s" -s "$WORK/gen.lua" "http://127.0.0.1:$P_GATE" > "$WORK/wrk.out" &
WRK=$!
sleep 1
EVENTS=task-clock,context-switches,cpu-migrations
[ -n "${SYSCALLS:-}" ] && EVENTS=$EVENTS,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex
perf stat -e "$EVENTS" -p "$GATE_PID" -- sleep "$DURATION" 2> "$WORK/stat.out" &
STAT=$!
perf record -F 2999 -g -p "$GATE_PID" -o "$WORK/perf.data" -- sleep "$DURATION" 2>/dev/null
wait "$WRK" "$STAT"
[ -n "${PERF_OUT:-}" ] && cp "$WORK/perf.data" "$PERF_OUT"
echo "== $SHAPE: $(awk '/Requests\/sec/ {print $2 " req/s"}' "$WORK/wrk.out")"
grep -E "task-clock|context-switches|cpu-migrations|syscalls" "$WORK/stat.out"
echo "== top frames (self), perf report --no-children"
perf report -i "$WORK/perf.data" --no-children --stdio --percent-limit 0.7 -g none 2>/dev/null | grep -E "^ +[0-9]" | head -45
echo "== inclusive (children)"
perf report -i "$WORK/perf.data" --children --stdio --percent-limit 2 -g none 2>/dev/null | grep -E "^ +[0-9]" | grep smsgate | head -45
