# One entry point for everything: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=
# The tests reach the stack on the ports ops/stack.sh starts it on.
export TIERSTREAM_TEST_KAFKA ?= 127.0.0.1:$(or $(TIERSTREAM_STACK_KAFKA_PORT),9092)
export TIERSTREAM_TEST_REDIS ?= redis://127.0.0.1:$(or $(TIERSTREAM_STACK_REDIS_PORT),6379)/0

.PHONY: help venv lint format test test-slow test-unit test-integration test-redis-cluster test-cluster stack-up stack-down stack-status demo bench-models bench bench-memory dashboard clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tierstream needs Python >= 3.11 (found " + sys.version.split()[0] + "): install python3.11 and run make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,bench]'
	@touch $@

venv: $(STAMP)  ## create .venv with the pinned dependencies

# No server needed: memory state, the generator in-process. Options: make demo DEMO_ARGS='--users 1000'
demo: $(STAMP)  ## the whole pipeline in one process, no server; writes out/demo-report.html
	$(BIN)/tierstream demo $(DEMO_ARGS)

# scikit-learn and lifetimes (the `bench` extra, in the venv, never the service's) are the
# offline references the tiers are held to (a regression on the snapshot, RFM quintiles,
# BG/NBD + Gamma-Gamma, gradient boosting).
# About 10 min on 2 cores; BENCH_ARGS='--only clickstream' (orders, cdnow, warm) for a part.
bench-models: $(STAMP)  ## do the tiers rank customers better than RFM and BG/NBD? (docs/models.md)
	$(BIN)/python -m tests.bench.bench_models $(BENCH_ARGS)

# On the stack of ops/stack.sh (started if it is not running; left running), niced: the
# machine is shared. 15-35 min with the load; writes its section of docs/performance.md. Small sizes
# (a minute): make bench BENCH_ARGS=--quick (prints only).
bench: $(STAMP)  ## throughput vs raw client and Quix Streams, latency, memory (docs/performance.md)
	bash ops/stack.sh up
	nice -n 10 $(BIN)/python -m tests.bench.bench_throughput $(BENCH_ARGS)

# The memory rows up to a million users (the 1M row alone is some 2M events and 4M weekly
# re-scores: an hour or more on this machine today), in a section of their own.
bench-memory: $(STAMP)  ## max RSS and Redis bytes per user at 10k, 100k and 1M users (docs/performance.md)
	bash ops/stack.sh up
	nice -n 10 $(BIN)/python -m tests.bench.bench_throughput --parts memory \
		--users 10000,100000,1000000 --section bench-memory $(BENCH_ARGS)

# Standard library only, so no venv needed; tests/unit/test_dashboard.py fails until the
# committed JSON is what the generator writes.
dashboard:  ## regenerate ops/grafana/dashboards/tierstream.json from ops/grafana/dashboard.py
	$(PYTHON) ops/grafana/dashboard.py

lint: $(STAMP)  ## ruff (lint + format check), mypy --strict, the import contracts (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test-unit: $(STAMP)  ## the pure core and everything that needs no server
	$(BIN)/pytest -m '$(NO_SERVER)' $(PYTEST_ARGS)

test-integration: $(STAMP)  ## integration tests against a running stack (make stack-up)
	$(BIN)/pytest -m 'integration and not slow' $(PYTEST_ARGS)

# Six redis-server processes (a Redis Cluster) and a Sentinel deployment that the tests
# start on free ports (30000-39000) and stop; Kafka is the stack's. About 80 s on 2 cores,
# so `make test` runs them too.
test-redis-cluster: $(STAMP)  ## the state store on a real Redis Cluster and Sentinel (Kafka: make stack-up)
	$(BIN)/pytest -m redis_cluster tests/cluster $(PYTEST_ARGS)

