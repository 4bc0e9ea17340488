# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ONLY ?=
PORT ?= 8000

.PHONY: demo docs test lint typecheck pytest compat bench env-example clean browser prometheus

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/steadyloop demo --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The dashboard test drives a real headless Chromium; install Debian's when it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the dashboard test"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed: the dashboard browser test will be skipped"; fi; }

# The Grafana/Prometheus test evaluates deploy/ against a real Prometheus; install Debian's.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing prometheus for the deploy/ test"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "prometheus is not installed: the Grafana/Prometheus test will be skipped"; fi; }

pytest: $(STAMP) browser prometheus
	$(BIN)/python -m pytest

# The documentation site: every page and the API reference must build without a warning.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir .site

# FastAPI's own tutorial tests (from its sdist), with and without install(app): no outcome
# may change (tests/compat/fastapi_suite.py).
compat: $(STAMP)
	$(BIN)/python -m tests.compat.fastapi_suite

test: lint typecheck docs pytest compat

bench: $(STAMP)
	$(BIN)/python -m bench $(if $(ONLY),--only $(ONLY),)

env-example: $(STAMP)
	$(BIN)/python -c 'import sys; from steadyloop.settings import render_env_example as r; sys.stdout.write(r())' > .env.example

clean:
	rm -rf $(VENV) .site .mypy_cache .ruff_cache .pytest_cache
