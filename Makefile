# Set-up and everyday commands. `make run` and `make test` each work alone on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DATA := data/demo
RETRAINER := $(VENV)/bin/retrainer

.PHONY: install run demo-data test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel on disk: an unpinned torch would pull a ~3 GB CUDA build.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt torch
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

$(DEMO_DATA)/.complete: | $(STAMP)
	$(RETRAINER) data sample $(DEMO_DATA)

demo-data: $(DEMO_DATA)/.complete

# The nightly job on the embedded demo: top 20 symbols of the demo universe.
run: $(STAMP) $(DEMO_DATA)/.complete
	$(RETRAINER) run --config configs/demo.toml

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check retrainer tests bench
	$(VENV)/bin/mypy

# Peers (joblib, Dask, Ray) and the chart need the bench extra; without it they are
# skipped with a note: $(PY) -m pip install -c constraints.txt -e '.[bench]'
bench: $(STAMP)
	$(PY) -m bench.suite

clean:
	rm -rf runs logs summary models mirror .retrainer.lock .retrainer.lock.json
