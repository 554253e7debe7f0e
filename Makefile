# The two commands a new user runs: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

REQUIREMENTS := requirements.txt runtime/requirements.txt

.PHONY: run test venv venv-dev bench bench-deploy bench-apps bench-stall bench-transport bench-slow-tenant runtime-image clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python $(REQUIREMENTS)
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

## make run: set up everything and start Modelbay on 127.0.0.1:$(PORT) (embedded defaults)
run: venv
	PORT=$(PORT) $(BIN)/python scripts/run.py

## make test: set up what the tests need and run them all
test: venv-dev
	bash scripts/test.sh

## make bench: print throughput and latency figures (not a test)
bench: venv-dev
	$(BIN)/python bench/predict.py

## make bench-deploy: time from deploy to ready (local and docker), healing, idle memory
bench-deploy: venv-dev
	$(BIN)/python bench/deploy.py

## make bench-apps: what an app call (access, quota, rate, metering) costs over a service call
bench-apps: venv-dev
	$(BIN)/python bench/apps.py

## make bench-stall: the longest time with no completed call (idle, a held SQLite write lock, rollbacks)
bench-stall: venv-dev
	$(BIN)/python bench/stall.py

## make bench-transport: the gateway's clients to a runtime (sync and asyncio; TCP, Unix socket; aiohttp, httpx)
bench-transport: venv-dev
	$(BIN)/python bench/transport.py

## make bench-slow-tenant: a slow tenant beside the others and the console; memory of 1,000 held calls
bench-slow-tenant: venv-dev
	$(BIN)/python bench/slow_tenant.py

## make runtime-image: build the runtime's container image (for the Docker backend)
runtime-image:
	bash scripts/build-runtime-image.sh

clean:
	rm -rf var .pytest_cache
