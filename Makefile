# portside developer commands. Every target sets up what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test lint format clean

# Debian ships venv separately (python3-venv); install it when missing and root.
$(STAMP): pyproject.toml setup.py
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		echo "python3 -m venv failed; installing python3-venv"; \
		apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

# The dashboard test drives Debian's chromium with playwright (whose own browser
# download does not work here): installed when missing and root, for `make test`
# only, so that `make perf` on a fresh machine does not fetch a browser.
.PHONY: browser
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || { \
		echo "installing chromium for the dashboard test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The worker's request path compiled with mypyc (setup.py): `pip install -e` builds it
# first; this rebuilds it whenever a worker module changes (setup.py's HOT_PATH names
# those compiled; they are type-checked against the rest), because a compiled module
# older than its .py would run the old code (worker/__init__.py refuses that).
COMPILED := worker/.compiled-stamp

$(COMPILED): $(STAMP) $(wildcard worker/*.py)
	PORTSIDE_COMPILE=required $(BIN)/python setup.py -q build_ext --inplace
	@# build_ext leaves a module whose C code did not change as it was: it matches the
	@# sources all the same, so it is marked as current.
	@touch worker/*.so $(COMPILED)

.PHONY: compile
compile: $(COMPILED)

install: $(COMPILED)

# The demo: two whoami backends behind portside, configured by the file provider.
run: $(COMPILED)
	@$(BIN)/portside whoami --listen 127.0.0.1:9001 --name whoami-1 >/dev/null & b1=$$!; \
	$(BIN)/portside whoami --listen 127.0.0.1:9002 --name whoami-2 >/dev/null & b2=$$!; \
	trap 'kill $$b1 $$b2 2>/dev/null' EXIT INT TERM; \
	echo ""; \
	echo "portside demo: whoami-1 and whoami-2 behind http://127.0.0.1:8000 (Ctrl-C stops it)"; \
	echo "  try:   curl -H Host:whoami.localhost http://127.0.0.1:8000/"; \
	echo "         (run it twice: the answering Name alternates between the two backends)"; \
	echo "  edit configs/demo/dynamic.toml and the change is live within a second"; \
	echo "  dashboard: http://127.0.0.1:8080/dashboard/  (also /api/overview, /metrics, /ping)"; \
	config=configs/demo/static.toml; \
	if docker info >/dev/null 2>&1; then \
		config=configs/demo/static-docker.toml; \
		echo "  Docker answers: containers labelled traefik.enable=true are routed too, e.g."; \
		echo "    docker run -d --label traefik.enable=true \\"; \
		echo "      --label 'traefik.http.routers.hello.rule=Host(\`hello.localhost\`)' IMAGE"; \
	else \
		echo "  (no Docker daemon: file provider only; 'make docker-up' starts one)"; \
	fi; \
	echo ""; \
	$(BIN)/portside --config $$config

test: $(COMPILED) browser
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check master worker tests perf setup.py
	$(BIN)/ruff format --check master worker tests perf setup.py

format: $(STAMP)
	$(BIN)/ruff check --fix master worker tests perf setup.py
	$(BIN)/ruff format master worker tests perf setup.py

# A Docker daemon on /var/run/docker.sock for the Docker tests (DESIGN §8):
# installs docker.io when missing (as root), starts dockerd, waits until it answers.
.PHONY: docker-up
docker-up:
	bash .ci/start-dockerd

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache build worker/*.so $(COMPILED)

# Benchmarks (perf/): Debian's wrk, nginx-light and haproxy, plus matplotlib, locust
# and py-spy in the venv, installed when missing. PERF_ARGS go to perf/run, e.g.
# `make perf PERF_ARGS="--quick"`; PROFILE_ARGS to perf/profile.
PERF_ARGS ?=
PROFILE_ARGS ?=

.PHONY: perf profile perf-deps

perf-deps: $(COMPILED)
	@pkgs=""; \
	command -v wrk >/dev/null || pkgs="$$pkgs wrk"; \
	command -v nginx >/dev/null || pkgs="$$pkgs nginx-light"; \
	command -v haproxy >/dev/null || pkgs="$$pkgs haproxy"; \
	if [ -n "$$pkgs" ] && [ "$$(id -u)" != 0 ]; then \
		echo "perf: not root, so not installing$$pkgs (sudo apt-get install$$pkgs)"; \
	elif [ -n "$$pkgs" ]; then \
		echo "installing$$pkgs"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkgs; \
	fi
	@$(BIN)/python -c 'import matplotlib, locust' 2>/dev/null && [ -x $(BIN)/py-spy ] || \
		$(BIN)/pip install -q matplotlib locust py-spy

# perf/run and perf/profile run perf-deps themselves when started by hand; here it has run.
perf: perf-deps
	PORTSIDE_PERF_DEPS_READY=1 $(BIN)/python perf/run $(PERF_ARGS)

profile: perf-deps
	PORTSIDE_PERF_DEPS_READY=1 $(BIN)/python perf/profile $(PROFILE_ARGS)

# The fuzz run of the request path (tests/fuzz_proxy.py): portside with two workers in
# front of a strict recording backend; FUZZ_ARGS e.g. "--seconds 60 --seed 1".
FUZZ_ARGS ?=
.PHONY: fuzz
fuzz: $(COMPILED)
	$(BIN)/python tests/fuzz_proxy.py $(FUZZ_ARGS)
