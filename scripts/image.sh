#!/usr/bin/env bash
# Builds the smsgate container image with podman from what this repository builds: the release binary
# (cargo build --release), the shared libraries `ldd` lists for it, the host's CA bundle, and the shipped
# gateway.yaml with its scripts, staged in target/image/rootfs and copied FROM scratch by ./Containerfile.
#
#   scripts/image.sh                     # -> localhost/smsgate:<version>, and :latest
#   IMAGE=registry.example.com/smsgate:1.2 scripts/image.sh
#   PODMAN="podman --storage-driver vfs" scripts/image.sh     # where overlayfs is not available (CI)
#   SKIP_CARGO_BUILD=1 scripts/image.sh  # the binary is already in target/release
#
# Prints the image name on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

PODMAN=${PODMAN:-podman}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
IMAGE=${IMAGE:-localhost/smsgate:$VERSION}
STAGE=target/image
ROOT=$STAGE/rootfs

if [ -z "${SKIP_CARGO_BUILD:-}" ]; then
  cargo build --release --locked --bin smsgate
fi
BIN=target/release/smsgate

rm -rf "$STAGE"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc/ssl/certs" "$ROOT/etc/smsgate"
# The binary without its debug sections (symbols stay, so backtraces still name functions).
objcopy --strip-debug "$BIN" "$ROOT/usr/local/bin/smsgate"

# Every shared library the binary loads, the dynamic loader included, at the path ldd resolved it to.
ldd "$BIN" | awk '/=> \//{print $3} /^\s*\//{print $1}' | while read -r lib; do
  cp --parents -L "$lib" "$ROOT/"
done
if ldd "$BIN" | grep -q 'not found'; then
  echo "image.sh: a library of $BIN was not found" >&2
  exit 1
fi

# CA roots for outbound TLS (Tencent, webhooks, rediss://): the host's bundle (Debian's ca-certificates).
BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [ ! -s "$BUNDLE" ]; then
  echo "image.sh: no CA bundle at $BUNDLE (apt-get install ca-certificates, or set CA_BUNDLE)" >&2
  exit 1
fi
cp -L "$BUNDLE" "$ROOT/etc/ssl/certs/ca-certificates.crt"

# Name resolution: glibc reads nsswitch.conf (files and dns are built into glibc >= 2.34); the container
# runtime mounts /etc/hosts and /etc/resolv.conf.
printf 'hosts: files dns\n' > "$ROOT/etc/nsswitch.conf"
printf 'root:x:0:0:root:/nonexistent:/sbin/nologin\nsmsgate:x:65532:65532:smsgate:/nonexistent:/sbin/nologin\n' \
  > "$ROOT/etc/passwd"
printf 'root:x:0:\nsmsgate:x:65532:\n' > "$ROOT/etc/group"

# The shipped config (demo tenant, dry run) and its scripts; mount your own over /etc/smsgate.
cp gateway.yaml "$ROOT/etc/smsgate/gateway.yaml"
mkdir -p "$ROOT/etc/smsgate/scripts"
cp scripts/*.lua "$ROOT/etc/smsgate/scripts/"
chmod -R a+rX,go-w "$ROOT"

$PODMAN build --quiet -f Containerfile \
  --build-arg "VERSION=$VERSION" --build-arg "COMMIT=$COMMIT" \
  -t "$IMAGE" -t "${IMAGE%:*}:latest" "$STAGE" >/dev/null
echo "$IMAGE"
