# The two commands of the README: `make demo` (the offline demo) and `make test` (the test suite).
# Each sets itself up from scratch on a fresh machine: a virtualenv in .venv with everything installed.
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo

.PHONY: install demo test test-slow bench clean

$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first (a local file on our machines), so that nothing pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,colab]'
	touch $@

install: $(VENV)/.installed

# The demo: evaluate the untrained model, fine-tune with hybrid batches, evaluate again, compare.
# DEMO_CONFIG=configs/demo.py:runlocal makes it a one-minute smoke test.
DEMO_CONFIG ?= configs/demo.py
demo: install
	$(PY) -m hybrid_ir.eval --config $(DEMO_CONFIG) --workdir $(WORKDIR) --pretrained
	$(PY) -m hybrid_ir.train --config $(DEMO_CONFIG) --workdir $(WORKDIR)
	$(PY) -m hybrid_ir.eval --config $(DEMO_CONFIG) --workdir $(WORKDIR) --once
	$(PY) -m hybrid_ir.report before-after $(WORKDIR)

test: install
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile

test-slow: install
	$(PY) -m pytest -q -m slow

bench: install
	for b in benchmarks/bench_*.py; do PYTHONPATH=. $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) workdirs build *.egg-info
