#!/usr/bin/env bash
# `make test`: the import contracts, then the suite on the real services (PostgreSQL,
# Redis), then the embedded default (SQLite, filesystem broker) exercised end to end.
# Exits with pytest's status (or the first failing step's) and prints the wall time.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
data_dir=""
finish() {
  local status=$?
  [ -n "$data_dir" ] && rm -rf "$data_dir"
  echo "make test: $(($(date +%s) - started)) s"
  exit "$status"
}
trap finish EXIT

export PGHOST=${PGHOST:-127.0.0.1}
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/modelbay}
export TEST_REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}

# The direction of imports (.importlinter, docs/architecture.md): a broken contract fails the run.
.venv/bin/lint-imports

# Browser tests drive Debian's Chromium; install it when missing (root on CI).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# Local instances run in bubblewrap sandboxes, with slirp4netns for those with egress.
if { ! command -v bwrap || ! command -v slirp4netns; } >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap slirp4netns >/dev/null
fi

# The Docker tests need a running engine and the runtime image built from this tree.
bash scripts/start-docker.sh
MODELBAY_RUNTIME_IMAGE=$(bash scripts/build-runtime-image.sh)
export MODELBAY_RUNTIME_IMAGE

# One cache kept across runs (and shared by the embedded stack test_embedded.py starts):
# the python models' requirements (the demo apps' OpenCV, RapidOCR, onnxruntime, ...) go
# into per-model venvs under MODELBAY_VENV_DIR, each made once per machine (keyed by the
# requirements and this environment; a failed install is never kept), and pip's downloads
# and wheels stay in PIP_CACHE_DIR for whatever is new. Each run's data (MODELBAY_DATA_DIR)
# is still fresh. The Docker backend's per-model images are kept by the engine itself.
cache_dir=${MODELBAY_TEST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modelbay-test}
mkdir -p "$cache_dir/pip" "$cache_dir/venvs"
export PIP_CACHE_DIR=$cache_dir/pip
export MODELBAY_VENV_DIR=$cache_dir/venvs
unset PIP_NO_CACHE_DIR

data_dir=$(mktemp -d /tmp/modelbay-test.XXXXXX)

DATABASE_URL=$TEST_DATABASE_URL \
REDIS_URL=$TEST_REDIS_URL \
CELERY_BROKER_URL=${TEST_BROKER_URL:-redis://127.0.0.1:6379/14} \
MODELBAY_DATA_DIR=$data_dir \
  .venv/bin/python -m pytest "$@"
