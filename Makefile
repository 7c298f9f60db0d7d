# Two commands for users: `make demo` (the main job) and `make test` (the suite).
# Each builds its own virtual environment on first use (no manual steps before it).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU wheel by default; on a CUDA machine set TORCH_SPEC to a CUDA build of torch.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test env notebooks clean-runs

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

env: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hiralign run params/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Regenerate the .ipynb files from their jupytext py:percent sources (outputs stay empty).
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --to ipynb --update notebooks/*.py

clean-runs:
	rm -rf runs/
