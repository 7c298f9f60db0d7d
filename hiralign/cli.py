"""Command line: ``hiralign run``, ``hiralign reproduce``, ``hiralign pretrain``, ``hiralign data``, ``hiralign bench``."""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _parse_set(values: list[str]) -> dict[str, dict]:
    """``--set 03_warp.k=8`` -> ``{"03_warp": {"k": 8}}`` (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, dict] = {}
    for item in values:
        key, sep, value = item.partition("=")
        stage, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set expects STAGE.PARAM=VALUE, got {item!r}")
        out.setdefault(stage, {})[name] = yaml.safe_load(value)
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from hiralign.pipeline import PipelineError, load_config, run_pipeline

    try:
        config = load_config(args.params, overrides=_parse_set(args.set))
        run_dir = run_pipeline(config, notebooks_dir=args.notebooks, force=args.force, until=args.until)
    except PipelineError as err:
        print(f"hiralign run: {err}", file=sys.stderr)
        return 1
    table = run_dir / "05_metrics.md"
    if table.exists():
        print("\n" + table.read_text())
    print(f"executed notebooks: {run_dir / 'notebooks'}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from hiralign.data import load

    for path in args.paths:
        cube = load(path, kind=args.kind)
        print(cube)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    script = REPO_ROOT / "benchmarks" / f"{args.name}.py"
    if not script.exists():
        available = sorted(p.stem for p in (REPO_ROOT / "benchmarks").glob("*.py"))
        print(f"hiralign bench: no benchmark {args.name!r}; available: {available}", file=sys.stderr)
        return 2
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hiralign", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the notebook pipeline 00..05 for a parameter file")
    run.add_argument("params", help="YAML parameter file, e.g. params/demo.yaml")
    run.add_argument("--force", action="store_true", help="rerun every stage even if up to date")
    run.add_argument("--until", help="stop after this stage (e.g. 03_warp)")
    run.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE", help="override a parameter")
    run.add_argument("--notebooks", default=str(REPO_ROOT / "notebooks"), help="folder of the numbered notebooks")
    run.set_defaults(func=cmd_run)

    data = sub.add_parser("data", help="load hyperspectral files and print a summary of each")
    data.add_argument("paths", nargs="+")
    data.add_argument("--kind", help="cave | icvl | kaist | hsidwrd | generic (guessed if omitted)")
    data.set_defaults(func=cmd_data)

    sub.add_parser("pretrain", help="pretrain a restorer on the source domain (hiralign pretrain --help)", add_help=False)
    sub.add_parser("reproduce", help="regenerate a paper table: hiralign reproduce TABLE --profile mini", add_help=False)

    bench = sub.add_parser("bench", help="run benchmarks/NAME.py with the given arguments")
    bench.add_argument("name")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pretrain"]:  # its own argparse owns every option after the word
        from hiralign.train import pretrain_main

        return pretrain_main(argv[1:]) or 0
    if argv[:1] == ["reproduce"]:
        from hiralign.reproduce import reproduce_main

        return reproduce_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
