#!/usr/bin/env bash
# Load test on one machine: smsgate vs the client talking to a Tencent stand-in directly vs nginx proxying
# to it, in the same run. Installs what it needs (wrk and nginx from Debian, oha from crates.io), builds
# release, and runs each scenario for a bounded time against 127.0.0.1 only.
#
#   bash bench/load.sh                 # all scenarios, 10 s each
#   DURATION=5 bash bench/load.sh      # shorter
#
# Scenarios: (a) accepted sends to distinct numbers, 3-rule phone policy and the premium_block.lua hook;
# (b) the same with the Redis backend; (c) a flood to one number under the 3-rule policy, denied with 429,
# without a hook (the shape of nginx's limit_req front) and again with it; (d) random numbers against a
# tenant-wide limit. For each: requests/s, p50/p99 latency, and the server's CPU time per request (from
# /proc/PID/stat before and after). Servers are pinned to CPU 0, load generator and stand-in to CPU 1, and
# smsgate and nginx each get one worker, so the CPU-per-request ratios compare like with like.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx || [ ! -f /usr/share/nginx/modules/ngx_http_lua_module.so ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
  # The nginx + Lua baseline row; the run goes on without it where the package is missing.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnginx-mod-http-lua >/dev/null || true
  nginx -s stop 2>/dev/null || true   # the package starts a system nginx; the runs use their own
fi
need oha || cargo install oha --locked --quiet
need redis-server || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
cargo build --release --quiet --bin smsgate
BIN=${SMSGATE_BIN:-target/release/smsgate}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in clock ticks
HZ=$(getconf CLK_TCK)

P_STANDIN=$(port); P_NGINX=$(port); P_NGINX_LUA=$(port); P_GATE=$(port); P_GATE_REDIS=$(port); P_REDIS=$(port)

# Tencent stand-in: nginx answering a fixed SendSms success, on the load generator's core (CPU 1).
ANSWER='{"Response":{"SendStatusSet":[{"SerialNo":"2433:3283298393123","PhoneNumber":"+8613800138000","Fee":1,"SessionContext":"","Code":"Ok","Message":"send success","IsoCode":"CN"}],"RequestId":"a0aabda6-cf91-4f3e-a81f-9198114a2279"}}'
mkdir -p "$WORK/standin" "$WORK/proxy"
cat > "$WORK/standin/nginx.conf" <<NGINX
worker_processes 1;
worker_cpu_affinity 10;
daemon off;
pid $WORK/standin/nginx.pid;
error_log $WORK/standin/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$P_STANDIN;
    location / { default_type application/json; client_body_buffer_size 16k; return 200 '$ANSWER'; }
  }
}
NGINX
nginx -c "$WORK/standin/nginx.conf" -p "$WORK/standin" & PIDS+=($!)
wait_port "$P_STANDIN"
STANDIN_PID=$(pgrep -P "$(cat "$WORK/standin/nginx.pid")" | head -1)

# The baselines smsgate is compared with, on CPU 0 with one worker like smsgate: nginx as a plain keep-alive
# reverse proxy (does no work), and nginx + Lua judging the same 3 phone rules as smsgate's (GCRA in a shared
# dict, keyed on the phone read from the JSON body) before proxying, 429 otherwise. keepalive_requests is
# raised on both sides: nginx's default (1000) closes and reopens keep-alive connections every 1000 requests.
LUA_MODULE=""
if [ -f /usr/share/nginx/modules/ngx_http_lua_module.so ]; then
  LUA_MODULE="load_module /usr/share/nginx/modules/ndk_http_module.so; load_module /usr/share/nginx/modules/ngx_http_lua_module.so;"
