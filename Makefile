# Two commands on a fresh machine (Python 3.11+ with venv):
#   make demo   installs what is needed and runs the main job on the embedded default
#   make test   installs what is needed and runs the whole test suite
#   make check  installs what is needed, then mypy and the import contracts (lint-imports)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo serve test check bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,check]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) hub.py demo $(ARGS)

serve: $(STAMP)
	$(PY) hub.py serve --with-simulators $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

# Both read their configuration from pyproject.toml ([tool.mypy], [tool.importlinter]); the
# contracts run even when mypy fails, so one run reports everything.
check: $(STAMP)
	@status=0; \
	$(PY) -m mypy || status=1; \
	$(VENV)/bin/lint-imports --no-logo || status=1; \
	exit $$status

bench: $(STAMP)
	$(PY) bench/embedded_e2e.py $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .import_linter_cache
