#!/usr/bin/env bash
# Build the runtime image for the Docker backend and print its tag.
#
# The image is tagged by a hash of what goes into it (modelbay/runtime:src-<hash>), so an
# image is rebuilt exactly when the runtime's code or requirements change; it is also
# tagged as MODELBAY_RUNTIME_IMAGE (default modelbay/runtime:latest).
#
# The base is MODELBAY_RUNTIME_BASE_IMAGE (default python:3.11-slim). Where no registry
# can be reached (air-gapped sites, build machines), a Debian bookworm base with Python
# is made locally with debootstrap and `docker import`. That needs root: as root, what it
# needs (debootstrap, Debian's archive keyring) is installed here when missing; otherwise
# the script says in one line which command to run.
#
# Run by `make run` (with MODELBAY_RUNTIME_BACKEND=docker) and `make test`, whether or not
# scripts/start-docker.sh had to start the engine.
set -euo pipefail
cd "$(dirname "$0")/.."

# apt-get install, with the package lists fetched first when they are missing or stale.
apt_install() {
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
  fi
}

# What making the local base needs, installed when root; else one line naming the command.
require_debootstrap() {
  local missing=()
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
  if [ "$(id -u)" != 0 ]; then
    echo "The runtime image's base $base cannot be pulled, and making $local_base here needs root (debootstrap): run \`sudo bash scripts/build-runtime-image.sh\` once, then try again." >&2
    exit 1
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "The runtime image's base $base cannot be pulled, and making $local_base needs ${missing[*]}: install it with your package manager, or set MODELBAY_RUNTIME_BASE_IMAGE to an image this engine has." >&2
      exit 1
    fi
    echo "installing ${missing[*]} (Debian) to make $local_base ..." >&2
    apt_install "${missing[@]}"
  fi
}

base=${MODELBAY_RUNTIME_BASE_IMAGE:-python:3.11-slim}
tag=${MODELBAY_RUNTIME_IMAGE:-modelbay/runtime:latest}
local_base=modelbay/debian-python:bookworm

source_hash=$( (echo "$base"; cat runtime/Dockerfile;
  find runtime -name '*.py' -not -path '*/tests/*' | sort | xargs cat;
  cat runtime/requirements.txt) | sha256sum | cut -c1-12)
source_tag=modelbay/runtime:src-$source_hash

if docker image inspect "$source_tag" >/dev/null 2>&1; then
  docker tag "$source_tag" "$tag"
  echo "$source_tag"
  exit 0
fi

if ! docker image inspect "$base" >/dev/null 2>&1 && ! docker pull -q "$base" >/dev/null 2>&1; then
  echo "cannot pull $base; using a local Debian base ($local_base)" >&2
  if ! docker image inspect "$local_base" >/dev/null 2>&1; then
    require_debootstrap
    rootfs=$(mktemp -d /tmp/modelbay-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    echo "building $local_base with debootstrap (a few minutes, once) ..." >&2
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" >/dev/null
    tar -C "$rootfs" -c . | docker import - "$local_base" >/dev/null
    rm -rf "$rootfs"
  fi
  base=$local_base
fi

ca_bundle=/etc/ssl/certs/ca-certificates.crt
if [ ! -e "$ca_bundle" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ca-certificates (Debian): pip in the image build trusts this host's CAs ..." >&2
    apt_install ca-certificates
  else
    echo "Building the runtime image needs this host's CA bundle $ca_bundle: run \`sudo apt-get install -y ca-certificates\`, then try again." >&2
    exit 1
  fi
fi

context=$(mktemp -d /tmp/modelbay-build.XXXXXX)
trap 'rm -rf "$context"' EXIT
cp -r runtime "$context/runtime"
rm -rf "$context/runtime/tests"
find "$context" -name __pycache__ -prune -exec rm -rf {} +
# pip inside the build trusts what this host trusts (a site's own CA, a proxy's).
cp "$ca_bundle" "$context/build-ca.crt"
echo "building $source_tag on $base ..." >&2
docker build -q --build-arg "BASE_IMAGE=$base" -f runtime/Dockerfile \
  -t "$source_tag" -t "$tag" "$context" >/dev/null
echo "$source_tag"
