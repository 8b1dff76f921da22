# make install | test | demo | bench. Idempotent: a second run only rebuilds what changed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.inik_fast-deps
PYTEST_ARGS ?=

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.14.1
	$(PY) -m pip install -q ninja pytest pytest-benchmark numpy pillow scikit-image tqdm imagecodecs
	touch $@

$(VENV)/.inik_fast-editable: $(STAMP) setup.py
	INIK_FAST_SKIP_EXT=1 $(PY) -m pip install -q --no-build-isolation --no-deps -e '.[dev]'
	touch $@

install: $(VENV)/.inik_fast-editable
	$(PY) setup.py -q build_ext --inplace
	$(PY) -m inik_fast info

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(PY) scripts/demo.py

bench: install
	mkdir -p benchmarks/results
	$(PY) -m pytest benchmarks --bench-device cpu --benchmark-only --benchmark-json=benchmarks/results/last-run.json \
		$(PYTEST_ARGS); rc=$$?; $(PY) benchmarks/report.py benchmarks/results/last-run.json && exit $$rc

clean:
	rm -rf build $(VENV) *.egg-info inik_fast/_C*.so
