#!/usr/bin/env bash
# The container image, tested from the inside without running a container (containers cannot run on the CI
# machines): build it with scripts/image.sh, export its root filesystem, and run its entrypoint from that
# tree with chroot, as the image's user and with the image's environment only, against an https mock Tencent
# (.ci/mock_tencent.py) reached by host name. So the image's libraries, its name resolution (/etc/hosts via
# nsswitch.conf), its CA roots and its default config are what is tested:
#   1. `check` of the shipped /etc/smsgate/gateway.yaml (the image's default config) passes;
#   2. a send to the mock, whose test CA is NOT in the image's roots, is refused by TLS (503), nothing sent;
#   3. with the test CA appended to the image's /etc/ssl/certs/ca-certificates.crt: 200 sent, the mock saw a
#      valid TC3 signature for Host sms.mock-tencent.test; the process ran as uid 65532; SIGTERM exits 0.
# Needs podman, openssl, curl, python3, root (chroot). PODMAN overrides the podman command.
set -euo pipefail
cd "$(dirname "$0")/.."
export PODMAN=${PODMAN:-podman --storage-driver vfs}
WORK=$(mktemp -d)
HOST=sms.mock-tencent.test
SECRET=image-test-secret-key-0001
TOKEN=image-test-token-0001
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "image_test: FAIL: $*" >&2; exit 1; }
step() { echo "image_test: $*"; }

t0=$(date +%s)
IMAGE=$(scripts/image.sh | tail -n1)
step "built $IMAGE in $(( $(date +%s) - t0 )) s"

