# portside developer commands. Every target sets up what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test lint format clean

# Debian ships venv separately (python3-venv); install it when missing and root.
$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		echo "python3 -m venv failed; installing python3-venv"; \
		apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# The demo: two whoami backends behind portside, configured by the file provider.
run: $(STAMP)
	@$(BIN)/portside whoami --listen 127.0.0.1:9001 --name whoami-1 >/dev/null & b1=$$!; \
	$(BIN)/portside whoami --listen 127.0.0.1:9002 --name whoami-2 >/dev/null & b2=$$!; \
	trap 'kill $$b1 $$b2 2>/dev/null' EXIT INT TERM; \
	echo ""; \
	echo "portside demo: whoami-1 and whoami-2 behind http://127.0.0.1:8000 (Ctrl-C stops it)"; \
	echo "  try:   curl -H Host:whoami.localhost http://127.0.0.1:8000/"; \
	echo "         (run it twice: the answering Name alternates between the two backends)"; \
	echo "  edit configs/demo/dynamic.toml and the change is live within a second"; \
	echo ""; \
	$(BIN)/portside --config configs/demo/static.toml

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check master worker tests perf
	$(BIN)/ruff format --check master worker tests perf

format: $(STAMP)
	$(BIN)/ruff check --fix master worker tests perf
	$(BIN)/ruff format master worker tests perf

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
