"""Evaluation (paper Section IV-C, IV-G5, IV-G6): does adaptation help on the target domain?

Every model restores the SAME degraded target observations and is scored against the clean target
HSIs (evaluation only; never used for training in the paper's protocol). The observations are those
stored in ``01_proxy.h5`` plus the held-out ``target_unobserved`` images of ``00_data.h5``, degraded
with fixed seeds (:func:`hiralign.finetune.target_images`).

* methods: ``source-only`` (the source checkpoint that made the proxies), ``adapted`` (HIR-ALIGN,
  ``04_model.safetensors``), any comparison run of stage 3 (``proxy-only``, ``generated-only``,
  ``mixed``) and the clean-target ``upper-bound`` (Table XI), plus ``input`` (the observation itself,
  bicubic-upsampled for SR) as a floor;
* splits (Table X): ``observed`` (images whose observations built the proxies and the synthesized
  HSIs), ``unobserved`` (01 images not flagged observed, and 00's held-out images) and ``total`` (all images pooled: the mean over every image, not
  the mean of the two split means);
* metrics: PSNR / SSIM / SAM of :mod:`hiralign.metrics` per image, their means per split, and the
  difference to ``source-only`` on the same split (``d_psnr`` ...);
* spectral fidelity of stage 2: sPr / sRec (HSIGene Eq. 8, k = 10) of the synthesized HSIs -- and,
  for reference, of the proxies, of the clean observed images and of the source domain -- against
  the clean spectra of every target image;
* stage-2 quality (one row, :func:`stage2_quality`): the guides' layout similarity to their proxies,
  their diversity and colour distance (``02_guides.h5``, :mod:`hiralign.guides.quality`), and the
  synthesized HSIs' neighbour-angle statistics against the proxies' (``03_warp.h5``,
  :mod:`hiralign.warp.plausibility`) beside their sPr / sRec.

:func:`evaluate_run` does all of it for a run directory; :func:`write_metrics` writes
``05_metrics.json`` / ``.md`` / ``.csv`` (+ ``05_metrics_per_image.csv``,
``05_metrics_spectral_fidelity.csv``) with provenance through :mod:`hiralign.report`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from hiralign import metrics, statistics
from hiralign.finetune import ADAPTED, METHOD_NAMES, load_inputs, resolve_checkpoint, target_images
from hiralign.guides.quality import GuideQuality
from hiralign.report import Table, provenance, read_tables, write_tables
from hiralign.restorers.inference import restore
from hiralign.runtime import resolve_device, thread_limit
from hiralign.stages import missing_upstream, require
from hiralign.store import ArtifactError, RunStore, file_digest, resolve_run_dir
from hiralign.tasks import Task, get_task
from hiralign.train import load_checkpoint, reference_input
from hiralign.warp.plausibility import Plausibility

SOURCE_ONLY = "source-only"
INPUT = "input"
SPLITS = ("observed", "unobserved", "total")
METRICS = ("psnr", "ssim", "sam")
#: Inference tile (px of the observation); larger observations are restored tile by tile.
DEFAULT_TILE = 128
STEM = "05_metrics"
PROXY_ONLY = METHOD_NAMES["proxy"]
#: The comparisons the paper makes (Tables I-IV, VI): HIR-ALIGN against the source model and against
#: finetuning on the proxies alone; each is reported paired over images (and replicates).
PAIRED = ((ADAPTED, SOURCE_ONLY), (ADAPTED, PROXY_ONLY))
#: Tables printed in full in 05_metrics.md (the per-image table lives in its CSV and the JSON).
MARKDOWN_TABLES = ("summary", "paired", "spectral_fidelity", "stage2_quality")
#: Set label of the synthesized HSIs in the spectral-fidelity table.
SYNTHESIZED = "synthesized (03_warp)"
#: Columns of the stage-2 quality table (one row per run).
STAGE2_COLUMNS = ("generator", "ssim_to_proxy", "ssim_unrelated", "between_guides", "across_proxies", "colour_distance",
                  "nsam_synthesized", "nsam_proxy", "nsam_w1", "spr", "srec")


# ----------------------------------------------------------------------------- restoring


def restore_observations(model: torch.nn.Module, degraded: np.ndarray, extras: Sequence[Mapping[str, np.ndarray]],
                         tile: int | None = DEFAULT_TILE, device: str = "cpu") -> np.ndarray:
    """Restore every observation ``(N, B, h, w)`` with its extra inputs (e.g. the mask); returns
    ``(N, B, H, W)`` clipped to [0, 1]."""
    out = [restore(model, d, dict(e), tile=tile, device=device) for d, e in zip(degraded, extras)]
    return np.clip(np.stack(out), 0.0, 1.0)


def input_baseline(degraded: np.ndarray, task: str | Task) -> np.ndarray:
    """The observations on the clean grid (bicubic-upsampled for SR): the ``input`` row."""
    task = get_task(task)
    return np.stack([reference_input(d, task) for d in degraded])


# ----------------------------------------------------------------------------- scoring


def split_of(observed: Sequence[bool]) -> list[str]:
    return ["observed" if o else "unobserved" for o in observed]


def score_images(restored: Mapping[str, np.ndarray], clean: np.ndarray, names: Sequence[str],
                 observed: Sequence[bool]) -> list[dict[str, Any]]:
    """One record per (method, image): ``method``, ``split``, ``image``, ``psnr``, ``ssim``, ``sam``
    (:func:`hiralign.metrics.evaluate` of the restored cube against the clean one)."""
    if len(names) != len(clean) or len(observed) != len(clean):
        raise ValueError(f"{len(clean)} clean images but {len(names)} names and {len(observed)} observed flags")
    splits = split_of(observed)
    records = []
    for method, cubes in restored.items():
        if len(cubes) != len(clean):
            raise ValueError(f"method {method!r} restored {len(cubes)} images for {len(clean)} clean ones")
        for cube, ref, name, split in zip(cubes, clean, names, splits):
            records.append({"method": method, "split": split, "image": name, **metrics.evaluate(cube, ref)})
    return records


def _number(value: float) -> float | None:
    """A table value: None for the NaN of an interval one run or one image cannot give."""
    return float(value) if np.isfinite(value) else None


def _by_replicate(records: Sequence[Mapping[str, Any]], method: str, split: str) -> dict[int, list[Mapping[str, Any]]]:
    """``method``'s records on ``split`` (``total``: every split) grouped by replicate (0 when unmarked)."""
    out: dict[int, list[Mapping[str, Any]]] = {}
    for r in records:
        if r["method"] == method and (split == "total" or r["split"] == split):
            out.setdefault(int(r.get("replicate", 0)), []).append(r)
    return dict(sorted(out.items()))


