# llm-sidecar — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: help install run test lint format typecheck pytest bench clean demo health check audit

help:
	@echo "make run    - start the local stack in the foreground (mocks :8001/:8002, sidecar :8080)"
	@echo "make test   - ruff, ruff format --check, mypy --strict, pytest"
	@echo "make demo   - ./demo.sh --start: the nine scenarios on a stack of its own"
	@echo "make health - every service of the stack (local or compose URLs from the env)"
	@echo "make check  - sidecar check on policies/ (for CI and pre-commit)"
	@echo "make audit  - pip-audit on the image's lock files [SERVICE=osv] (docs/security.md)"
	@echo "make bench  - measure the mock provider's throughput"
	@echo "make format - apply ruff fixes and formatting"
	@echo "make clean  - remove the virtualenv and caches"
	@echo "make up      - build the images and start docker-compose.yml in the background"
	@echo "make down    - stop and remove the compose containers (volumes kept)"
	@echo "make logs    - compose logs [SERVICE=sidecar] [FOLLOW=1]"
	@echo "make rebuild - rebuild images and recreate containers [SERVICE=x] [NOCACHE=1]"
	@echo "make prune   - remove stopped compose containers and dangling images of this project"
	@echo "make reset   - down, and remove the volumes (Redis and Prometheus data)"
	@echo "make lock    - regenerate the hashed lock files in examples/deploy/ (docs/deploy.md)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs whenever pyproject.toml changes (new or updated dependencies).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m sidecar.devstack

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy --strict sidecar mock_provider

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

demo: install
	./demo.sh --start

health: install
	$(BIN)/python -m sidecar.health

check: install
	$(BIN)/sidecar check policies

# Exit 0: no known vulnerability; 1: found; 2: the vulnerability service gave no answer.
audit: install
	$(BIN)/python examples/deploy/audit.py $(if $(SERVICE),--service $(SERVICE))

bench: install
	$(BIN)/python bench/mock_rps.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# ---- docker-compose.yml -----------------------------------------------------------------
# Each target first makes sure a Docker engine answers (`docker info`), else says so in one
# line and fails; it works with the Compose plugin (`docker compose`) or the standalone
# `docker-compose`. Without Docker, `make run` is the same stack as local processes.
.PHONY: up down logs rebuild prune reset lock

COMPOSE_PROJECT := llm-sidecar
truthy = $(filter 1 yes true on,$(1))

define compose
	@if ! docker info >/dev/null 2>&1; then \
	  echo 'no Docker engine is running here: use `make run` for the local stack' >&2; exit 1; \
	fi; \
	if docker compose version >/dev/null 2>&1; then compose='docker compose'; \
	elif docker-compose version >/dev/null 2>&1; then compose='docker-compose'; \
	else echo 'Docker is running but Compose is not installed (`docker compose` or `docker-compose`)' >&2; exit 1; \
	fi; \
	set -e; $(1)
endef

up:
	$(call compose,echo "+ $$compose up -d --build"; $$compose up -d --build; $$compose ps)

down:
	$(call compose,echo "+ $$compose down --remove-orphans"; $$compose down --remove-orphans)

logs:
	$(call compose,$$compose logs --tail=200 $(if $(call truthy,$(FOLLOW)),--follow) $(SERVICE))

rebuild:
	$(call compose,echo "+ $$compose build $(if $(call truthy,$(NOCACHE)),--no-cache --pull) $(SERVICE)"; \
	  $$compose build $(if $(call truthy,$(NOCACHE)),--no-cache --pull) $(SERVICE); \
	  $$compose up -d $(SERVICE))

# Scoped to this project: its stopped containers and its untagged old images (by label);
# other projects' containers, images and the build cache are left alone.
prune:
	$(call compose,$$compose rm --force; \
	  docker image prune --force --filter label=org.opencontainers.image.title=$(COMPOSE_PROJECT))

reset:
	$(call compose,echo "+ $$compose down --volumes --remove-orphans"; \
	  $$compose down --volumes --remove-orphans)

# Pins from .venv, hashes from PyPI (docs/deploy.md#lock-files). Each lock is written to a
# temporary file first, so a failed run (no network, a pin with no wheel) leaves it intact.
define lockfile
	$(BIN)/python examples/deploy/lock.py $(1) > examples/deploy/$(2).tmp \
	  || { rm -f examples/deploy/$(2).tmp; exit 1; }
	mv examples/deploy/$(2).tmp examples/deploy/$(2)
endef

lock: install
	$(call lockfile,llm-sidecar,requirements.lock)
	$(call lockfile,--for-app openai,app-requirements.lock)
	$(call lockfile,--build,build-requirements.lock)
