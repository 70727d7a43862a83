# Quick start:  make run   (set up and serve the site on http://127.0.0.1:8000)
#               make test  (run the test suite)
#               make worker (a Celery worker for training runs; needs REDIS_URL)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run test worker bench clean

$(BIN)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/daphne -b $(HOST) -p $(PORT) mnistsite.asgi:application

test: setup
	$(BIN)/pytest

worker: setup
	$(BIN)/python manage.py worker

clean:
	rm -rf $(VENV) staticfiles
