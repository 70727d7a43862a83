# Quick start:  make run   (set up and serve the site on http://127.0.0.1:8000: HTTP and WebSockets,
#                          one Granian process; see docs/operations/index.md)
#               make test  (run the test suite)
# Production:   make release (once per deploy: migrate, collectstatic) then make serve (HTTP: Granian,
#               WSGI) + make serve-ws (WebSockets: Daphne) + make worker (Celery, for training runs) +
#               make beat (one per deployment: the retraining policy's schedule, kept in the database) +
#               make shadow (one per deployment: candidates in shadow answer live drawings);
#               see docs/operations/running.md, docs/operations/index.md and deploy/.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WS_PORT ?= 8001

.PHONY: setup run release serve serve-ws test worker beat shadow bench clean

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

# Once per deploy, from one machine, before the new code serves: the servers, workers and the shadow
# process refuse to start against a database that lacks a migration.
release: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0

serve: setup
	$(BIN)/python -m mnistsite.serve http --host $(HOST) --port $(PORT)

serve-ws: setup
	$(BIN)/python -m mnistsite.serve ws --host $(HOST) --port $(WS_PORT)

test: setup
	$(BIN)/pytest

worker: setup
	$(BIN)/python manage.py worker

# The schedule is in the database (django-celery-beat; the scheduler is CELERY_BEAT_SCHEDULER); one beat
# per deployment, and a second one by mistake sends nothing twice (mnistsite.beat).
beat: setup
	$(BIN)/python -m celery -A mnistsite beat --loglevel info

shadow: setup
	$(BIN)/python manage.py shadow

clean:
	rm -rf $(VENV) staticfiles

# The documentation's pictures, from the code: screenshots of the pages in Chromium (a fresh seeded site;
# MNIST_ROOT set gives the dashboard a real run) and the import graph, into docs/images/.
.PHONY: screenshots docs
screenshots: setup
	$(BIN)/python -m tests.browser.screenshots
	$(BIN)/python docs/tools/import_graph.py

# The documentation site (MkDocs, docs/requirements.txt), built with every warning an error, into site/.
docs: setup
	$(BIN)/pip install --quiet -r docs/requirements.txt
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
