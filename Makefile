# The two commands: `make run` serves the demo on http://127.0.0.1:8000, `make test` runs everything.
VENV := .venv
PYTHON := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export DJANGO_DEBUG ?= true

.PHONY: run test lint bench soak

$(PYTHON):
	python3 -m venv $(VENV)

$(VENV)/.runtime-installed: requirements.txt | $(PYTHON)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.test-installed: requirements.txt requirements-test.txt requirements-test-nodeps.txt | $(PYTHON)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-test-nodeps.txt
	touch $@ $(VENV)/.runtime-installed

run: $(VENV)/.runtime-installed
	$(PYTHON) manage.py migrate --noinput
	$(PYTHON) manage.py bootstrap_demo
	# daphne (flags in bin/web) and the registration worker (bin/worker), stopped together
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" HOST=$(HOST) $(VENV)/bin/honcho start -f Procfile.dev -p $(PORT)

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest

bench: $(VENV)/.test-installed
	$(PYTHON) bench/run.py

soak: $(VENV)/.test-installed
	$(PYTHON) bench/soak.py
