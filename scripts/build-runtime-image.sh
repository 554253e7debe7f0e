#!/usr/bin/env bash
# Build the runtime image (modelbay/runtime:<tag>) for the Docker backend.
#
# The base is MODELBAY_RUNTIME_BASE_IMAGE (default python:3.11-slim). Where no registry
# can be reached (air-gapped sites, build machines), a Debian bookworm base with Python
# is made locally with debootstrap and `docker import` (needs root and debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

base=${MODELBAY_RUNTIME_BASE_IMAGE:-python:3.11-slim}
tag=${MODELBAY_RUNTIME_IMAGE:-modelbay/runtime:latest}
local_base=modelbay/debian-python:bookworm

if ! docker image inspect "$base" >/dev/null 2>&1 && ! docker pull -q "$base" >/dev/null 2>&1; then
  echo "cannot pull $base; using a local Debian base ($local_base)" >&2
  if ! docker image inspect "$local_base" >/dev/null 2>&1; then
    rootfs=$(mktemp -d /tmp/modelbay-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" >&2
    tar -C "$rootfs" -c . | docker import - "$local_base" >/dev/null
  fi
  base=$local_base
fi

context=$(mktemp -d /tmp/modelbay-build.XXXXXX)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/inference"
cp inference/__init__.py "$context/inference/"
cp -r inference/runtime "$context/inference/runtime"
rm -rf "$context/inference/runtime/tests" "$context"/inference/runtime/__pycache__
# pip inside the build trusts what this host trusts (a site's own CA, a proxy's).
cp /etc/ssl/certs/ca-certificates.crt "$context/build-ca.crt"
docker build -q --build-arg "BASE_IMAGE=$base" -f inference/runtime/Dockerfile -t "$tag" "$context" >/dev/null
echo "$tag"
