# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when it is
# missing and installs the pinned dependencies (constraints.txt) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= auto
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: install demo test lint typecheck unit integration infra lock clean bundle synth bench reliability

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --python $(BIN)/python -q -c constraints.txt -e '.[cli,infra,dev,transform,bench]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ingestctl local demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

test: lint typecheck
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

# One layer of `make test` at a time, for quick loops (no lint or type check).
unit: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup tests/unit

integration: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup tests --ignore=tests/unit --ignore=tests/infra

infra: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup tests/infra

# The merge benchmark at full size (N up to 1M rows: several minutes); prints the table.
# Then the history cases (status, a late row, history, asof on 100 / 10k / 100k objects), the
# index's write over a cycle of checkpoints (1M keys, 16k to 1M history rows) and
# the transform's (one event on 10k vs 1M fact rows, a rebuild of each).
bench: $(STAMP)
	$(BIN)/python -m bench.merge
	$(BIN)/python -m bench.history
	$(BIN)/python -m bench.index
	$(BIN)/python -m bench.transform

# The reliability suite (faults, hostile input, load, soak); prints the table in README's
# Reliability section and fails unless rows lost = duplicated = objects changed by a replay = 0,
# the whole run stays under 4 GB and the soak (a 20,000-row table merged 500 times through the
# local runtime) within 2x the bucket + 1.5 GB. `make test` runs its quick form
# (tests/integration/test_reliability_quick.py).
RELIABILITY_ARGS ?= --scenarios 200 --seed 1 --load-versions 200
# Then the full black-box interleaving sweep of the merge (crash before and after every AWS call,
# paused twins, lost answers, layout switches; ~30 minutes a seed); `make test` runs its quick
# form (tests/integration/test_merge_interleavings.py).
INTERLEAVINGS_ARGS ?= --seed 1 --generated 6
reliability: $(STAMP)
	$(BIN)/python -m tests.reliability $(RELIABILITY_ARGS)
	$(BIN)/python -m tests.integration.merge_interleavings full $(INTERLEAVINGS_ARGS)

# Re-pin every dependency after changing pyproject.toml.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --all-extras --python-version 3.11 -q -o constraints.txt

# The Lambda code assets (runtime wheels for arm64 + shared/ + services/), built without Docker:
# one for the merge/ingest/pause functions, one with pyarrow for the transform alone.
BUNDLE := .lambda-bundle
BUNDLE_STAMP := $(BUNDLE)/.built
TRANSFORM_BUNDLE := .lambda-bundle-transform
TRANSFORM_BUNDLE_STAMP := $(TRANSFORM_BUNDLE)/.built
$(BUNDLE_STAMP): $(STAMP) scripts/bundle.py $(shell find shared services -name '*.py' 2>/dev/null)
	$(BIN)/python scripts/bundle.py --bundle base --out $(BUNDLE)
	@touch $@

$(TRANSFORM_BUNDLE_STAMP): $(STAMP) scripts/bundle.py $(shell find shared services -name '*.py' 2>/dev/null)
	$(BIN)/python scripts/bundle.py --bundle transform --out $(TRANSFORM_BUNDLE)
	@touch $@

bundle: $(BUNDLE_STAMP) $(TRANSFORM_BUNDLE_STAMP)

# Writes the CloudFormation template to cdk.out/ (no AWS account, no Docker needed).
synth: $(BUNDLE_STAMP) $(TRANSFORM_BUNDLE_STAMP)
	@test -d node_modules/aws-cdk || npm ci --no-audit --no-fund
	npx cdk synth --quiet

clean:
	rm -rf $(VENV) .demo cdk.out .mypy_cache .ruff_cache .pytest_cache $(BUNDLE) $(TRANSFORM_BUNDLE)
