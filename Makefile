# labtui: `make demo` (install, build the offline demo, queue the demo runs, open the dashboard)
#         `make test` (install, run the whole test suite)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# On a machine without an NVIDIA driver, take the small CPU build of torch (on this kind of
# machine `torch==2.13.0` is served from local disk); with a driver, pip's normal (CUDA) torch.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
PYTEST_ARGS ?=

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/labtui demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PIP) install -q -e ".[bench]"
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
