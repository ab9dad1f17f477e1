# labtui: `make demo`      (install, build the offline demo, queue the demo runs, open the dashboard)
#         `make test`      (install, lint: ruff, the import contracts and mypy, then the whole test suite)
#         `make gpu-check` (on a GPU machine: the GPU acceptance check, docs/gpu-check.md)
#         `make test-fast` (the same without the tests that start a model, on FAST_JOBS=2 pytest-xdist
#                          processes: 50-60 s on 2 cores, lint included; serially it took 75-90 s)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# On a machine without an NVIDIA driver, take the small CPU build of torch (on this kind of
# machine `torch==2.13.0` is served from local disk); with a driver, pip's normal (CUDA) torch.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
PYTEST_ARGS ?=
# test-fast's pytest-xdist processes (`make test-fast FAST_JOBS=auto`: one per CPU); `make test` stays
# serial (its e2e tests train models on every core)
FAST_JOBS ?= 2

.PHONY: install demo lint test test-fast bench gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]" --config-settings editable_mode=strict
	touch $@

demo: install
	$(VENV)/bin/labtui demo

# The editable install is setuptools' strict mode: a tree of links in build/__editable__.labtui-*/ whose
# labtui/engine and labtui/tui point at engine/ and tui/, so import-linter and mypy see the package as
# installed (the lenient mode's import hook hides labtui.engine and labtui.tui from them). A link per file:
# lint refreshes the tree first, so a module added since the install is seen (and one deleted is gone).
# mypy keeps its cache in build/mypy-cache (a fresh cache costs 30 s or more here; a kept one, 2 s).
lint: install
	$(VENV)/bin/ruff check .
	$(PIP) install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=strict
	$(VENV)/bin/lint-imports --no-cache
	cd build/__editable__.labtui-* && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml \
		--cache-dir $(CURDIR)/build/mypy-cache -p labtui.engine.rundir -p labtui.engine.config -p labtui.engine.analysis

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(PY) -m pytest -m "not e2e" -n $(FAST_JOBS) $(PYTEST_ARGS)

# GPU acceptance (bench/gpu_check.py, docs/gpu-check.md): `make gpu-check` on a machine with an NVIDIA GPU;
# GPU_CHECK_ARGS=--cpu checks the script itself on the CPU. With PY=python3 (a machine whose Python already
# has torch and labtui installed, e.g. without internet) it uses that Python and installs nothing.
GPU_CHECK_OUT ?= bench/results/gpu-check
GPU_CHECK_ARGS ?=
gpu-check: $(if $(filter $(VENV)/bin/python,$(PY)),install)
	$(PY) bench/gpu_check.py $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

bench: install
	$(PIP) install -q -e ".[bench]"
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
