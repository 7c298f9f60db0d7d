"""Regenerate the paper's tables: ``hiralign reproduce TABLE [--profile mini|paper] [--executor local|slurm]
[--replicates N]``.

Each table of Section IV has a folder of experiment files under ``params/paper/``; every experiment
runs through the notebook chain 00..05 (:func:`hiralign.pipeline.run_pipeline`) in its own run
directory, and the measured numbers are written beside the paper's to ``results/<table>.md``,
``.csv`` and ``.json`` with per-cell provenance (profile, dataset, device, code version, date).

Parameter files
---------------
::

    params/paper/_defaults.yaml      profiles (device, seed, stage defaults, SLURM resources) and
                                     datasets (per profile: stage parameters, required paths, origin)
    params/paper/paper_numbers.yaml  the paper's numbers (hiralign.paper_numbers)
    params/paper/tableN/_table.yaml  the table: rows we do not reproduce (and why), gain comparisons
    params/paper/tableN/<exp>.yaml   one experiment: dataset, task, paper backbone -> ours, generator,
                                     the cells it fills, stage parameters, profiles {paper, mini}

For a profile ``P`` an experiment resolves as the deep merge (later wins) of
``_defaults.profiles[P]`` < ``_defaults.datasets[<dataset>][P]`` < the experiment < its
``profiles[P]`` (``requires`` lists are joined, not replaced). Its top-level ``task``,
``backbone`` and ``generator`` go to every notebook that declares a parameter of that name.
Paths listed under ``requires`` are relative to the repository root; they are checked before
anything runs and passed to the notebooks as absolute paths.

Replicates: ``--replicates N`` runs every experiment N times, replicate ``k`` in ``<run_dir>/rep<k>``
(``<run_dir>`` itself for N = 1) with the derived seeds of :mod:`hiralign.replicates`, the same for
replicate ``k`` of every experiment, so two rows of a table pair by (replicate, image). A cell is the
mean over replicates with its 95% t interval; each gain the table compares is paired over images and
replicates and judged at 95% (:mod:`hiralign.statistics`, docs/statistics.md).

Resuming: a run directory keeps its stages' artifacts; running a table again executes only what
is missing or out of date. Runs that share their first stages share them through the pipeline's
stage cache (``<runs_root>/<profile>/stage-cache``), and one run per shared prefix (and replicate)
goes first.

Modules
-------
:mod:`~hiralign.reproduce.spec` (parameter files -> :class:`TableSpec`), :mod:`~hiralign.reproduce.planning`
(run directories, stage parameters, the dataset check, :func:`leaders_first`),
:mod:`~hiralign.reproduce.grid` (:func:`reproduce`), :mod:`~hiralign.reproduce.collection` (measured
numbers, gain comparisons), :mod:`~hiralign.reproduce.render` (markdown / CSV / JSON, plots). The
command line is :mod:`hiralign.cli.reproduce`.
"""
from __future__ import annotations

from hiralign.reproduce.collection import (NO_PAPER, CellResult, Comparison, FidelityResult, collect, compare, fidelity, measured,
                                          paired_gain, row_records, table_rows)
from hiralign.reproduce.grid import TableRun, reproduce
from hiralign.reproduce.planning import (
    PlannedRun,
    check_datasets,
    declared_parameters,
    job_name,
    leaders_first,
    missing_datasets,
    pipeline_config,
    plan,
    required_path,
    run_directory,
    shared_prefix_key,
    stage_overrides,
    validate,
)
from hiralign.reproduce.render import (
    CSV_COLUMNS,
    GAIN_COLUMNS,
    disagreements,
    plot_gains,
    plot_rows,
    read_results,
    render_markdown,
    write_results,
)
from hiralign.reproduce.spec import (
    DATA_ROOT,
    DEFAULTS_FILE,
    INJECTED_KEYS,
    NOTEBOOKS_DIR,
    PARAMS_ROOT,
    PROFILES,
    REPO_ROOT,
    RESULT_FILE,
    ROMAN,
    SHARED_PREFIX,
    TABLE_FILE,
    Cell,
    Experiment,
    Log,
    MissingDatasetError,
    ReproduceError,
    TableSpec,
    deep_merge,
    list_tables,
    load_experiment,
    load_table,
    scale_overlay,
    table_name,
)

__all__ = [
    "CSV_COLUMNS", "Cell", "CellResult", "Comparison", "FidelityResult", "NO_PAPER", "fidelity", "table_rows", "DATA_ROOT", "DEFAULTS_FILE", "Experiment", "GAIN_COLUMNS", "INJECTED_KEYS",
    "Log", "MissingDatasetError", "NOTEBOOKS_DIR", "PARAMS_ROOT", "PROFILES", "PlannedRun", "REPO_ROOT", "RESULT_FILE",
    "ROMAN", "ReproduceError", "SHARED_PREFIX", "TABLE_FILE", "TableRun", "TableSpec", "check_datasets", "collect",
    "compare", "declared_parameters", "deep_merge", "disagreements", "job_name", "leaders_first", "list_tables",
    "load_experiment", "load_table", "measured", "missing_datasets", "paired_gain", "pipeline_config", "plan",
    "plot_gains", "plot_rows", "read_results", "render_markdown", "reproduce", "required_path", "row_records", "run_directory", "scale_overlay",
    "shared_prefix_key", "stage_overrides", "table_name", "validate", "write_results",
]
