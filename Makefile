# The two commands a fresh machine needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-outage demo-cluster test test-all lint bench clean soak

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

# The long fault runs are marked slow; each has a short variant that `make test` runs.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

# Everything, the long fault runs included (about twice as long).
test-all: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# Options: make demo DEVICES=500 RATE=2 DURATION=60
DEVICES ?= 500
RATE ?= 2
DURATION ?= 60

demo: $(STAMP)
	$(BIN)/python deploy/local/run_demo.py --devices $(DEVICES) --rate $(RATE) --duration $(DURATION)

# The same, with the uplink cut for 20 s in the middle of the run.
demo-outage: $(STAMP)
	$(BIN)/python deploy/local/run_demo.py --devices $(DEVICES) --rate $(RATE) --duration $(DURATION) --outage-at 20 --outage-for 20

# The same on a local 3-node NATS JetStream cluster with two broker nodes; one NATS node
# and one broker node are killed with SIGKILL mid-run (docs/cluster.md).
demo-cluster: $(STAMP)
	$(BIN)/python deploy/local/run_demo.py --cluster --devices $(DEVICES) --rate $(RATE) --duration $(DURATION)

bench: $(STAMP)
	$(BIN)/python bench/log_append.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info

# The whole pipeline under every fault at once, then a verdict (docs/reliability.md).
# Options: make soak MINUTES=10 SOAK_ARGS="--rate 2000 --seed 7"
MINUTES ?= 10
soak: $(STAMP)
	$(BIN)/python -m device_simulator.soak --minutes $(MINUTES) $(SOAK_ARGS)
