# Two entry points for a new user: `make run` (the default job) and `make test` (the suite).
# Both install whatever is missing first: Debian packages (when root), a Python 3.12 venv, pinned packages.

SHELL := /bin/bash
VENV := .venv
CORES ?= 2
SNAKEMAKE_ARGS ?=

# A working Python 3.12: `python3.12` when it runs, else pyenv's 3.12 build.
PYTHON312 := $(shell if python3.12 -V >/dev/null 2>&1; then command -v python3.12; \
	else ls -d $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12 /usr/bin/python3.12 2>/dev/null | head -n 1; fi)

# Debian packages the project needs (none are needed by the default job: rasterio wheels bundle GDAL).
APT_PACKAGES := $(shell cat envs/apt-packages.txt 2>/dev/null | grep -v '^\#')

.PHONY: run test install system-deps lint clean

run: install
	$(VENV)/bin/snakemake --cores $(CORES) --profile profiles/local $(SNAKEMAKE_ARGS)
	@$(VENV)/bin/python -m eostats.cli where-results --configfile config/config.yaml

test: install
	$(VENV)/bin/python -m pytest -n $(CORES) --dist loadfile tests

lint: install
	$(VENV)/bin/ruff check eostats scripts tests
	$(VENV)/bin/ruff format --check eostats scripts tests
	$(VENV)/bin/snakefmt --check Snakefile rules

install: $(VENV)/.installed system-deps

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "Please install these Debian packages as root:$$missing" >&2; fi; \
	fi

$(VENV)/.installed: requirements.lock.txt pyproject.toml
	@test -n "$(PYTHON312)" || { echo "No working Python 3.12 found (tried python3.12 and pyenv)" >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON312) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.lock.txt
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

clean:
	rm -rf results logs .snakemake
