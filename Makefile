# Two commands: `make serve` and `make test`. Each bootstraps .venv itself from
# exact, hash-checked pins: `make serve` installs only what the gateway runs on
# (requirements.lock); `make test` adds the test tools (requirements-dev.lock).
# Regenerate both with `make lock`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: serve test lint types unit lock bench clean

$(BIN)/uv:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set (some shells and CI
# images set it) every `wagate` process would otherwise compile SQLAlchemy and the rest
# from source again, ~1 s of each CLI call.
# Install (not sync): a venv that already has the test tools keeps them.
$(RUN_STAMP): requirements.lock pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --compile-bytecode --require-hashes --python $(BIN)/python \
		-r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): requirements-dev.lock pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip sync --quiet --compile-bytecode --require-hashes --python $(BIN)/python \
		requirements-dev.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(DEV_STAMP) $(RUN_STAMP)

serve: $(RUN_STAMP)
	$(BIN)/python -m compileall -q src
	$(BIN)/wagate migrate
	$(BIN)/wagate serve --demo --host $(HOST) --port $(PORT)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

types: $(DEV_STAMP)
	$(BIN)/mypy

# pytest keeps its rewritten test modules as bytecode unless PYTHONDONTWRITEBYTECODE is
# set; each worker then collects in ~3.5 s of CPU instead of ~8 on the runs after the first.
test: lint types
	$(BIN)/python -m compileall -q src
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n 2 --dist loadscope

# The dev lock first; the runtime lock is held to the same versions.
lock: $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes \
		-o requirements-dev.lock
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes \
		-c requirements-dev.lock -o requirements.lock

bench: $(DEV_STAMP)
	$(BIN)/python bench/accept

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
