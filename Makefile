# `make demo` and `make test` each set up .venv on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test test-fast lint install clean

demo: $(INSTALLED)
	$(PY) -m sweeps run synthetic --preset quick

test: lint
	$(PY) -m pytest

# The unit tier: no Ray started, under a minute.
test-fast: $(INSTALLED)
	$(PY) -m pytest -m "not ray"

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

install: $(INSTALLED)

# The fused LSTM layer is compiled here, once (about 30 s); without a C++ compiler it says so in one line and the
# layers run step by step.
$(INSTALLED): pyproject.toml lstm_ae/fused_lstm.cpp
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -c 'from lstm_ae import fused; fused.extension()'
	touch $(INSTALLED)

clean:
	rm -rf $(VENV) .pytest_cache
