# The two commands of the README: `make run` and `make test`. Everything else is set up here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

# The suite runs against real PostgreSQL and Redis (local defaults; override as needed).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	SECRET_KEY=test-only-secret-key \
	ROUTER_ENCRYPTION_KEYS=A8xkVaa1nVl7KDppCml_KeREI_n2hNgvJejhGkTXCz8=

.PHONY: install install-dev run serve test lint

# What running needs (`make run`, `make serve`): the project and its dependencies.
install: $(VENV)/.installed
# The test tools too (pyproject's `dev` extra: pytest, hypothesis, Playwright, the OpenAI
# SDK, ruff...), for `make test` only; and with npm, the official Node SDKs the tests drive
# (tests/node's lock file), installed beside them in $(VENV)/node, out of the repository's tree.
NODE_SDKS := $(VENV)/node/.installed
install-dev: $(VENV)/.installed-dev $(NODE_SDKS)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Without npm the Node SDK tests are skipped (tests/proxy/test_node_sdk.py says why).
$(NODE_SDKS): tests/node/package.json tests/node/package-lock.json $(VENV)/.installed
	@if command -v npm >/dev/null 2>&1; then \
		mkdir -p $(VENV)/node && cp tests/node/package.json tests/node/package-lock.json $(VENV)/node/ && \
		npm ci --prefix $(VENV)/node --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "no npm: the Node SDK tests will be skipped"; fi

# Seeds the demo, then the web server and beside it a Celery worker with beat (the sweeper,
# roll-ups, alerts, probes); the demo key and a curl line come last, once both are up.
# Ctrl-C stops both. run.py holds the command lines.
run: install
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python run.py --host $(HOST) --port $(PORT)

# Production (DATABASE_URL on PostgreSQL, REDIS_URL, SECRET_KEY, ROUTER_ENCRYPTION_KEYS and
# ALLOWED_HOSTS set, else it stops naming what is missing): migrate and collect static files,
# then the web server with one worker process per core (WEB_CONCURRENCY), a Celery worker
# and beat; Ctrl-C stops all three. The Procfile lists the same processes for a process
# manager. serve.py holds the command lines.
serve: install
	$(BIN)/python serve.py check
	$(BIN)/python serve.py release
	trap 'kill 0' EXIT; \
	$(BIN)/python serve.py worker & \
	$(BIN)/python serve.py beat & \
	$(BIN)/python serve.py web

# One pytest worker per core (TEST_WORKERS=0: in this process only), each with its own test
# database (pytest-django) and Redis database (tests/parallel_workers.py); a test module
# stays on one worker, so its module-wide fixtures are built once.
TEST_WORKERS ?= auto
test: install-dev
	$(TEST_ENV) PYTHONPATH=$(CURDIR) $(BIN)/pytest -p tests.parallel_workers \
		-n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)
	$(BIN)/ruff check .

lint: install-dev
	$(BIN)/ruff check .
