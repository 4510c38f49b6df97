# Two commands on a fresh machine: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
# CUDA users: make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint docs bench clean

install: $(STAMP)

# Re-runs only when the package metadata changes; torch goes first so that no dependency
# pulls a CUDA build of it.
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/emofeat demo --out demo-out

lint: install
	$(BIN)/ruff check emofeat tests benchmarks examples docs/hooks.py
	$(BIN)/ruff format --check emofeat tests benchmarks examples docs/hooks.py

# The documentation site, into site/; every warning (a broken link, a missing page, a docstring
# that does not render) is an error, so `make test` fails when the docs break.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint docs
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python benchmarks/store_bench.py --out bench-out
	$(BIN)/python benchmarks/extract_bench.py --out bench-out
	$(BIN)/python benchmarks/long_clip_bench.py --out bench-out/long-clip
	$(BIN)/python benchmarks/family_bench.py --out bench-out/families
	$(BIN)/python benchmarks/frozen_bench.py --out bench-out

clean:
	rm -rf demo-out bench-out site .pytest_cache