# What the image declares.
USER_=$($PODMAN image inspect --format '{{.Config.User}}' "$IMAGE")
[ "$USER_" = "65532:65532" ] || fail "image user is '$USER_', not 65532:65532"
mapfile -t ENTRYPOINT < <($PODMAN image inspect --format '{{range .Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
[ "${ENTRYPOINT[0]}" = /usr/local/bin/smsgate ] || fail "entrypoint is '${ENTRYPOINT[*]}'"
mapfile -t IMAGE_ENV < <($PODMAN image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
SIZE=$($PODMAN image inspect --format '{{.Size}}' "$IMAGE")
step "image: user $USER_, entrypoint ${ENTRYPOINT[*]}, $(( SIZE / 1024 / 1024 )) MiB"

# Its root filesystem.
ROOT=$WORK/root
mkdir -p "$ROOT"
cid=$($PODMAN create "$IMAGE")
$PODMAN export "$cid" | tar -x -C "$ROOT"
$PODMAN rm "$cid" >/dev/null
for shell in bin/sh bin/bash usr/bin/sh usr/bin/bash bin/busybox; do
  [ ! -e "$ROOT/$shell" ] || fail "the image has a shell: /$shell"
done
[ -s "$ROOT/etc/smsgate/gateway.yaml" ] || fail "no /etc/smsgate/gateway.yaml"

# Runs the entrypoint in the tree as the image's user with the image's environment (nothing of the host's).
# Usage: in_image [VAR=value...] -- ARGS...
CHROOT=$(command -v chroot)
in_image() {
  local extra=()
  while [ "$1" != -- ]; do extra+=("$1"); shift; done
  shift
  env -i "${IMAGE_ENV[@]}" "${extra[@]}" "$CHROOT" --userspec=65532:65532 "$ROOT" "${ENTRYPOINT[@]}" "$@"
}

# 1. The default config, through SMSGATE_CONFIG from the image.
in_image -- check >/dev/null || fail "check of the shipped config failed"
step "check of /etc/smsgate/gateway.yaml: ok"

# A test CA and a certificate for the mock's host name.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=smsgate image test CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$HOST" \
  -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$HOST" > "$WORK/ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 2 \
  -extfile "$WORK/ext" -out "$WORK/server.pem" 2>/dev/null

python3 .ci/mock_tencent.py "$WORK/server.pem" "$WORK/server.key" "$SECRET" > "$WORK/mock.out" &
pids+=($!)
for _ in $(seq 100); do grep -q '^port ' "$WORK/mock.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(sed -n 's/^port //p' "$WORK/mock.out")
[ -n "$PORT" ] || fail "the mock did not start"

# The mock by host name, resolved inside the image.
printf '127.0.0.1 localhost\n127.0.0.1 %s\n' "$HOST" > "$ROOT/etc/hosts"
cat > "$ROOT/etc/smsgate/image-test.yaml" <<YAML
server:
  listen: 127.0.0.1:0
tenants:
  acme:
    tokens: ["$TOKEN"]
    tencent:
      accessKeyId: AKIDimagetest
      accessKeySecret: \${IMAGE_TEST_SECRET}
      signName: Test
      sdkAppId: "1400000001"
      region: ap-guangzhou
      templates: [{ usageType: Generic, templateCode: "1" }]
      endpoint: https://$HOST:$PORT
      timeout: 5s
YAML

# Starts the gateway from the image on the test config; sets GW_PID and ADDR.
start_gateway() {
  : > "$WORK/gw.log"
  # Not through in_image: $! must be the process itself (env execs chroot, which execs the entrypoint).
  env -i "${IMAGE_ENV[@]}" IMAGE_TEST_SECRET="$SECRET" "$CHROOT" --userspec=65532:65532 "$ROOT" "${ENTRYPOINT[@]}" \
    serve --config /etc/smsgate/image-test.yaml --log-format json 2> "$WORK/gw.log" &
  GW_PID=$!
  pids+=("$GW_PID")
  ADDR=
  for _ in $(seq 200); do
    ADDR=$(grep -o '"addr":"[^"]*"' "$WORK/gw.log" | head -n1 | cut -d'"' -f4) && [ -n "$ADDR" ] && break
    kill -0 "$GW_PID" 2>/dev/null || fail "the gateway exited: $(cat "$WORK/gw.log")"
    sleep 0.1
  done
  [ -n "$ADDR" ] || fail "the gateway did not start: $(cat "$WORK/gw.log")"
}
send() {
  curl -s -o "$WORK/answer" -w '%{http_code}' "http://$ADDR/v1/sms/send" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d "{\"phone\":\"+8613800138000\",\"usage\":\"SignIn\",\"code\":\"$1\"}"
}
stop_gateway() {
  kill -TERM "$GW_PID"
  wait "$GW_PID" || fail "the gateway exited $? on SIGTERM: $(cat "$WORK/gw.log")"
}

# 2. The test CA is not among the image's roots yet: TLS refuses the mock, nothing reaches it.
start_gateway
status=$(send 111111)
[ "$status" = 503 ] || fail "without the CA: $status $(cat "$WORK/answer")"
[ "$(grep -c '"action"' "$WORK/mock.out" || true)" = 0 ] || fail "the mock was reached without the CA"
stop_gateway
step "without the test CA in the image's roots: 503, nothing sent"

# 3. With it appended to the image's bundle.
cat "$WORK/ca.pem" >> "$ROOT/etc/ssl/certs/ca-certificates.crt"
start_gateway
uid=$(awk '/^Uid:/{print $2}' "/proc/$GW_PID/status")
[ "$uid" = 65532 ] || fail "the gateway runs as uid $uid"
status=$(send 222222)
[ "$status" = 200 ] || fail "with the CA: $status $(cat "$WORK/answer") $(cat "$WORK/gw.log")"
grep -q '"status":"sent"' "$WORK/answer" || fail "answer $(cat "$WORK/answer")"
line=$(grep '"action"' "$WORK/mock.out" | tail -n1)
echo "$line" | grep -q '"signature_valid": true' || fail "mock saw $line"
echo "$line" | grep -q "\"host\": \"$HOST:$PORT\"" || fail "mock saw $line"
metrics=$(curl -sf "http://$ADDR/metrics") || fail "no /metrics"
grep -q '^smsgate_requests_total{tenant="acme",usage="Generic",code="sent"} 1' <<< "$metrics" || fail "metrics: $metrics"
stop_gateway
step "with the test CA: 200 sent, signature valid for $HOST, uid 65532, SIGTERM exit 0"
step "ok in $(( $(date +%s) - t0 )) s"
