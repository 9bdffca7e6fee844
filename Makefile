# instance-nerfacto: `make install`, `make test`, `make demo`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= outputs/demo
# torch/OpenMP threads (see docs/troubleshooting.md): one thread never waits at a barrier for a thread
# that another process pushed off its core; waiting threads sleep instead of spinning. Override: make demo OMP_NUM_THREADS=2
export OMP_NUM_THREADS ?= 1
export OMP_WAIT_POLICY ?= PASSIVE
export YOLO_OFFLINE := 1

.PHONY: install test test-all lint demo clean ffmpeg chromium colmap

install: $(STAMP) ffmpeg

# torch/torchvision first: pip takes both from the local wheel cache (no multi-GB download), then the pinned stack.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev,ray]'
	@# jsonschema imports rfc3987-syntax when it is installed (jupyter's extra, unused here): 2.8 s in every Ray
	@# process, ~14 s of a local cluster's start on 2 cores (docs/troubleshooting.md, Ray)
	$(BIN)/pip uninstall -q -y rfc3987-syntax 2>/dev/null || true
	@touch $(STAMP)
	@echo "installed into $(VENV)"

ffmpeg:
	@command -v ffmpeg >/dev/null 2>&1 || { \
		echo "installing Debian ffmpeg (needed by ns-render)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg >/dev/null; }

# Headless Chromium for the viewer smoke test (tests/test_viewer.py).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian chromium (viewer smoke test)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Debian COLMAP (CPU build) for the photos-only path: the slow COLMAP test and benchmarks/colmap_path.py.
colmap:
	@command -v colmap >/dev/null 2>&1 || { \
		echo "installing Debian colmap (photos-only path)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq colmap >/dev/null; }

test: install
	$(BIN)/python -m pytest -m "not slow" -q -p no:cacheprovider

test-all: install chromium colmap
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check .

demo: install
	bash scripts/demo.sh $(DEMO_DIR)

clean:
	rm -rf $(VENV) outputs
