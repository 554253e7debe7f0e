#!/usr/bin/env bash
# Make a Docker engine answer on this machine: install Debian's docker.io when there is no
# dockerd, and start dockerd in the background when none is running. Needs root for both;
# without root it only reports what is missing. (The runtime image, and what building it
# needs, is scripts/build-runtime-image.sh's.)
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "The Docker engine is not running and starting it needs root (run dockerd, or add yourself to the docker group)." >&2
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "installing docker.io (Debian) ..." >&2
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null 2>&1; then
    apt-get update -qq  # a fresh machine's package lists may be missing or stale
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
  fi
fi
# What the runtime image's build needs besides the engine (debootstrap, where the base
# image cannot be pulled) is scripts/build-runtime-image.sh's business: it runs whether or
# not the engine had to be started here.
mkdir -p /var/log
nohup dockerd >/var/log/modelbay-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "dockerd did not start; see /var/log/modelbay-dockerd.log" >&2
tail -20 /var/log/modelbay-dockerd.log >&2
exit 1
