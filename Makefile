# Two entry points on a fresh Debian machine as root: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSSTAMP := $(VENV)/.system-installed
# Real-wire tests: namespaces and links (iproute2), loss rules (nftables), capture analysis (tshark),
# an unmodified HTTP client (curl) and the LACP partner (Open vSwitch in userspace).
SYSTEM_PACKAGES := iproute2 nftables tshark curl openvswitch-switch

.PHONY: setup system demo demo-sim test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# System tools for the real-wire tests; skipped when not root (they are only needed there).
$(SYSSTAMP):
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	fi
	@mkdir -p $(VENV) && touch $(SYSSTAMP)

setup: $(STAMP) $(SYSSTAMP)

# The main job: the real-wire demo as root (namespaces, TAP); without root, the same scenario in the simulator.
demo: setup
	@if [ "$$(id -u)" = "0" ]; then $(VENV)/bin/chimney demo; \
	else echo "not root: running the simulated demo (chimney demo --sim)"; $(VENV)/bin/chimney demo --sim; fi

demo-sim: setup
	$(VENV)/bin/chimney demo --sim

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest

test: setup lint typecheck unit

bench: setup
	$(VENV)/bin/chimney bench sim

clean:
	rm -rf $(VENV) out bench-results
