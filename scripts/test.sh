#!/usr/bin/env bash
# `make test`: the suite on the real services (PostgreSQL, Redis), then the embedded
# default (SQLite, filesystem broker) exercised end to end.
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST=${PGHOST:-127.0.0.1}
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/modelbay}
export TEST_REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}

# Browser tests drive Debian's Chromium; install it when missing (root on CI).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# The Docker tests need a running engine and the runtime image built from this tree.
bash scripts/start-docker.sh
MODELBAY_RUNTIME_IMAGE=$(bash scripts/build-runtime-image.sh)
export MODELBAY_RUNTIME_IMAGE

data_dir=$(mktemp -d /tmp/modelbay-test.XXXXXX)
trap 'rm -rf "$data_dir"' EXIT

DATABASE_URL=$TEST_DATABASE_URL \
REDIS_URL=$TEST_REDIS_URL \
CELERY_BROKER_URL=${TEST_BROKER_URL:-redis://127.0.0.1:6379/14} \
MODELBAY_DATA_DIR=$data_dir \
  .venv/bin/python -m pytest "$@"
