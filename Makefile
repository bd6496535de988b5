# Two entry points do all set-up on a fresh machine:
#   make demo   installs the node and runs a synthetic head CT through it on loopback
#   make test   installs the node, the DICOM reference peers (dcmtk, Orthanc, dicom3tools) and runs the suite
PY ?= python3
VENV ?= .venv
# The CPU build of torch 2.13.0 (the project's range is torch>=2.4,<2.15); override for a GPU build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test install sysdeps lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/.installed

sysdeps:
	bash scripts/install_system_deps.sh

demo: install
	$(BIN)/ichnet-node demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: sysdeps install lint
	$(BIN)/python -m pytest -q -ra

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var build *.egg-info
