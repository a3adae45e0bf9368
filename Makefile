# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run run-cluster test test-cluster test-faults lint typecheck check bench bench-script bench-fanout load clean

$(BIN)/gifting-server: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

run: $(BIN)/gifting-server
	$(BIN)/gifting-server serve --host $(HOST) --port $(PORT) --demo

# The tests run in parallel (pytest-xdist), TEST_WORKERS processes at once: most of
# their time is spent waiting on servers, timeouts and failovers, not on the CPU
# (measured sequentially: about 45% of one core for `make test`). Each worker starts
# its own session Redis and, for the cluster tests, its own local Redis Cluster, on
# free ports and in its own temporary directory. `--dist load` hands out tests one by
# one, by their place in the collection: the HTTP fuzzer's cases (schemathesis, one per
# API operation) share one test id, which `loadgroup` and `loadscope` would run once.
# TEST_WORKERS=0 runs them in this process, one after another.
TEST_WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist load

# Runs tests/cluster too (on a local 3-master/3-replica Redis Cluster); 5 to 6 minutes
# on the 2-core machine.
test: $(BIN)/gifting-server
	$(PYTEST) --ignore=tests/faults

# The money path, the API, the hub, the faults and the metrics again on a local Redis Cluster (3
# masters, 3 replicas, started by the tests) instead of the single Redis
# (GIFTING_TEST_TOPOLOGY=cluster, tests/topology.py). tests/cluster, which always uses
# the cluster, runs in `make test`.
CLUSTER_SUITES := tests/ledger tests/api tests/hub tests/faults tests/test_metrics.py
test-cluster: $(BIN)/gifting-server
	GIFTING_TEST_TOPOLOGY=cluster $(PYTEST) $(CLUSTER_SUITES)

# A local Redis Cluster (3 masters, 3 replicas, docs/scaling.md) in data/cluster, two
# `serve` workers over it on PORT and PORT+1, and the demo; it prints the URLs.
# Ctrl-C stops everything it started.
run-cluster: $(BIN)/gifting-server
	$(BIN)/python -m gifting_server.run_cluster --data-dir data/cluster --host $(HOST) --port $(PORT)

# Faults, abuse and fuzzing (docs/reliability.md): kills and restarts real Redis and
# server processes, floods, forges and fuzzes; about a minute on its own.
test-faults: $(BIN)/gifting-server
	$(PYTEST) tests/faults

lint: $(BIN)/gifting-server
	$(BIN)/ruff check gifting_server tests load
	$(BIN)/ruff format --check gifting_server tests load

typecheck: $(BIN)/gifting-server
	$(BIN)/mypy

check: lint typecheck test test-faults test-cluster

# Opt-in benchmarks (not part of the tests). `make bench` writes BENCHMARKS.md and
# load/results/bench.json; BENCH_QUICK=1 for a shorter run (about three minutes).
bench: $(BIN)/gifting-server
	$(BIN)/python -m load.bench

# Redis instructions per gift under callgrind, one script and the steps across slots
# (repeatable; needs valgrind; a few minutes).
bench-script: $(BIN)/gifting-server
	$(BIN)/python -m load.bench.script_cost

# A single fan-out measurement: one stream, many viewers, a steady gift rate.
VIEWERS ?= 5000
RATE ?= 100
bench-fanout: $(BIN)/gifting-server
	$(BIN)/python -m load.bench.fanout --viewers $(VIEWERS) --rate $(RATE) --duration 10

# Locust, headless: USERS gifters (plus 20 viewers) against a server it starts here, or
# against HOST=http://... (that server's GIFTING_* secrets in the environment).
# Reports in load/reports/; exits non-zero when any request failed.
USERS ?= 2000
SPAWN ?= 200
TIME ?= 60s
LOAD_ARGS ?=
load: $(BIN)/gifting-server
	$(BIN)/python -m load.run --users $(USERS) --spawn-rate $(SPAWN) --run-time $(TIME) \
		$(if $(findstring ://,$(HOST)),--host $(HOST)) $(LOAD_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
