# Quick start:  make run   (set up and serve the site on http://127.0.0.1:8000: HTTP and WebSockets,
#                          one Granian process; see README "Process layout")
#               make test  (run the test suite)
# Production:   make serve (HTTP: Granian, WSGI) + make serve-ws (WebSockets: Daphne) + make worker
#               (Celery, for training runs) + make beat (one per deployment: the retraining policy's
#               schedule) + make shadow (one per deployment: candidates in shadow answer live drawings);
#               see README "Process layout", "Automatic retraining", "Shadow evaluation" and deploy/.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WS_PORT ?= 8001
BEAT_SCHEDULE ?= media/celerybeat-schedule

.PHONY: setup run serve serve-ws test worker beat shadow bench clean

$(BIN)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	@echo "Installing requirements.txt into $(VENV): PyTorch (CPU), Django, Channels, Celery and the rest,"
	@echo "several hundred MB; about a minute on a fast connection, once (again only when requirements.txt changes)."
	$(BIN)/pip install --progress-bar on -r requirements.txt
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python -m mnistsite.serve site --host $(HOST) --port $(PORT)

serve: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python -m mnistsite.serve http --host $(HOST) --port $(PORT)

serve-ws: setup
	$(BIN)/python -m mnistsite.serve ws --host $(HOST) --port $(WS_PORT)

test: setup
	$(BIN)/pytest

worker: setup
	$(BIN)/python manage.py worker

beat: setup
	mkdir -p $(dir $(BEAT_SCHEDULE))
	$(BIN)/python -m celery -A mnistsite beat --schedule $(BEAT_SCHEDULE) --loglevel info

shadow: setup
	$(BIN)/python manage.py shadow

clean:
	rm -rf $(VENV) staticfiles
