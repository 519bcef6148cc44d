#!/usr/bin/env bash
# The packaging checks, in parallel, each timed: the container image built and run from its exported root
# filesystem (.ci/image_test.sh), the Kubernetes example validated against the API schemas
# (kubernetes-validate --strict, and a broken copy refused), and the systemd unit checked by
# `systemd-analyze verify` (where systemd-analyze exists). The Prometheus checks (promtool, a real
# Prometheus) are integration tests: tests/deploy.rs. Prints one line per check with its time; fails if any
# check fails, after all have ended.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

kubernetes() {
  "$PYTHON" -m kubernetes_validate --strict --quiet deploy/kubernetes/*.yaml || return 1
  # The validator must refuse a mistake: a misspelled securityContext field.
  local broken=$LOGS/broken-deployment.yaml
  sed 's/readOnlyRootFilesystem/readOnlyRootFileSystem/' deploy/kubernetes/deployment.yaml > "$broken"
  if "$PYTHON" -m kubernetes_validate --strict --quiet "$broken" >/dev/null 2>&1; then
    echo "kubernetes-validate accepted a misspelled field" >&2
    return 1
  fi
}

systemd_unit() {
  if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "systemd-analyze not installed: skipped"
    return 0
  fi
  # A root with the unit, the binaries it names and the distribution's units (verify resolves them).
  local root=$LOGS/systemd-root
  mkdir -p "$root/usr/local/bin" "$root/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
  cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
  cp /bin/true "$root/usr/local/bin/smsgate"
  cp /bin/kill "$root/bin/kill"
  cp deploy/systemd/smsgate.service "$root/etc/systemd/system/"
  local out
  out=$(systemd-analyze verify --man=no --root="$root" "$root/etc/systemd/system/smsgate.service" 2>&1) || { echo "$out"; return 1; }
  # Warnings (an unknown key, a bad value) do not change the exit status: any output is a failure.
  if [ -n "$out" ]; then echo "$out"; return 1; fi
  systemd-analyze security --offline=yes --root="$root" --no-pager --threshold=20 \
    "$root/etc/systemd/system/smsgate.service" | tail -n 1
}

image() {
  bash .ci/image_test.sh
}

pids=()
# CHECKS="kubernetes systemd_unit" runs a subset.
read -r -a names <<< "${CHECKS:-image kubernetes systemd_unit}"
for name in "${names[@]}"; do
  ( start=$(date +%s); "$name" > "$LOGS/$name.log" 2>&1; rc=$?
    echo "$rc $(( $(date +%s) - start ))" > "$LOGS/$name.rc" ) &
  pids+=($!)
done
wait "${pids[@]}"

failed=0
for name in "${names[@]}"; do
  read -r rc seconds < "$LOGS/$name.rc"
  if [ "$rc" = 0 ]; then
    echo "deploy check $name: ok in ${seconds} s ($(tail -n 1 "$LOGS/$name.log"))"
  else
    echo "deploy check $name: FAILED (exit $rc) after ${seconds} s:"
    sed 's/^/  /' "$LOGS/$name.log"
    failed=1
  fi
done
exit "$failed"