fi
cat > "$WORK/proxy/nginx.conf" <<NGINX
$LUA_MODULE
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
pid $WORK/proxy/nginx.pid;
error_log $WORK/proxy/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream standin { server 127.0.0.1:$P_STANDIN; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$P_NGINX;
    location / { proxy_pass http://standin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
$( [ -n "$LUA_MODULE" ] && cat <<LUA
  lua_shared_dict limits 64m;
  server {
    listen 127.0.0.1:$P_NGINX_LUA;
    location / {
      client_body_buffer_size 16k;
      access_by_lua_block {
        ngx.req.read_body()
        local body = ngx.req.get_body_data() or ""
        local phone = body:match('"phone":"([^"]+)"')
        if not phone then return ngx.exit(400) end
        local dict, now = ngx.shared.limits, ngx.now() * 1000
        -- burst 1/30s, hourly 5/1h, daily 10/1d: GCRA, allowed only if every rule allows
        local rules = { { "b", 30000, 30000 }, { "h", 720000, 3600000 }, { "d", 8640000, 86400000 } }
        local tats = {}
        for i, r in ipairs(rules) do
          local tat = dict:get(r[1] .. phone) or now
          if tat < now then tat = now end
          if tat + r[2] - now > r[3] then
            ngx.status = 429
            ngx.header["Content-Type"] = "application/json"
            ngx.header["Retry-After"] = math.ceil((tat + r[2] - now - r[3]) / 1000)
            ngx.say('{"error":{"code":"rate_limited"}}')
            return ngx.exit(429)
          end
          tats[i] = tat + r[2]
        end
        for i, r in ipairs(rules) do dict:set(r[1] .. phone, tats[i], (tats[i] - now) / 1000) end
      }
      proxy_pass http://standin; proxy_http_version 1.1; proxy_set_header Connection "";
    }
  }
LUA
)
}
NGINX
nginx -c "$WORK/proxy/nginx.conf" -p "$WORK/proxy" & PIDS+=($!)
wait_port "$P_NGINX"
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/proxy/nginx.pid")" | head -1)

taskset -c 1 redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  --logfile "$WORK/redis.log" & PIDS+=($!)
wait_port "$P_REDIS"

# gateway CONFIG_FILE LISTEN_PORT BACKEND: the load tenants, with a 3-rule phone policy and a Lua hook.
write_config() {
  cat > "$1" <<YAML
server: { listen: "127.0.0.1:$2", max_body_bytes: 16384 }
limits_backend: $3
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
  latency:
    tokens: ["latency-token-0123456789"]
    tencent: *tencent
    dedupe_window: 0s
YAML
}
write_config "$WORK/gateway.yaml" "$P_GATE" "{ kind: memory }"
write_config "$WORK/gateway-redis.yaml" "$P_GATE_REDIS" "{ kind: redis, url: \"redis://127.0.0.1:$P_REDIS\", timeout: 200ms, key: bench-storage-key-0123456789abcdef }"
TOKIO_WORKER_THREADS=1 taskset -c 0 "$BIN" serve --config "$WORK/gateway.yaml" 2>"$WORK/smsgate.log" & PIDS+=($!)
GATE_PID=$!
TOKIO_WORKER_THREADS=1 taskset -c 0 "$BIN" serve --config "$WORK/gateway-redis.yaml" 2>"$WORK/smsgate-redis.log" & PIDS+=($!)
GATE_REDIS_PID=$!
wait_port "$P_GATE"; wait_port "$P_GATE_REDIS"

# wrk request generators: distinct numbers per request, or one number.
cat > "$WORK/distinct.lua" <<'LUA'
local counter = 0
function setup(thread) thread:set("base", math.random(0, 9000) * 10000) end
function request()
  counter = counter + 1
  local body = string.format('{"phone":"+86138%08d","usage":"SignIn","code":"123456"}', (base + counter) % 100000000)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }, body)
end
LUA
# One number, a new code each time (the same code would be a repeat, answered by de-duplication).
cat > "$WORK/one.lua" <<'LUA'
local counter = 0
function request()
  counter = counter + 1
  local body = string.format('{"phone":"+8613800138000","usage":"SignIn","code":"%d"}', counter % 1000000)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }, body)
end
LUA

# run NAME URL SCRIPT TOKEN PID: prints one result row.
run() {
  local name=$1 url=$2 script=$3 token=$4 pid=$5
  local lua="$WORK/run.lua"
  { echo "token = \"$token\""; cat "$script"; } > "$lua"
  local before; before=$(ticks "$pid")
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$lua" "$url" > "$WORK/wrk.out"
  case "$name" in "(a)"*) cp "$WORK/wrk.out" "$WORK/wrk-a.out" ;; esac
  local after; after=$(ticks "$pid")
  awk -v name="$name" -v cpu=$((after - before)) -v hz="$HZ" '
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
    /requests in/ { n = $1 }
    /Non-2xx/ { non2xx = $5 }
    END { printf "| %-34s | %10.0f | %8s | %8s | %9.1f | %8d |\n", name, rps, p50, p99, (n > 0 ? cpu / hz / n * 1e6 : 0), non2xx + 0 }
  ' "$WORK/wrk.out"
}

