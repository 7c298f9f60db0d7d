"""``hiralign reproduce TABLE... [--profile mini|paper] [--executor local|slurm] [--replicates N]``:
regenerate paper tables (:mod:`hiralign.reproduce`) and print each ``results/<table>.md``."""
from __future__ import annotations

import argparse
from typing import Sequence

from hiralign.cli._common import REPO_ROOT, add_debug_flag, guarded

HELP = "regenerate a paper table: hiralign reproduce TABLE --profile mini"
DESCRIPTION = ("Regenerate a table of the paper (Section IV): run its experiments through the notebook "
               "chain and write results/<table>.md/.csv with our numbers beside the paper's.")
SLURM_OPTIONS = ("cluster", "partition", "gpus_per_node", "timeout_min", "mem_gb", "cpus_per_task")


def configure(parser: argparse.ArgumentParser) -> None:
    from hiralign.executors import EXECUTORS
    from hiralign.reproduce import DATA_ROOT, NOTEBOOKS_DIR, PARAMS_ROOT, PROFILES

    parser.add_argument("tables", nargs="+", help="table1 ... table11 (also 6 or VI), or 'all'")
    parser.add_argument("--profile", choices=PROFILES, default="mini",
                        help="paper: full size on GPU with the real datasets; mini: CPU-sized on the synthetic stand-in")
    parser.add_argument("--executor", choices=EXECUTORS, default="local", help="local process pool or SLURM via submitit")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (local workers / SLURM array parallelism)")
    parser.add_argument("--replicates", type=int, default=1, metavar="N",
                        help="run every experiment N times with derived seeds (into <run>/rep0..rep<N-1>; default 1: "
                             "one run, whose intervals cover the test images but not training randomness)")
    parser.add_argument("--scale", default="", metavar="NAME",
                        help="run the profile at one of its scales (params/paper/_defaults.yaml, scales): 'tiny' keeps "
                             "every code path and parameter of --profile paper with sizes, steps and epochs shrunk to a "
                             "CPU (a fixture run; results go to results/paper-tiny/ unless --results-dir is given)")
    parser.add_argument("--data-root", default=str(DATA_ROOT), metavar="DIR",
                        help="the folder standing for data/ in the required paths (data/cave -> DIR/cave); default: "
                             "the repository's data/ (a fixture root: hiralign data make-fixture DIR)")
    parser.add_argument("--runs-root", default=str(REPO_ROOT / "runs" / "reproduce"),
                        help="one run directory per experiment below it")
    parser.add_argument("--results-dir", default="", help="where <table>.md/.csv/.json go (default: results/, or "
                        "results/<profile>-<scale>/ with --scale)")
    parser.add_argument("--params-root", default=str(PARAMS_ROOT), help=argparse.SUPPRESS)
    parser.add_argument("--notebooks", default=str(NOTEBOOKS_DIR), help="folder of the numbered notebooks")
    parser.add_argument("--force", action="store_true", help="rerun every stage of every run")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved parameter files and exit")
    slurm = parser.add_argument_group("SLURM (--executor slurm); defaults come from the profile")
    slurm.add_argument("--cluster", choices=("slurm", "local", "debug"), help="submitit cluster (local: subprocesses here)")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--gpus", type=int, dest="gpus_per_node", help="GPUs per job")
    slurm.add_argument("--time-min", type=int, dest="timeout_min", help="time limit per job (minutes)")
    slurm.add_argument("--mem-gb", type=int, dest="mem_gb", help="memory per job (GB)")
    slurm.add_argument("--cpus", type=int, dest="cpus_per_task", help="CPU cores per job")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hiralign reproduce", description=DESCRIPTION)
    configure(parser)
    add_debug_flag(parser)
    return parser


def handle(args: argparse.Namespace) -> int:
    """Run (or, with ``--dry-run``, print) every table; 0 when every run finished, else 1."""
    import yaml

    from hiralign.reproduce import list_tables, load_table, plan, reproduce, table_name

    tables = list_tables(args.params_root) if args.tables == ["all"] else [table_name(t) for t in args.tables]
    if args.dry_run:
        for table in tables:
            spec = load_table(table, args.profile, args.params_root, args.scale)
            for run in plan(spec, args.runs_root, args.params_root, args.notebooks, args.data_root, args.replicates):
                print(f"# {table}/{run.name} [{spec.profile_label}] {run.experiment.our_model}")
                print(yaml.safe_dump(run.config, sort_keys=False))
        return 0
    slurm = {k: getattr(args, k) for k in SLURM_OPTIONS if getattr(args, k) is not None}
    results_dir = args.results_dir or REPO_ROOT / "results" / (f"{args.profile}-{args.scale}" if args.scale else "")
    status = 0
    for table in tables:
        run = reproduce(table, args.profile, args.executor, args.jobs, args.runs_root, results_dir,
                        params_root=args.params_root, notebooks_dir=args.notebooks, force=args.force, slurm=slurm,
                        data_root=args.data_root, replicates=args.replicates, scale=args.scale)
        print("\n" + run.paths["md"].read_text())
        status = status or (0 if run.ok else 1)
    return status


def reproduce_main(argv: Sequence[str] | None = None, debug: bool = False) -> int:
    """``hiralign reproduce ARGS`` as a function; returns the exit status (0: every run finished,
    1: a run failed, 2: a user error such as a missing dataset, printed in one message)."""
    args = build_parser().parse_args(argv)
    return guarded("reproduce", lambda: handle(args), debug or getattr(args, "debug", False))
