# Set-up and everyday commands. `make run` and `make test` each work alone on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DATA := data/demo
RETRAINER := $(VENV)/bin/retrainer

.PHONY: install run demo-data test test-tools lint docs bench clean

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

# System tools the tests use, installed when missing (as root, else through sudo):
# Debian's cron and systemd (`crontab -n` and `systemd-analyze verify` check the generated
# schedule files), chromium (opens `retrainer report`'s page in a real browser), and
# Prometheus' Pushgateway and node_exporter (receive and read the run's metrics).
test-tools:
	@missing=""; \
	command -v crontab >/dev/null || missing="$$missing cron"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v strace >/dev/null || missing="$$missing strace"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v prometheus-pushgateway >/dev/null || missing="$$missing prometheus-pushgateway"; \
	command -v prometheus-node-exporter >/dev/null || missing="$$missing prometheus-node-exporter"; \
	if [ -z "$$missing" ]; then echo "system tools for the tests: all present"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "system tools for the tests: installing the missing$$missing (apt)"; \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install \
	    -y -qq --no-install-recommends $$missing; \
	fi

# The Ray and Dask drivers' tests run in a private network namespace with only loopback up
# (Ray binds the machine's address otherwise), and a PID namespace that every process of
# their clusters dies with.
test: $(STAMP) test-tools
	$(PY) -m pytest --ignore=tests/distributed
	RAY_USAGE_STATS_ENABLED=0 unshare $$(test "$$(id -u)" = 0 || echo -r) -n -p -f --mount-proc \
	  sh -c 'ip link set lo up && exec $(PY) -m pytest tests/distributed'

# ruff, mypy (strict; tests too), the layers of the package, and the docs site (strict:
# a broken link or anchor fails).
lint: $(STAMP)
	$(VENV)/bin/ruff check retrainer tests bench
	$(VENV)/bin/ruff format --check retrainer tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider tests/test_layers.py
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir $$(mktemp -d)

# The docs site under site/ (mkdocs serve for a live preview).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# Peers (joblib, Dask, Ray) and the chart need the bench extra; without it they are
# skipped with a note: $(PY) -m pip install -c constraints.txt -e '.[bench]'
bench: $(STAMP)
	$(PY) -m bench.suite
	$(PY) -m bench.makespan
	$(PY) -m bench.admission
	$(PY) -m bench.two_stage
	$(PY) -m bench.search_speedup
	$(PY) -m bench.backtest_throughput
	$(PY) -m bench.s3_throughput
	RAY_USAGE_STATS_ENABLED=0 unshare $$(test "$$(id -u)" = 0 || echo -r) -n -p -f --mount-proc \
	  sh -c 'ip link set lo up && exec $(PY) -m bench.distributed'

clean:
	rm -rf runs logs summary models mirror reports .retrainer.lock .retrainer.lock.json
