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

# The live daemon on the built-in demo source (no camera needed) for a few seconds: an annotated recording and
# its per-frame log land in out/demo/sessions/<time>/; plus one annotated picture.
demo: weights
	$(PY) -m emocam analyze skimage:astronaut --out out/demo
	$(PY) -m emocam run --source demo --no-vcam --record --preset analysis --seconds 8 --set session.root=out/demo/sessions

test: weights
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out models/*.pt models/.wheels
