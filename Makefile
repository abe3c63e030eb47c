# make test  - create .venv if missing, install bcce with dev extras, lint, type-check, test
# make demo  - install and run the quickstart offline
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo install lint typecheck pytest bench clean system-deps demo-deps

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "bcce needs Python >= 3.11 (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

# System packages: the demo needs the OS sandbox (bubblewrap, socat) and git; the tests also
# render run reports in Chromium and run a real LDAP server (slapd, with ldap-utils to load it).
# Installed where we are root with apt-get, reported otherwise.
DEMO_PACKAGES := bubblewrap socat git
TEST_PACKAGES := $(DEMO_PACKAGES) chromium slapd ldap-utils

define install_packages
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "note: not root with apt-get; tests needing $(1) will be skipped"; fi
endef

system-deps:
	$(call install_packages,$(TEST_PACKAGES))

demo-deps:
	$(call install_packages,$(DEMO_PACKAGES))

lint: install
	$(BIN)/ruff check bcce tests benchmarks
	$(BIN)/ruff format --check bcce tests benchmarks

typecheck: install
	$(BIN)/mypy bcce

pytest: install system-deps
	$(BIN)/pytest

test: lint typecheck pytest

# The quickstart runs on a throwaway copy of its sample project (apply_diff changes it), with
# the model's replies scripted: offline, repeatable, and the repository stays clean.
demo: install demo-deps
	BCCE_AGENT__PROVIDER=scripted $(BIN)/bcce doctor
	@demo=$$(mktemp -d -t bcce-demo.XXXXXX) && cp -r examples/quickstart/project "$$demo/project" && \
	  echo "demo workspace: $$demo/project" && \
	  BCCE_AGENT__PROVIDER=scripted BCCE_AGENT__SCRIPT=examples/quickstart/scripts \
	  BCCE_WORKFLOW__STATE_DIR="$$demo/runs" BCCE_STORAGE__ROOT="$$demo/runs" \
	  $(BIN)/bcce workflow run examples/quickstart/workflow.yml --workspace "$$demo/project" --approve

bench: install
	$(BIN)/python benchmarks/startup.py

clean:
	rm -rf $(VENV) .bcce_runs .mypy_cache .ruff_cache build dist *.egg-info
