# uni3d: `make test` and `make demo` each work on a fresh machine (they create .venv and install first).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.uni3d-installed
# CPU machines get the CPU wheel pinned (an unpinned torch pulls a multi-GB CUDA build); with an NVIDIA
# driver present the default (CUDA) build is kept. Override with `make TORCH_SPEC=... test`.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
DEMO_OUT ?= runs/demo
DEMO_PROMPT ?= a blue sphere with a red cone nose
DEMO_PRIOR ?= assets/priors/shapes-composite
DEMO_RUN = $(DEMO_OUT)/$(shell echo '$(DEMO_PROMPT)' | tr -cs 'a-zA-Z0-9' '-' | sed 's/-$$//')

.PHONY: install test lint demo gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "uni3d needs Python 3.11+")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# pyvista's wheel ships the real example meshes (ant.ply, airplane.ply, ...) that the reconstruction
	# tests fit; only its data files are read, so its heavy vtk dependency is not needed.
	$(PY) -m pip install --quiet --no-deps "pyvista==0.49.1"
	# Khronos glTF validator (npm) for the GLB tests; needs node + npm (Debian: apt-get install nodejs npm).
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	bash tools/install_gltf_validator.sh
	# Debian chromium for the web app's browser test (Playwright drives it through executable_path; Playwright's
	# own browser download is never used).
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check uni3d tests apps
	$(VENV)/bin/ruff format --check uni3d tests apps

# Every test file runs on its own, in its own process: a file that passes only after another one, or a process that
# crashes at exit (a native library freeing twice), fails the target even when all its tests passed.
test: lint
	@failed=""; for f in tests/test_*.py; do \
		echo "== $$f"; $(PY) -m pytest "$$f" || failed="$$failed $$f(exit $$?)"; \
	done; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi; echo "every test file passed on its own"

# Text to 3D on the embedded composite prior (an object with a front), default preset and settings, into a folder
# named after the prompt; a finished run folder is not run again (delete it, or set DEMO_OUT, to run afresh).
demo: $(STAMP)
	$(VENV)/bin/uni3d check divergences
	$(VENV)/bin/uni3d generate "$(DEMO_PROMPT)" --prior $(DEMO_PRIOR) --out $(DEMO_RUN)
	@echo "GLB:   $(DEMO_RUN)/model.glb"
	@echo "video: $$(ls $(DEMO_RUN)/turntable.* | head -n 1)"

# On a machine with an NVIDIA GPU: CUDA extras, parity tests, SD-size step and renderer benchmarks, results in docs/.
gpu-check: $(STAMP)
	$(VENV)/bin/uni3d check gpu

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
