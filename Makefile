# Two entry points on a fresh machine: `make demo` (set up and run the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo decay interventions interventions-decay ladder test test-fast setup clean

setup: $(STAMP)

# torch is pinned only when absent: 2.13.0 is the local CPU build, an unpinned torch pulls CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/kentropy lab --preset quick --out demo

decay: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/kentropy lab --preset decay --out decay

interventions: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/kentropy lab --preset interventions --out interventions

interventions-decay: $(STAMP)  # after `make decay`: the methods also from its arms judged `decayed`
	HF_HUB_OFFLINE=1 $(BIN)/kentropy lab --preset interventions --decay-lab decay --out interventions-decay

ladder: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/kentropy lab --preset ladder --out ladder

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) demo decay interventions interventions-decay ladder
