# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ONLY ?=
PORT ?= 8000

.PHONY: demo docs test lint typecheck pytest compat bench env-example clean browser prometheus wrk

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

# Debian packages the tests and benchmarks run for real, installed when missing (as root):
# $(call debian,COMMAND,PACKAGE,WHAT NEEDS IT[,APT OPTIONS]).
define debian
	@command -v $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(2) for $(3)"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(4) $(2) >/dev/null; \
	  else echo "$(2) is not installed: $(3) will be skipped"; fi; }
endef

# The dashboard test drives a real headless Chromium.
browser:
	$(call debian,chromium,chromium,the dashboard browser test)

# The Grafana/Prometheus test evaluates deploy/ against a real Prometheus.
prometheus:
	$(call debian,prometheus,prometheus,the Grafana/Prometheus test,--no-install-recommends)

# The HTTP benchmarks load servers with wrk from its own process.
wrk:
	$(call debian,wrk,wrk,the wrk benchmarks,--no-install-recommends)

pytest: $(STAMP) browser prometheus wrk
	$(BIN)/python -m pytest

# The documentation site: every page and the API reference must build without a warning.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir .site

# FastAPI's own tutorial tests (from its sdist), with and without install(app): no outcome
# may change (tests/compat/fastapi_suite.py).
compat: $(STAMP)
	$(BIN)/python -m tests.compat.fastapi_suite

test: lint typecheck docs pytest compat

bench: $(STAMP) wrk
	$(BIN)/python -m bench $(if $(ONLY),--only $(ONLY),)

env-example: $(STAMP)
	$(BIN)/python -c 'import sys; from steadyloop.settings import render_env_example as r; sys.stdout.write(r())' > .env.example

clean:
	rm -rf $(VENV) .site .mypy_cache .ruff_cache .pytest_cache