echo "smsgate load test: $(nproc) cores, ${DURATION}s per run, $CONNECTIONS connections, $(date -u +%FT%TZ)"
echo
echo "| run | req/s | p50 | p99 | server CPU µs/req | non-2xx |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
run "direct: client -> stand-in" "http://127.0.0.1:$P_STANDIN/" "$WORK/one.lua" x "$STANDIN_PID"
run "nginx -> stand-in" "http://127.0.0.1:$P_NGINX/" "$WORK/one.lua" x "$NGINX_WORKER"
if [ -n "$LUA_MODULE" ]; then
  run "nginx + Lua 3 rules, accepted, distinct" "http://127.0.0.1:$P_NGINX_LUA/" "$WORK/distinct.lua" x "$NGINX_WORKER"
  run "nginx + Lua 3 rules, flood one number" "http://127.0.0.1:$P_NGINX_LUA/" "$WORK/one.lua" x "$NGINX_WORKER"
fi
run "(a) smsgate accepted, distinct" "http://127.0.0.1:$P_GATE/v1/sms/send" "$WORK/distinct.lua" load-token-0123456789 "$GATE_PID"
redis_calls_before=$(redis-cli -p "$P_REDIS" info commandstats | awk -F'[=,]' '/cmdstat_evalsha/ {print $2}')
run "(b) smsgate accepted, redis backend" "http://127.0.0.1:$P_GATE_REDIS/v1/sms/send" "$WORK/distinct.lua" load-token-0123456789 "$GATE_REDIS_PID"
redis_calls_after=$(redis-cli -p "$P_REDIS" info commandstats | awk -F'[=,]' '/cmdstat_evalsha/ {print $2}')
upstream_calls() { python3 -c 'import sys,urllib.request; print(sum(float(l.split()[-1]) for l in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines() if l.startswith("smsgate_upstream_results_total")))' "http://127.0.0.1:$P_GATE/metrics"; }
upstream_before=$(upstream_calls)
run "(c) smsgate flood one number, 429" "http://127.0.0.1:$P_GATE/v1/sms/send" "$WORK/one.lua" guard-token-0123456789 "$GATE_PID"
run "(c+hook) the same with the Lua hook" "http://127.0.0.1:$P_GATE/v1/sms/send" "$WORK/one.lua" load-token-0123456789 "$GATE_PID"
upstream_after=$(upstream_calls)
run "(d) smsgate random numbers, tenant" "http://127.0.0.1:$P_GATE/v1/sms/send" "$WORK/distinct.lua" flood-token-0123456789 "$GATE_PID"
echo
echo "(c) and (d) are meant to be mostly 429s: their non-2xx column counts the denials."
echo "(c) upstream calls during (c) and (c+hook): $(python3 -c "print(int($upstream_after - $upstream_before))") (the first request of each run is accepted)"
echo "(b) Redis EVALSHA calls during the run: $(( ${redis_calls_after:-0} - ${redis_calls_before:-0} )) (one per limiter decision; compare with the run's request count)"

# Added latency at half of smsgate's saturation rate: constant-rate load (oha -q) on the direct path and on
# smsgate (a tenant with no limits and no de-duplication, so every request is sent upstream).
sat=$(awk '/Requests\/sec/ {print int($2)}' "$WORK/wrk-a.out" 2>/dev/null || echo 2000)
rate=$(( sat / 2 ))
latency() {
  taskset -c 1 oha --no-tui -q "$rate" -z "${DURATION}s" -c "$CONNECTIONS" -m POST \
    -H "Authorization: Bearer latency-token-0123456789" -T application/json \
    -d '{"phone":"+8613800138000","usage":"SignIn","code":"123456"}' --output-format json "$1" 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; print("%.3f %.3f" % (p["p50"]*1000, p["p99"]*1000))'
}
read -r d50 d99 < <(latency "http://127.0.0.1:$P_STANDIN/")
read -r n50 n99 < <(latency "http://127.0.0.1:$P_NGINX/")
read -r g50 g99 < <(latency "http://127.0.0.1:$P_GATE/v1/sms/send")
echo
echo "Constant rate $rate req/s (half of (a)), p50 / p99: direct ${d50} / ${d99} ms; nginx ${n50} / ${n99} ms;"
echo "smsgate ${g50} / ${g99} ms. Added p99 over direct: smsgate $(python3 -c "print('%.3f' % ($g99 - $d99))") ms," \
  "nginx $(python3 -c "print('%.3f' % ($n99 - $d99))") ms"