# Every test but the slow ones against a fresh stack, which is stopped afterwards whatever
# happens. The tests that need no server run beside the ones that do (their output follows
# the others'): the integration tests mostly wait for the servers, so the two share the
# cores well. About 12 min on 2 cores.
NO_SERVER = not integration and not redis_cluster and not slow
test: $(STAMP) lint  ## lint, start a fresh Kafka + Redis, run every test but the slow ones, stop the stack
	TIERSTREAM_STACK_FRESH=1 bash ops/stack.sh up
	status=0; \
	$(BIN)/pytest -m '$(NO_SERVER)' -p no:cacheprovider $(PYTEST_ARGS) >.test-unit.log 2>&1 & unit=$$!; \
	$(BIN)/pytest -m '(integration or redis_cluster) and not slow' $(PYTEST_ARGS) || status=$$?; \
	wait $$unit || status=$$?; cat .test-unit.log; rm -f .test-unit.log; \
	bash ops/stack.sh down; exit $$status

# The small chaos scenarios (a member killed, frozen, its store failing, scaled...), a kill
# after each step of the commit protocol, parity across instances and a quick run of make
# bench's harness, on a fresh stack: CI runs them after make test.
# About 9 min.
test-slow: $(STAMP)  ## the slow tests (chaos scenarios, kills, parity, bench harness) on a fresh stack
	TIERSTREAM_STACK_FRESH=1 bash ops/stack.sh up
	status=0; $(BIN)/pytest -m slow $(PYTEST_ARGS) || status=$$?; \
	bash ops/stack.sh down; exit $$status

# The chaos suite (tests/chaos, figures in docs/reliability.md) on a stack of its own, whose
# servers it stops, restarts and rolls back: never the one on 9092/6379. Stopped afterwards
# whatever happens. One scenario: make chaos PYTEST_ARGS='-k test_kill_full'.
CHAOS_STACK = TIERSTREAM_STACK_DIR=$(CURDIR)/.stack-chaos TIERSTREAM_STACK_KAFKA_PORT=19092 \
	TIERSTREAM_STACK_CONTROLLER_PORT=19093 TIERSTREAM_STACK_REDIS_PORT=16379 \
	TIERSTREAM_STACK_KAFKA_LIBS=$(CURDIR)/.stack/kafka-libs
.PHONY: chaos
chaos: $(STAMP)  ## the chaos suite (minutes) on its own fresh stack (.stack-chaos, ports 19092/16379)
	mkdir -p .stack-chaos && echo '*' >.stack-chaos/.gitignore
	$(CHAOS_STACK) TIERSTREAM_STACK_FRESH=1 bash ops/stack.sh up
	status=0; $(CHAOS_STACK) TIERSTREAM_TEST_KAFKA=127.0.0.1:19092 \
		TIERSTREAM_TEST_REDIS=redis://127.0.0.1:16379/0 \
		$(BIN)/pytest -m chaos tests/chaos $(PYTEST_ARGS) || status=$$?; \
	$(CHAOS_STACK) bash ops/stack.sh down; exit $$status

stack-up:  ## start Kafka (127.0.0.1:9092) and Redis (127.0.0.1:6379) under .stack/
	bash ops/stack.sh up

stack-down:  ## stop them (data kept under .stack/)
	bash ops/stack.sh down

stack-status:  ## is each of them running?
	bash ops/stack.sh status

# The multi-node stack (3 Kafka brokers over SASL_SSL/SCRAM, a 6-node Redis Cluster) for failover
# and security tests; `up` wipes it first. More sub-commands: bash ops/cluster-stack.sh (ops/README.md).
.PHONY: cluster-stack-up cluster-stack-down
cluster-stack-up:  ## fresh 3-broker SASL_SSL Kafka + 6-node Redis Cluster (.stack-cluster/)
	bash ops/cluster-stack.sh up

cluster-stack-down:  ## stop the multi-node stack (data kept under .stack-cluster/)
	bash ops/cluster-stack.sh down

# The multi-node suite (tests/multinode): the service through SASL_SSL into Redis Cluster, a
# broker and a Redis primary killed mid-run. Its own fresh stack, stopped afterwards whatever
# happens.
test-cluster: $(STAMP)  ## the multi-node suite on a fresh multi-node stack (minutes)
	bash ops/cluster-stack.sh up
	status=0; $(BIN)/pytest -m multinode tests/multinode $(PYTEST_ARGS) || status=$$?; \
	bash ops/cluster-stack.sh down; exit $$status

clean:  ## remove caches (keeps .venv and .stack)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
