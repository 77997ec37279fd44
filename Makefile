# Quick start: `make demo`, `make test`. Both set themselves up and are no-ops when already set up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
export EMOCAM_DATA ?= $(abspath ../shared/data)

.PHONY: setup weights demo test bench clean

setup: $(INSTALLED)

# torch first and pinned: this machine has a CPU build on disk, an unpinned torch pulls a multi-GB CUDA build.
$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Always asked: a no-op pull only verifies hashes (about a second), and it repairs deleted or damaged files.
weights: $(INSTALLED)
	$(PY) -m emocam models pull

demo: weights
	$(PY) -m emocam analyze skimage:astronaut --out out/demo

test: weights
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out models/*.pt models/.wheels
