# make install | test | demo | bench | test-compat. Idempotent: a second run only rebuilds what changed.
PYTHON ?= python3.11
VENV ?= .venv
TORCH ?= 2.14.1
TRITON ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.inik_fast-deps
PYTEST_ARGS ?=
# pytest-xdist processes for `make test`; 0 runs the suite in this process. worksteal hands each
# process a contiguous half (module fixtures mostly run once) and an idle one takes queued tests.
TEST_WORKERS ?= 2

.PHONY: install test test-compat demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==$(TORCH) $(if $(TRITON),triton==$(TRITON))
	$(PY) -m pip install -q ninja pytest pytest-benchmark pytest-xdist numpy pillow scikit-image tqdm imagecodecs
	touch $@

$(VENV)/.inik_fast-editable: $(STAMP) setup.py
	INIK_FAST_SKIP_EXT=1 $(PY) -m pip install -q --no-build-isolation --no-deps -e '.[dev]'
	touch $@

install: $(VENV)/.inik_fast-editable
	$(PY) setup.py -q build_ext --inplace
	$(PY) -m inik_fast info

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The oldest torch and triton supported (those of the GPU image), in a copy of the working tree:
# the extension is built in place, for one torch.
COMPAT := build/compat
test-compat:
	rm -rf $(COMPAT) && mkdir -p $(COMPAT)
	git ls-files -z -co --exclude-standard | xargs -0 cp -p --parents -t $(COMPAT)
	INIK_FAST_FIXTURE=$${INIK_FAST_FIXTURE:-$(abspath ../shared/fixtures/iniknet_official_float64.pt)} \
		$(MAKE) -C $(COMPAT) test VENV=$(abspath build/venv-compat) TORCH=2.11.0 TRITON=3.6.0

demo: install
	$(PY) scripts/demo.py

bench: install
	mkdir -p benchmarks/results
	$(PY) -m pytest benchmarks --bench-device cpu --benchmark-only --benchmark-json=benchmarks/results/last-run.json \
		$(PYTEST_ARGS); rc=$$?; $(PY) benchmarks/report.py benchmarks/results/last-run.json && exit $$rc

clean:
	rm -rf build $(VENV) *.egg-info inik_fast/_C*.so