def mean_interval(groups: Mapping[int, Sequence[Mapping[str, Any]]], metric: str, seed: int = 0) -> statistics.Interval:
    """The mean of ``metric`` with its 95% interval: over replicate means (t) with two or more
    replicates, else over the images of the one run (bootstrap)."""
    if len(groups) >= 2:
        return statistics.t_interval([np.mean([r[metric] for r in rs]) for rs in groups.values()])
    (only,) = groups.values()
    return statistics.bootstrap_interval([r[metric] for r in only], seed=seed)


def summarize(per_image: Sequence[Mapping[str, Any]], baseline: str = SOURCE_ONLY,
              descriptions: Mapping[str, str] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Mean PSNR / SSIM / SAM per (split, method) with 95% intervals (:func:`mean_interval`; records
    may carry a ``replicate`` index), splits ordered observed, unobserved, total (all images pooled);
    ``d_*`` = method minus ``baseline`` on the same split (None without a baseline). Splits without
    images are left out."""
    methods = list(dict.fromkeys(r["method"] for r in per_image))
    descriptions = descriptions or {}
    rows = []
    for split in SPLITS:
        means: dict[str, dict[str, Any]] = {}
        for method in methods:
            groups = _by_replicate(per_image, method, split)
            if not groups:
                continue
            intervals = {m: mean_interval(groups, m, seed) for m in METRICS}
            means[method] = {"n": len(next(iter(groups.values()))), "replicates": len(groups),
                             "interval": intervals[METRICS[0]].over, **intervals}
        for method, mean in means.items():
            base = means.get(baseline)
            row = {"method": method, "training": descriptions.get(method, ""), "split": split, "n": mean["n"],
                   "replicates": mean["replicates"]}
            for m in METRICS:
                row.update({m: mean[m].mean, f"{m}_low": _number(mean[m].low), f"{m}_high": _number(mean[m].high)})
            row.update({f"d_{m}": (mean[m].mean - base[m].mean) if base else None for m in METRICS})
            row["interval"] = mean["interval"]
            rows.append(row)
    return rows


def paired_scores(per_image: Sequence[Mapping[str, Any]], method: str, baseline: str, split: str,
                  metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(replicates, images)`` arrays of ``metric`` for two methods on the images both scored in every
    replicate (matched by replicate and image name)."""
    a, b = _by_replicate(per_image, method, split), _by_replicate(per_image, baseline, split)
    replicates = sorted(set(a) & set(b))
    if not replicates:
        return np.zeros((0, 0)), np.zeros((0, 0))
    score = {m: {(k, r["image"]): r[metric] for k in replicates for r in g[k]} for m, g in ((method, a), (baseline, b))}
    images = [i for i in dict.fromkeys(r["image"] for r in a[replicates[0]])
              if all((k, i) in score[method] and (k, i) in score[baseline] for k in replicates)]
    return (np.array([[score[method][(k, i)] for i in images] for k in replicates]),
            np.array([[score[baseline][(k, i)] for i in images] for k in replicates]))


def paired_comparisons(per_image: Sequence[Mapping[str, Any]], comparisons: Sequence[tuple[str, str]] = PAIRED,
                       seed: int = 0) -> list[dict[str, Any]]:
    """Method minus baseline per split and metric, paired over the same images and replicates
    (:func:`hiralign.statistics.paired_difference`), for each comparison whose methods were scored."""
    methods = {r["method"] for r in per_image}
    rows = []
    for method, baseline in comparisons:
        if method not in methods or baseline not in methods:
            continue
        for split in SPLITS:
            for metric in METRICS:
                a, b = paired_scores(per_image, method, baseline, split, metric)
                if a.size == 0:
                    continue
                d = statistics.paired_difference(a, b, metrics.HIGHER_IS_BETTER[metric], seed=seed)
                rows.append({"comparison": f"{method} - {baseline}", "split": split, "metric": metric,
                             "n": d.n_images, "replicates": d.n_replicates, "difference": d.mean,
                             "difference_low": _number(d.low), "difference_high": _number(d.high),
                             "over_replicates_low": _number(d.replicate_low),
                             "over_replicates_high": _number(d.replicate_high),
                             "p_wilcoxon": _number(d.p_value), "verdict": d.verdict})
    return rows


def spectral_fidelity(real: Any, sets: Mapping[str, Any], k: int = 10, max_samples: int | None = 5000,
                      seed: int = 0) -> list[dict[str, Any]]:
    """sPr / sRec (:func:`hiralign.metrics.spectral_precision_recall`) of every set of ``sets``
    against the ``real`` (clean target) spectra; ``max_samples`` spectra of each side are drawn with
    ``seed``. Sets with at most ``k`` spectra are skipped."""
    n_real = len(metrics.pixel_spectra(real, "real"))
    rows = []
    for label, generated in sets.items():
        n_gen = len(metrics.pixel_spectra(generated, label))
        if min(n_gen, n_real, max_samples or n_gen) <= k:
            continue
        pr = metrics.spectral_precision_recall(generated, real, k=k, max_samples=max_samples, seed=seed)
        rows.append({"set": label, "n_spectra": n_gen, "n_real": n_real,
                     "n_sampled": min(n_gen, n_real, max_samples or max(n_gen, n_real)), "k": k,
                     "spr": pr.precision, "srec": pr.recall})
    return rows


def stage2_quality(store: RunStore, fidelity: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The stage-2 quality row and the neighbour-angle histograms (``edges``, ``synthesized``,
    ``proxy``) of a run with ``02_guides.h5`` and ``03_warp.h5``; ``([], {})`` without them (or for
    demo records, which were not made from this run's proxies)."""
    if not (store.exists("02_guides") and store.exists("03_warp")):
        return [], {}
    guides, warp = store.read("02_guides"), store.read("03_warp")
    if guides.attrs.get("demo") or warp.attrs.get("demo"):
        return [], {}
    plausible = warp["quality"]
    spectral = next((r for r in fidelity if r["set"] == SYNTHESIZED), {})
    row = {"generator": str(guides.attrs["generator"]), **GuideQuality.from_tree(guides["quality"]).summary(),
           **Plausibility.from_tree(plausible).summary(), "spr": spectral.get("spr"), "srec": spectral.get("srec")}
    histograms = {"edges": np.asarray(plausible["histogram_edges"]), "synthesized": np.asarray(plausible["histogram_synthesized"]),
                  "proxy": np.asarray(plausible["histogram_proxy"])}
    return [row], histograms


# ----------------------------------------------------------------------------- the run directory


def describe_model(config: Mapping[str, Any]) -> str:
    """One line of the ``training`` column from a checkpoint config."""
    ft = config.get("finetune")
    if not ft:
        return f"source checkpoint ({config.get('backbone', '?')}), no adaptation"
    label = "HIR-ALIGN" if ft.get("composition") == "mixed" else f"finetuned, {ft.get('composition')}"
    if ft.get("composition") == "clean":
        label = "clean observed target HSIs (upper bound)"
    ratio = f", ratio {ft.get('ratio')}" if ft.get("composition") in ("mixed", "generated") else ""
    return f"{label}{ratio} ({config.get('backbone', '?')})"


def discover_models(run_dir: Path | str, source_checkpoint: str | Path = "") -> dict[str, Path]:
    """Method -> checkpoint: ``source-only`` (``source_checkpoint``, default the one recorded in
    01_proxy.h5) then every stage-3 model (from 04_finetune.h5, else the ``04_model*.safetensors``
    files: ``04_model`` is ``adapted``, ``04_model_<method>`` is ``<method>``)."""
    run_dir = resolve_run_dir(run_dir)
    store = RunStore(run_dir)
    if not source_checkpoint:
        if not store.exists("01_proxy"):
            raise missing_upstream(run_dir, "01_proxy", needed_by="05_evaluate")
        source_checkpoint = store.read("01_proxy")["source_checkpoint"]
    models = {SOURCE_ONLY: resolve_checkpoint(source_checkpoint, run_dir)}
    if store.exists("04_finetune"):
        names = store.read("04_finetune")["models"]
        found = {m: run_dir / n for m, n in names.items()}
    else:
        found = {}
        for path in sorted(run_dir.glob("04_model*.safetensors")):
            suffix = path.name[len("04_model"):-len(".safetensors")]
            found[suffix[1:] if suffix else ADAPTED] = path
    missing = [str(p) for p in found.values() if not p.exists()]
    if missing:
        raise ArtifactError(f"stage-3 checkpoints {missing} are missing: rerun notebook 04_finetune")
    if ADAPTED in found:  # adapted first after source-only, then the comparison runs
        found = {ADAPTED: found.pop(ADAPTED), **found}
    return {**models, **found}


def source_spectra(run_dir: Path | str) -> tuple[np.ndarray | None, dict]:
    """Clean source-domain training cubes and the dataset record from 00_data.h5 (None, {} if absent)."""
    store = RunStore(run_dir)
    if not store.exists("00_data"):
        return None, {}
    art = store.read("00_data")
    dataset = {"params": art.params, "synthetic": bool(art.attrs.get("synthetic", False))}
    group = art["source_train"] if "source_train" in art else {}
    cubes = group.get("cubes") if isinstance(group, dict) else None
    return (None if cubes is None or len(cubes) == 0 else np.asarray(cubes, np.float32)), dataset


@dataclass
class Evaluation:
    """The result of :func:`evaluate_run`: tables, provenance, and the arrays the figures need."""

    tables: list[Table]
    provenance: dict
    restored: dict[str, np.ndarray]
    clean: np.ndarray
    degraded: np.ndarray
    names: list[str]
    observed: np.ndarray
    wavelengths: np.ndarray
    task: str
    models: dict[str, Path] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)  # neighbour angles of stage 2 (stage2_quality)

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"no table {name!r}; tables: {[t.name for t in self.tables]}")

    def markdown(self, names: Sequence[str] = MARKDOWN_TABLES) -> str:
        return "\n".join(t.to_markdown() for t in self.tables if t.name in names)

    def image_index(self, image: int = -1) -> int:
        """``image`` if >= 0, else the first unobserved image (the generalisation case of Table X)."""
        if image >= 0:
            if image >= len(self.names):
                raise ValueError(f"image {image} out of range: the target has {len(self.names)} images")
            return image
        unobserved = np.flatnonzero(~self.observed)
        return int(unobserved[0]) if unobserved.size else 0

    def panels(self, i: int) -> dict[str, np.ndarray]:
        """``clean`` and every method's restoration of image ``i`` (for figures)."""
        return {"clean": self.clean[i], **{m: r[i] for m, r in self.restored.items()}}


SUMMARY_COLUMNS = ["method", "training", "split", "n", "replicates", *(c for m in METRICS for c in (m, f"{m}_low", f"{m}_high")),
                   "d_psnr", "d_ssim", "d_sam", "interval"]
PAIRED_COLUMNS = ["comparison", "split", "metric", "n", "replicates", "difference", "difference_low", "difference_high",
                  "over_replicates_low", "over_replicates_high", "p_wilcoxon", "verdict"]


def metric_tables(summary: Sequence[Mapping], per_image: Sequence[Mapping], fidelity: Sequence[Mapping],
                  task: str, stage2: Sequence[Mapping] = (), paired: Sequence[Mapping] = ()) -> list[Table]:
    """The result tables: ``summary`` (Table X / XI layout), ``paired``, ``per_image``,
    ``spectral_fidelity``, ``stage2_quality``."""
    tables = [
        Table.from_records("summary", summary, SUMMARY_COLUMNS,
                           title=f"Target-domain restoration ({task}): mean PSNR (dB) / SSIM / SAM (deg) [95% interval: "
                                 "t over replicates, or bootstrap over the images of one run]; d_* = difference to "
                                 "source-only on the same split"),
    ]
    if paired:
        tables.append(Table.from_records(
            "paired", paired, PAIRED_COLUMNS,
            title="Paired differences (method - baseline on the same images and replicates): mean [95% bootstrap "
                  "interval over images], 95% t interval over replicates, Wilcoxon signed-rank p; verdict at 95% "
                  "(SAM: lower is better)"))
    tables.append(Table.from_records("per_image", per_image, ["method", "split", "image", *METRICS],
                                     title="Per-image scores"))
    if fidelity:
        tables.append(Table.from_records(
            "spectral_fidelity", fidelity, ["set", "n_spectra", "n_real", "n_sampled", "k", "spr", "srec"],
            title="Spectral fidelity: sPr / sRec against the clean spectra of all target images (HSIGene Eq. 8)"))
    if stage2:
        tables.append(Table.from_records(
            "stage2_quality", stage2, list(STAGE2_COLUMNS),
            title="Stage-2 quality: guides' SSIM to their proxy (floor: ssim_unrelated) and 1 - SSIM between guides / "
                  "across proxies, colour distance to the proxies (sliced W1, RGB), median neighbour angle (deg) of "
                  "synthesized vs proxy HSIs and its W1, sPr / sRec of the synthesized HSIs"))
    return tables


def evaluate_run(run_dir: Path | str, models: Mapping[str, str | Path] | None = None, device: str = "cpu",
                 tile: int | None = DEFAULT_TILE, include_input: bool = True, spectral_samples: int | None = 5000,
                 k: int = 10, seed: int = 0, params: Mapping[str, Any] | None = None) -> Evaluation:
    """Score every model of a run on the target observations of ``01_proxy.h5`` (module docstring).

    ``models`` (method -> checkpoint) defaults to :func:`discover_models`. Needs the clean target
    HSIs in 01_proxy.h5. ``params`` (the caller's parameters) go into the provenance.
    """
    tic = time.perf_counter()
    run_dir = resolve_run_dir(run_dir)
    store = RunStore(run_dir)
    inputs = load_inputs(run_dir, need_synthesized=store.exists("03_warp"))
    targets = target_images(inputs)
    task = get_task(inputs.task)
    models = {m: Path(p) for m, p in (models or discover_models(run_dir, inputs.source_checkpoint)).items()}
    restored: dict[str, np.ndarray] = {}
    configs: dict[str, dict] = {}
    if include_input:
        restored[INPUT] = np.clip(input_baseline(targets.degraded, task), 0.0, 1.0)
    for method, path in models.items():
        ckpt = load_checkpoint(path, bands=targets.degraded.shape[1], task=task, device=device)
        configs[method] = ckpt.config
        restored[method] = restore_observations(ckpt.model, targets.degraded, targets.extras, tile, device)
    per_image = score_images(restored, targets.clean, targets.names, targets.observed)
    descriptions = {m: describe_model(c) for m, c in configs.items()}
    descriptions[INPUT] = "degraded observation" + (" (bicubic x%d)" % task.scale if task.scale > 1 else "")
    summary = summarize(per_image, SOURCE_ONLY if SOURCE_ONLY in restored else next(iter(restored)), descriptions, seed)
    paired = paired_comparisons(per_image, seed=seed)

    synthesized = inputs.synthesized
    source, dataset = source_spectra(run_dir)
    sets: dict[str, Any] = {}
    if synthesized is not None:
        sets[SYNTHESIZED] = synthesized.reshape(-1, *synthesized.shape[2:])
    sets["proxy (observed)"] = inputs.proxies
    sets["clean observed (reference)"] = inputs.clean[inputs.observed]
    if source is not None:
        sets["source domain (reference)"] = source
    fidelity = spectral_fidelity(targets.clean, sets, k=k, max_samples=spectral_samples, seed=seed)
    stage2, histograms = stage2_quality(store, fidelity)

    tables = metric_tables(summary, per_image, fidelity, task.name, stage2, paired)
    prov = provenance(
        dict(params or {}), dataset=dataset or None, seed=seed, device=device, wall_time_s=time.perf_counter() - tic,
        task=task.name, run_dir=str(run_dir.resolve()),
        models={m: {"path": str(p), "sha256": file_digest(p)} for m, p in models.items()},
        artifacts={s: store.header(s).digest for s in ("00_data", "01_proxy", "02_guides", "03_warp", "04_finetune")
                   if store.exists(s)},
        images={"observed": int(targets.observed.sum()), "unobserved": int((~targets.observed).sum()),
                "held_out_from_00_data": targets.held_out},
    )
    return Evaluation(tables, prov, restored, targets.clean, targets.degraded, targets.names, targets.observed,
                      inputs.wavelengths, task.name, models, histograms)


def target_label(dataset: Mapping[str, Any] | None) -> str:
    """What the target images are, from the ``dataset`` provenance of 00_data: the embedded synthetic
    benchmark, or the real scenes' path (the source domain may still be synthetic)."""
    path = ((dataset or {}).get("params") or {}).get("dataset", "synthetic")
    return "the SYNTHETIC embedded benchmark" if path == "synthetic" else f"real target scenes {path}"


def write_metrics(run_dir: Path | str, evaluation: Evaluation) -> dict[str, Path]:
    """Write ``05_metrics.json`` / ``.md`` / ``.csv`` (+ per-table CSVs) into ``run_dir``; the
    markdown shows the summary and spectral-fidelity tables (the per-image table is in its CSV)."""
    heading = f"HIR-ALIGN evaluation: {evaluation.task} on {target_label(evaluation.provenance.get('dataset'))}"
    return write_tables(run_dir, STEM, evaluation.tables, evaluation.provenance, heading=heading, markdown=MARKDOWN_TABLES)


# ----------------------------------------------------------------------------- the stage


def check(params: dict[str, Any]) -> None:
    """Parameter checks of the evaluation stage (no work)."""
    require("05_evaluate", params, "metric", lambda v: v in METRICS, f"one of {', '.join(METRICS)}")
    for key in ("tile", "spectral_samples", "crop"):
        require("05_evaluate", params, key, lambda v: v >= 0, ">= 0")
    require("05_evaluate", params, "k", lambda v: v >= 1, ">= 1")
    if "device" in params:
        resolve_device(params["device"])


def evaluation_tree(evaluation: Evaluation) -> dict[str, Any]:
    """The ``05_evaluate.h5`` content: every array the figures need (the tables live in 05_metrics.json)."""
    return {"restored": dict(evaluation.restored), "clean": evaluation.clean, "degraded": evaluation.degraded,
            "names": list(evaluation.names), "observed": evaluation.observed, "wavelengths": evaluation.wavelengths,
            "task": evaluation.task, "models": {m: str(p) for m, p in evaluation.models.items()},
            "histograms": dict(evaluation.histograms)}


def compute(stage) -> Evaluation:
    """Evaluate every model of the run, write ``05_metrics.*`` and the ``05_evaluate.h5`` record."""
    p = stage.params
    for upstream in ("00_data", "01_proxy", "04_finetune") + tuple(u for u in ("02_rgb_guides", "03_warp") if stage.has(u)):
        stage.depends_on(upstream)
    with thread_limit(p["threads"]):
        evaluation = evaluate_run(stage.run_dir, device=resolve_device(p["device"]), tile=p["tile"] or None,
                                  include_input=p["include_input"], spectral_samples=p["spectral_samples"] or None,
                                  k=p["k"], seed=p["seed"], params=p)
    paths = write_metrics(stage.run_dir, evaluation)
    stage.write(evaluation_tree(evaluation), files=tuple(paths.values()))
    return evaluation


def load(store: RunStore) -> Evaluation:
    """``05_evaluate.h5`` and ``05_metrics.json`` read back (verified): the same object :func:`compute` returned."""
    art = store.read("05_evaluate")
    tables, prov = read_tables(store.run_dir / f"{STEM}.json")
    return Evaluation(list(tables.values()), prov, dict(art["restored"]), art["clean"], art["degraded"],
                      [str(n) for n in art["names"]], np.asarray(art["observed"], bool), art["wavelengths"],
                      str(art["task"]), {m: Path(v) for m, v in art["models"].items()}, dict(art.data.get("histograms", {})))
