# smsgate: `make run` starts a working demo; `make test` runs the whole test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: run test install install-dev migrate demo-curl fake-amocrm bench messages clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.base-installed: requirements/base.txt | $(BIN)/activate
	$(BIN)/pip install -q -r requirements/base.txt
	touch $@

$(VENV)/.dev-installed: requirements/base.txt requirements/dev.txt | $(BIN)/activate
	$(BIN)/pip install -q -r requirements/dev.txt
	touch $@ $(VENV)/.base-installed

install: $(VENV)/.base-installed
install-dev: $(VENV)/.dev-installed

.env:
	cp .env.example .env

migrate: install .env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0

## make run: virtualenv, install, migrate, demo integration, then web on 127.0.0.1:8000 + worker + beat.
run: migrate
	$(PY) manage.py seed_demo
	@$(MAKE) --no-print-directory demo-curl
	rm -rf var/prometheus && mkdir -p var/prometheus
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start --procfile Procfile --env .env web worker-system worker-bulk worker-crm beat

demo-curl:
	@echo
	@echo "smsgate is starting on http://127.0.0.1:8000 (admin: $(PY) manage.py createsuperuser, then /admin/)."
	@echo "Send a system SMS the way amoCRM does (paste into another terminal, in this folder):"
	@echo
	@echo "  curl -s -X POST http://127.0.0.1:8000/amocrm/sms \\"
	@echo "    --data-urlencode 'phone=+79123456789' \\"
	@echo "    --data-urlencode 'text=Код для входа: 834622' \\"
	@echo "    --data-urlencode \"token=\$$($(PY) manage.py amo_token --account-id 12345)\"; echo"
	@echo
	@echo "The worker's log then shows the console provider 'sending' it."
	@echo

## Browser tests serve RequireJS and jQuery from the npm registry (pinned in tests/browser/package-lock.json).
BROWSER_DEPS := tests/browser/node_modules/.package-lock.json
$(BROWSER_DEPS): tests/browser/package.json tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

## make fake-amocrm (in a second terminal, next to `make run`): the fake amoCRM on 127.0.0.1:9100 with demo
## leads and contacts; it installs the widget into the smsgate of `make run` (AMO_BASE_URL=http://127.0.0.1:9100
## in .env), which then serves a stand-in of amoCRM's card with the widget at http://127.0.0.1:8000/dev/amocrm/.
FAKE_AMOCRM_PORT ?= 9100
fake-amocrm: install .env $(BROWSER_DEPS)
	@grep -q '^AMO_BASE_URL=http://127.0.0.1:$(FAKE_AMOCRM_PORT)' .env || { echo "Set AMO_BASE_URL=http://127.0.0.1:$(FAKE_AMOCRM_PORT) in .env (then restart make run)."; exit 1; }
	set -a && . ./.env && set +a && $(PY) -m tests.fakes.amocrm --port $(FAKE_AMOCRM_PORT) --seed-demo \
		--install-into http://$${WEB_BIND:-127.0.0.1:8000}

## make test: install everything and run the whole suite (SQLite unless DATABASE_URL is set;
## end-to-end tests need DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://..., see .ci/run).
test: $(VENV)/.dev-installed $(BROWSER_DEPS)
	$(BIN)/pytest $(PYTEST_ARGS)

## make bench: the real stack under load (PostgreSQL, Redis, wrk needed; see bench/README.md).
$(VENV)/.bench-installed: requirements/bench.txt $(VENV)/.dev-installed
	$(BIN)/pip install -q -r requirements/bench.txt
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) bench/run.py $(BENCH_ARGS)

messages: install
	$(PY) manage.py makemessages -l ru --no-location --ignore '.venv/*' --ignore 'var/*'
	$(PY) manage.py compilemessages -l ru --ignore '.venv/*'

clean:
	rm -rf var/celery var/static
