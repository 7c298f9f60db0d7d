"""``hiralign run PARAMS``: the notebook pipeline 00..05 for a parameter file."""
from __future__ import annotations

import argparse

from hiralign.cli._common import REPO_ROOT, UsageError

HELP = "run the notebook pipeline 00..05 for a parameter file"


def parse_set(values: list[str]) -> dict[str, dict]:
    """``--set 03_warp.k=8`` -> ``{"03_warp": {"k": 8}}`` (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, dict] = {}
    for item in values:
        key, sep, value = item.partition("=")
        stage, dot, name = key.partition(".")
        if not sep or not dot:
            raise UsageError(f"--set expects STAGE.PARAM=VALUE, got {item!r}")
        out.setdefault(stage, {})[name] = yaml.safe_load(value)
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("params", help="YAML parameter file, e.g. params/demo.yaml")
    parser.add_argument("--force", action="store_true", help="rerun every stage even if up to date")
    parser.add_argument("--until", help="stop after this stage (e.g. 03_warp)")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE", help="override a parameter")
    parser.add_argument("--run-dir", metavar="DIR",
                        help="write into DIR instead of the file's run_dir (e.g. one folder per --set variant)")
    parser.add_argument("--notebooks", default=str(REPO_ROOT / "notebooks"), help="folder of the numbered notebooks")
    parser.add_argument("--replicates", type=int, metavar="N",
                        help="run N replicates with derived seeds into RUN_DIR/rep0..rep<N-1> and report means with 95%% "
                             "intervals and paired tests (default: the file's replicates key, else 1)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="replicates run at a time after the first (default 1; each then gets its share of the cores)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="when another run holds the run folder, wait up to this long for it (default: stop at once)")


def handle(args: argparse.Namespace) -> int:
    from hiralign.pipeline import load_config, run_pipeline
    from hiralign.replicates import run_replicates

    import dataclasses
    from pathlib import Path

    config = load_config(args.params, overrides=parse_set(args.set))
    if args.run_dir:
        config = dataclasses.replace(config, run_dir=Path(args.run_dir))
    replicates = config.replicates if args.replicates is None else args.replicates
    if replicates < 1:
        raise UsageError(f"--replicates must be >= 1, got {replicates}")
    if replicates > 1:
        if args.until:
            raise UsageError("--until stops before the evaluation that replicates are compared on; run without it")
        paths = run_replicates(config, replicates, args.notebooks, jobs=args.jobs, force=args.force)
        print("\n" + paths["md"].read_text())
        return 0
    run_dir = run_pipeline(config, notebooks_dir=args.notebooks, force=args.force, until=args.until, wait=args.wait)
    table = run_dir / "05_metrics.md"
    if table.exists():
        print("\n" + table.read_text())
    print(f"executed notebooks: {run_dir / 'notebooks'}")
    return 0
