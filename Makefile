# Two commands for users: `make demo` (the main job) and `make test` (the suite).
# Each builds its own virtual environment on first use (no manual steps before it).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# JupyterLab from this environment runs `make git-refresh` after every save (see git-refresh).
JUPYTER_HOOK := $(VENV)/etc/jupyter/jupyter_server_config.py
# CPU wheel by default; on a CUDA machine set TORCH_SPEC to a CUDA build of torch.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test test-slurm env lab notebooks git-hygiene git-refresh clean-runs

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	# Test-only reference: HSIR's noise transforms (tests/test_degrade.py loads its noise module alone;
	# the package's own dependencies would replace torch, so they are not installed).
	$(PY) -m pip install -q --no-deps hsir==0.1.1
	touch $@

env: $(STAMP) $(JUPYTER_HOOK) git-hygiene

demo: env
	$(VENV)/bin/hiralign run params/demo.yaml

test: env
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The grid against a real single-node SLURM cluster started (and stopped) by the tests, with fault
# injection (tests/test_slurm_cluster.py): needs root; installs slurmctld slurmd slurm-client munge
# (and slurmdbd mariadb-server for the accounting tests) with apt-get when missing. Bounded: it can
# never hang.
test-slurm: env
	HIRALIGN_SLURM_TESTS=1 timeout 900 $(PY) -m pytest -q -p no:cacheprovider tests/test_slurm_cluster.py tests/test_slurm_accounting.py $(PYTEST_ARGS)

# JupyterLab on the notebooks, run in place (outputs stay in the working copy, never reach git).
lab: env
	$(VENV)/bin/jupyter lab notebooks/

# Regenerate the .ipynb files from their jupytext py:percent sources (outputs stay empty).
notebooks: env
	$(VENV)/bin/jupytext --to ipynb --update notebooks/*.py

# Notebook hygiene (.gitattributes routes *.ipynb through the `nbstripout` filter): in a git
# checkout of this folder, configure the filter in .git/config, so that `git add` stores notebooks
# without outputs, execution counts or run metadata while the working copy keeps them. Idempotent;
# does nothing outside a git checkout (e.g. an unpacked archive).
# The filter blocks jsonschema's optional `rfc3987_syntax` import (it compiles a grammar for ~2 s,
# for a format check nbstripout never makes): git runs the filter once per notebook it reads.
NBSTRIPOUT := "$(abspath $(PY))" -c "import sys; sys.modules['rfc3987_syntax'] = None; from nbstripout import main; main()" \
  --keep-id --extra-keys "metadata.language_info metadata.papermill metadata.jupytext.notebook_metadata_filter \
  metadata.jupytext.cell_metadata_filter cell.metadata.papermill cell.metadata.jupyter"
export NBSTRIPOUT
IN_GIT = [ "$$(git rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)" ]

git-hygiene:
	@if $(IN_GIT); then \
	  git config filter.nbstripout.clean "$$NBSTRIPOUT" && \
	  git config filter.nbstripout.smudge cat && \
	  git config filter.nbstripout.required true && \
	  git config diff.ipynb.textconv "$$NBSTRIPOUT -t"; \
	fi
	@$(MAKE) -s --no-print-directory git-refresh

# A notebook run in place differs from git's copy only by what the filter strips, but git reports
# it as modified until its index entry is refreshed: re-stage every notebook whose stripped
# content equals the staged one (staged content stays the same). Run by every target above and,
# after each save, by JupyterLab (the hook below).
git-refresh:
	@if $(IN_GIT) && [ -n "$$(git config filter.nbstripout.clean)" ]; then \
	  git update-index -q --refresh >/dev/null; \
	  git ls-files -m -- '*.ipynb' | while IFS= read -r f; do \
	    [ "$$(git hash-object --path="$$f" -- "$$f" 2>/dev/null)" = "$$(git rev-parse -q --verify ":$$f")" ] \
	      && git update-index -q -- "$$f"; \
	  done; \
	fi; true

# The JupyterLab hook: after every save (autosave included), `make git-refresh`.
$(JUPYTER_HOOK): Makefile
	@mkdir -p $(@D)
	@printf '%s\n' \
	  '# Written by $(CURDIR)/Makefile: keeps `git status` clean while notebooks are run in place.' \
	  'import subprocess, warnings' \
	  'warnings.filterwarnings("ignore", "Overriding existing post_save_hook")  # config is applied twice' \
	  'c.ContentsManager.post_save_hook = lambda os_path, **kw: os_path.endswith(".ipynb") and subprocess.Popen(' \
	  '    ["make", "-s", "-C", "$(CURDIR)", "git-refresh"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)' \
	  > $@

clean-runs:
	rm -rf runs/
