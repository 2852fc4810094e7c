# `make demo` and `make test` each set up .venv on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

# Ray stays on this machine: no usage reports, and the embedded cluster binds to 127.0.0.1 only.
export RAY_USAGE_STATS_ENABLED := 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: demo test install clean

demo: $(INSTALLED)
	$(PY) -m sweeps run synthetic --preset quick

test: $(INSTALLED)
	$(PY) -m pytest

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

clean:
	rm -rf $(VENV) .pytest_cache
