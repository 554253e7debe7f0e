#!/usr/bin/env bash
# Make a Docker engine answer on this machine: install Debian's docker.io when there is no
# dockerd, and start dockerd in the background when none is running. Needs root for both;
# without root it only reports what is missing.
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
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi
mkdir -p /var/log
nohup dockerd >/var/log/modelbay-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "dockerd did not start; see /var/log/modelbay-dockerd.log" >&2
tail -20 /var/log/modelbay-dockerd.log >&2
exit 1
