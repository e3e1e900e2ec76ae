# The two commands of the README: `make demo` (the offline demo) and `make test` (the test suite).
# Each sets itself up from scratch on a fresh machine: a virtualenv in .venv, `make demo` with the
# package alone, `make test` adding the test extras (torch's CPU build among them).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo
# The LAReQA data (xquad-r/, mlqa-r/), where configs/common.py looks for it.
DATA := $(or $(HYBRID_IR_DATA),$(abspath $(CURDIR)/../shared/data))
ifdef HYBRID_IR_DATA
export HYBRID_IR_DATA
endif
# torch's CPU build: PyPI's Linux wheel is the CUDA one (several GB of CUDA libraries).
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# MLQA-R was removed from the repository's HEAD; this commit has it, and XQuAD-R as at HEAD.
LAREQA_URL ?= https://github.com/google-research-datasets/lareqa
LAREQA_COMMIT ?= 354d67d1cd066854cdfbf5ad0e6105528976141d

.PHONY: install install-test demo test test-slow bench data check-python check-data clean

# Checked where the venv is made (an existing venv keeps the Python it was made with).
CHECK_PYTHON = $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "hybrid_ir needs Python >= 3.11, but '$(PYTHON)' is $$($(PYTHON) -V 2>/dev/null || echo 'not found')." \
	    "Install one and run e.g. 'make $(or $(MAKECMDGOALS),demo) PYTHON=python3.11'." >&2; exit 1; }

check-python:
	@$(CHECK_PYTHON)

$(VENV)/.installed: setup.py
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

# torch first, so that nothing pulls a CUDA build: a local wheel where pip's configuration offers
# one (our machines: find-links, no network needed), else PyTorch's CPU index.
$(VENV)/.installed-test: $(VENV)/.installed setup.py
	{ $(PY) -m pip install -q --no-deps --no-index '$(TORCH)' 2>/dev/null && \
	  $(PY) -m pip install -q '$(TORCH)'; } || \
	  $(PY) -m pip install -q '$(TORCH)' --index-url $(TORCH_INDEX)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

check-data:
	@test -d "$(DATA)/xquad-r" -a -d "$(DATA)/mlqa-r" || { \
	  echo "No LAReQA data in $(DATA) (it needs xquad-r/ and mlqa-r/)." >&2; \
	  echo "Get it with 'make data' (clones $(LAREQA_URL); needs network)," >&2; \
	  echo "or set HYBRID_IR_DATA to a folder that holds xquad-r/ and mlqa-r/." >&2; exit 1; }

# XQuAD-R and MLQA-R (CC BY-SA) into $(DATA); HYBRID_IR_DATA=<dir> puts them elsewhere (then set
# it for every command, as the configs read it).
data:
	@if [ -d "$(DATA)/xquad-r" ] && [ -d "$(DATA)/mlqa-r" ]; then \
	  echo "LAReQA data already in $(DATA)"; exit 0; fi; \
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	git init -q "$$tmp/lareqa"; \
	git -C "$$tmp/lareqa" fetch -q --depth 1 $(LAREQA_URL) $(LAREQA_COMMIT); \
	git -C "$$tmp/lareqa" checkout -q FETCH_HEAD; \
	mkdir -p "$(DATA)"; \
	cp -R "$$tmp/lareqa/xquad-r" "$$tmp/lareqa/mlqa-r" "$(DATA)/"; \
	echo "XQuAD-R and MLQA-R are in $(DATA)"

# The demo: evaluate the untrained model, fine-tune with hybrid batches, evaluate again, compare.
# DEMO_CONFIG=configs/demo.py:runlocal makes it a one-minute smoke test.
DEMO_CONFIG ?= configs/demo.py
demo: check-data install
	$(PY) -m hybrid_ir.eval --config $(DEMO_CONFIG) --workdir $(WORKDIR) --pretrained
	$(PY) -m hybrid_ir.train --config $(DEMO_CONFIG) --workdir $(WORKDIR)
	$(PY) -m hybrid_ir.eval --config $(DEMO_CONFIG) --workdir $(WORKDIR) --once
	$(PY) -m hybrid_ir.report before-after $(WORKDIR)

test: check-data install-test
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile

test-slow: check-data install-test
	$(PY) -m pytest -q -m slow

bench: install-test
	for b in benchmarks/bench_*.py; do PYTHONPATH=. $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) workdirs build *.egg-info
