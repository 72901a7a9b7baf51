# calibtune: `make demo` installs what the demo needs and runs it; `make test` runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
# Every install takes the versions last tested (see requirements-lock.txt; `make lock` refreshes it).
PIP := $(PY) -m pip install --quiet -c requirements-lock.txt
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-demo demo test test-fast clean lock

# The demo's install: CPU torch, calibtune and the built-in assets; no test stack.
install-demo: $(VENV)/.demo-installed

$(VENV)/.demo-installed: pyproject.toml requirements-cpu.txt requirements-assets.txt requirements-lock.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP) -r requirements-cpu.txt
	$(PIP) -e .
	$(PIP) --no-deps -r requirements-assets.txt
	touch $@

# The test install: the demo's, plus pytest, hypothesis, the reference libraries and ruff.
install: $(VENV)/.installed

$(VENV)/.installed: $(VENV)/.demo-installed
	$(PIP) -e ".[test]"
	touch $@

# Headless Chromium from Debian's packages, for the report.html browser tests (playwright
# drives it; it never downloads a browser of its own). Needs root, as on CI and the dev machines.
$(VENV)/.chromium: $(VENV)/.installed
	command -v chromium >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	touch $@

# DeepSpeed, for the ZeRO-3 test on CPU processes: its sdist builds against the torch installed
# above (build isolation would fetch another, CUDA, torch).
$(VENV)/.deepspeed: $(VENV)/.installed
	$(PIP) --no-build-isolation "deepspeed==0.19.8"
	touch $@

# llama-cpp-python's OpenAI-compatible server, for the tests that score a model through a real
# server on 127.0.0.1 (-m server). Built from the PyPI sdist: llama.cpp is compiled for this CPU,
# about 10 minutes on 2 cores (CMAKE_BUILD_PARALLEL_LEVEL uses them all).
$(VENV)/.llama-server: $(VENV)/.installed
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) "llama-cpp-python[server]==0.3.36"
	touch $@

# --overwrite: `make demo` again replaces the previous demo run (any other folder is refused).
demo: install-demo
	$(VENV)/bin/calibtune eval --model smollm2-135m-instruct --data mmlu --split test \
		--limit 500 --out runs/demo --overwrite

# Everything: lint, the real-model tests, the multi-process engine tests and the served-model
# tests (a llama.cpp server each test session starts on 127.0.0.1 and stops).
test: install $(VENV)/.deepspeed $(VENV)/.chromium $(VENV)/.llama-server
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest -q

# Minutes, and nothing heavy to build: no real model, no multi-process runs, no DeepSpeed,
# no browser, no llama.cpp server.
test-fast: install
	$(PY) -m pytest -q -m "not slow and not distributed and not browser and not server"

clean:
	rm -rf runs .pytest_cache

# A fresh resolution of everything `make test` installs (pip's dry run: nothing is installed),
# written to requirements-lock.txt. Run `make test` on the result before committing it.
lock: install
	$(PY) -m pip install --quiet --dry-run --ignore-installed --report .lock-report.json \
		-r requirements-cpu.txt -e ".[test,bench]" "deepspeed==0.19.8" "llama-cpp-python[server]==0.3.36"
	$(PY) .ci/lock.py .lock-report.json requirements-lock.txt
	rm -f .lock-report.json
