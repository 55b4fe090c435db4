# Two commands do all the set-up on a fresh machine:
#   make demo   - install into .venv, then run the whole pipeline on a built-in example
#   make test   - install into .venv, then run the test suite with the network cut off
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build. On a CUDA machine: make install TORCH='torch' (or the build for your CUDA).
TORCH ?= torch==2.13.0

.PHONY: install demo test test-fast docs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned, so that no other package makes pip choose a multi-GB CUDA build
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	# wheels of the edge runtime (no torch), for the test that installs them into a fresh venv offline
	$(BIN)/python -m pip download -q -d $(VENV)/edge-wheels onnxruntime numpy pillow tokenizers
	touch $@

demo: install
	$(BIN)/headstart demo

test: install
	scripts/offline $(BIN)/python -m pytest -q --durations=10

# The suite without the tests marked slow (real weights or data, training, servers, browsers, databases):
# sub-second tests only, for quick iteration (under 2 minutes on 2 cores).
test-fast: install
	scripts/offline $(BIN)/python -m pytest -q -m "not slow"

# The documentation site, built offline; --strict turns broken links and references into errors.
docs: install $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict -d site

$(VENV)/.docs-installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[docs]"
	touch $@

bench: install
	$(BIN)/python bench/cache_speedup.py
	$(BIN)/python bench/probe_accuracy.py

clean:
	rm -rf $(VENV) runs .pytest_cache
