"""Stage 3: aligned supervised finetuning (paper Section III-C, Eq. 27-30).

Aligned pairs
-------------
Every training pair is made from ONE clean-looking target ``t`` and the task operator ``D`` applied to
that same ``t``: ``(D(t), t)``. The proxy branch uses the proxy HSIs ``t = x_hat_n`` (Eq. 27), the
synthesized branch the warped HSIs ``t = x_tilde_{n,g}`` (Eq. 28); the finetuning set of an epoch is
their union (Eq. 29). ``D`` is applied to the whole target image with the seed :func:`pair_seed`
``(seed, epoch, index)``, ``index`` being the pair's position in the epoch's list: degradations are
re-drawn every epoch and any pair can be rebuilt exactly. The training loop
(:func:`hiralign.train.train_pairs`) then crops aligned random patches from these pairs.

Mixture (Table VI / VII)
------------------------
``ratio`` is ``generated : proxy`` (``"3:1"`` by default; ``"1:1"``, ``"2:1"``, ``"5:1"``, ``"10:1"``
in Table VII; any positive number ``r`` is accepted). With ``P`` observed target images and ``G``
synthesized HSIs per image, ONE EPOCH holds (:func:`mixture_counts`)

=============  ============  ====================  ==========================================
composition    proxy pairs   synthesized pairs     note
=============  ============  ====================  ==========================================
``mixed``      ``P``         ``round(r * P)``      HIR-ALIGN
``proxy``      ``P``         0                     proxy-only row of Table VI
``generated``  0             ``round(r * P)``      generated-only row: ``mixed`` minus its anchor
``clean``      ``P`` clean   0                     clean observed HSIs replace the proxies: the
                                                   clean-target upper bound of Table XI
=============  ============  ====================  ==========================================

The ``round(r * P)`` synthesized samples are taken in rounds: each round visits every image once
(in a seeded random order) and takes that image's next synthesized HSI from a per-epoch shuffle of
its ``G`` HSIs. Every image therefore contributes ``floor(r)`` or ``ceil(r)`` synthesized samples
per epoch; when ``r > G`` an image's HSIs are reused (reshuffled every ``G`` rounds) with fresh
degradations. The loop draws ``steps_per_epoch * batch_size`` patches uniformly over the epoch's
pairs (all images share one size), so in expectation ``r`` synthesized patches are seen per proxy
patch, and every composition gets the same number of optimisation steps.

Training (Eq. 30)
-----------------
:func:`finetune` loads the source-pretrained checkpoint (``theta`` initialised from the source
model) and minimises the backbone's supervised loss (``TrainConfig.loss``, L1 by default) over the
aligned pairs with :func:`hiralign.train.train_pairs`. It writes the finetuned checkpoint
(``04_model.safetensors`` in the run directory for the main run) whose config records the source
checkpoint, the composition, the ratio and the per-epoch history.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from hiralign.runtime import resolve_device, thread_limit
from hiralign.stages import missing_upstream
from hiralign.store import Artifact, ArtifactError, RunStore, file_digest, resolve_run_dir
from hiralign.tasks import Task, get_task
from hiralign.train import (CheckpointError, Pair, TrainConfig, TrainResult, evaluate_pairs, load_checkpoint,
                            read_checkpoint_config, resume_path, train_pairs)

if TYPE_CHECKING:
    from torch import nn

#: Training-set compositions (Table VI) plus the clean-target upper bound (Table XI).
COMPOSITIONS = ("mixed", "proxy", "generated", "clean")
DEFAULT_RATIO = "3:1"
#: Method names of finetuned models in the result tables, by composition; the main run is "adapted".
METHOD_NAMES = {"mixed": "mixed", "proxy": "proxy-only", "generated": "generated-only", "clean": "upper-bound"}
ADAPTED = "adapted"
#: Branch names of a pair.
PROXY, GENERATED, CLEAN = "proxy", "generated", "clean"
#: Validation sets of the training curves (see :func:`validation_set`).
VALIDATIONS = ("proxy", "clean", "none")
STAGE = "04_finetune"
#: Degradation seeds of the validation observations: fixed, so epochs are comparable.
VALIDATION_SEED = 20_000


# ----------------------------------------------------------------------------- the mixture


def parse_ratio(ratio: str | float) -> float:
    """The synthesis ratio ``generated : proxy`` as a number: ``"3:1"`` -> 3.0, ``"1:2"`` -> 0.5, 3 -> 3.0."""
    if isinstance(ratio, str):
        parts = ratio.split(":")
        try:
            value = float(parts[0]) / float(parts[1]) if len(parts) == 2 else float(ratio)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"ratio must look like 'G:P' (e.g. '3:1') or be a number; got {ratio!r}") from None
    else:
        value = float(ratio)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"ratio (generated : proxy) must be a positive number; got {ratio!r}")
    return value


def check_composition(composition: str) -> str:
    if composition not in COMPOSITIONS:
        raise ValueError(f"unknown composition {composition!r}; choose one of {', '.join(COMPOSITIONS)}")
    return composition


def mixture_counts(n_images: int, composition: str = "mixed", ratio: str | float = DEFAULT_RATIO) -> dict[str, int]:
    """Pairs per epoch of each branch (module docstring): ``{"proxy", "generated", "clean"}`` counts
    for ``n_images`` observed target images."""
    check_composition(composition)
    if n_images < 1:
        raise ValueError(f"need at least one observed target image; got {n_images}")
    n_generated = int(round(parse_ratio(ratio) * n_images))
    return {
        PROXY: n_images if composition in ("mixed", "proxy") else 0,
        GENERATED: n_generated if composition in ("mixed", "generated") else 0,
        CLEAN: n_images if composition == "clean" else 0,
    }


@dataclass(frozen=True)
class SampleRef:
    """Which target a pair is made from: ``branch`` (proxy / generated / clean), the observed image
    index ``image`` and, for the synthesized branch, which synthesized HSI ``guide`` of that image."""

    branch: str
    image: int
    guide: int = -1


def pair_seed(seed: int, epoch: int, index: int) -> int:
    """Degradation seed of pair ``index`` of ``epoch``: ``numpy.random.SeedSequence([seed, epoch, index])``."""
    if min(seed, epoch, index) < 0:
        raise ValueError(f"seed, epoch and index must be >= 0; got {seed}, {epoch}, {index}")
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def generated_schedule(n_images: int, n_guides: int, n_samples: int, rng: np.random.Generator) -> list[SampleRef]:
    """``n_samples`` synthesized-branch samples taken in rounds over the images (module docstring)."""
    if n_samples and n_guides < 1:
        raise ValueError("the synthesized branch needs at least one synthesized HSI per image (03_warp)")
    queues: list[list[int]] = [[] for _ in range(n_images)]
    refs: list[SampleRef] = []
    while len(refs) < n_samples:
        for image in rng.permutation(n_images)[: n_samples - len(refs)]:
            if not queues[image]:
                queues[image] = [int(g) for g in rng.permutation(n_guides)]
            refs.append(SampleRef(GENERATED, int(image), queues[image].pop()))
    return refs


def epoch_schedule(n_images: int, n_guides: int, composition: str = "mixed", ratio: str | float = DEFAULT_RATIO,
                   seed: int = 0, epoch: int = 0) -> list[SampleRef]:
    """The target of every pair of one epoch, in order (a pair's index is its list position):
    proxies (or clean images) first, then the synthesized samples re-drawn from ``(seed, epoch)``."""
    counts = mixture_counts(n_images, composition, ratio)
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    refs = [SampleRef(PROXY, i) for i in range(counts[PROXY])] + [SampleRef(CLEAN, i) for i in range(counts[CLEAN])]
    return refs + generated_schedule(n_images, n_guides, counts[GENERATED], rng)


@dataclass
class AlignedPair(Pair):
    """A :class:`hiralign.train.Pair` that remembers where it came from: ``degraded`` is the task
    operator (its training operator for finetuning pairs) applied to ``clean`` (the target ``ref``)
    with seed ``seed``; ``info`` is the degradation info (sigma, mask, scale ...)."""

    ref: SampleRef = SampleRef(PROXY, 0)
    seed: int = 0
    info: dict = field(default_factory=dict)


def make_pair(target: np.ndarray, task: str | Task, ref: SampleRef, seed: int, training: bool = False) -> AlignedPair:
    """``(D(target), target)`` with the task operator ``D`` seeded by ``seed`` (Eq. 27 / 28);
    ``training=True`` for a finetuning pair (the task's training degradation, :meth:`Task.degrade`)."""
    task = get_task(task)
    target = np.ascontiguousarray(target, dtype=np.float32)
    if target.shape[1] % task.scale or target.shape[2] % task.scale:
        raise ValueError(f"target size {target.shape[1:]} must be divisible by the {task.name} scale {task.scale}")
    observed = task.degrade(target, seed=seed, training=training)
    extra = task.extra_inputs(observed.info, observed.data.shape)
    return AlignedPair(observed.data, target, extra, ref=ref, seed=seed, info=observed.info)


def _as_stack(array: Any, ndim: int, name: str) -> np.ndarray:
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/infinite values")
    return arr


@dataclass
class AlignedPairs:
    """The finetuning set of Eq. 29 over the observed target images; call it with an epoch.

    ``proxies`` ``(P, B, H, W)``: proxy HSIs of the observed images (Eq. 27). ``synthesized``
    ``(P, G, B, H, W)``: the warped HSIs of each observed image (Eq. 28; needed by ``mixed`` and
    ``generated``). ``clean`` ``(P, B, H, W)``: the clean observed HSIs (only for ``clean``, the
    upper bound). ``pairs(epoch)`` returns that epoch's :class:`AlignedPair` list, so the object
    itself is what :func:`hiralign.train.train_pairs` takes.
    """

    proxies: np.ndarray
    task: str | Task
    synthesized: np.ndarray | None = None
    clean: np.ndarray | None = None
    composition: str = "mixed"
    ratio: str | float = DEFAULT_RATIO
    seed: int = 0

    def __post_init__(self) -> None:
        self.task = get_task(self.task)
        check_composition(self.composition)
        parse_ratio(self.ratio)
        self.proxies = _as_stack(self.proxies, 4, "proxies")
        if self.synthesized is not None:
            self.synthesized = _as_stack(self.synthesized, 5, "synthesized")
            if self.synthesized.shape[0] != self.proxies.shape[0] or self.synthesized.shape[2:] != self.proxies.shape[1:]:
                raise ValueError(f"synthesized HSIs {self.synthesized.shape} do not match the proxies {self.proxies.shape}: "
                                 "expected (P, G, B, H, W) for the same P observed images")
        if self.clean is not None:
            self.clean = _as_stack(self.clean, 4, "clean")
            if self.clean.shape != self.proxies.shape:
                raise ValueError(f"clean HSIs {self.clean.shape} do not match the proxies {self.proxies.shape}")
        if self.composition in ("mixed", "generated") and self.n_guides == 0:
            raise ValueError(f"composition {self.composition!r} needs synthesized HSIs (03_warp.h5, notebook 03_warp)")
        if self.composition == "clean" and self.clean is None:
            raise ValueError("composition 'clean' (upper bound) needs the clean observed HSIs (01_proxy.h5 'clean')")

    @property
    def n_images(self) -> int:
        return int(self.proxies.shape[0])

    @property
    def n_guides(self) -> int:
        return 0 if self.synthesized is None else int(self.synthesized.shape[1])

    def counts(self) -> dict[str, int]:
        """Pairs per epoch of each branch (:func:`mixture_counts`)."""
        return mixture_counts(self.n_images, self.composition, self.ratio)

    def schedule(self, epoch: int) -> list[SampleRef]:
        return epoch_schedule(self.n_images, self.n_guides, self.composition, self.ratio, self.seed, epoch)

    def target(self, ref: SampleRef) -> np.ndarray:
        """The clean-looking target HSI ``(B, H, W)`` a pair is made from."""
        if ref.branch == PROXY:
            return self.proxies[ref.image]
        if ref.branch == GENERATED:
            return self.synthesized[ref.image, ref.guide]
        if ref.branch == CLEAN:
            return self.clean[ref.image]
        raise ValueError(f"unknown branch {ref.branch!r}")

    def pair(self, epoch: int, index: int) -> AlignedPair:
        """Pair ``index`` of ``epoch``, rebuilt exactly from its seed."""
        ref = self.schedule(epoch)[index]
        return make_pair(self.target(ref), self.task, ref, pair_seed(self.seed, epoch, index), training=True)

    def epoch(self, epoch: int) -> list[AlignedPair]:
        """All pairs of ``epoch`` (degradations re-drawn per epoch)."""
        return [make_pair(self.target(ref), self.task, ref, pair_seed(self.seed, epoch, i), training=True)
                for i, ref in enumerate(self.schedule(epoch))]

    __call__ = epoch


# ----------------------------------------------------------------------------- run-directory inputs


@dataclass
class FinetuneInputs:
    """What stage 3 reads from the run directory (01_proxy.h5, 03_warp.h5).

    ``proxies`` / ``synthesized`` / ``clean_observed`` cover the observed images only (in 01 order);
    ``degraded`` / ``clean`` / ``names`` / ``observed`` cover every target image (for validation and
    evaluation). ``task`` and ``source_checkpoint`` come from 01_proxy.h5.
    """

    wavelengths: np.ndarray
    names: list[str]
    observed: np.ndarray
    degraded: np.ndarray
    degradation: dict
    proxies: np.ndarray
    synthesized: np.ndarray | None
    clean: np.ndarray | None
    task: str
    source_checkpoint: str
    run_dir: Path
    params: dict = field(default_factory=dict)

    @property
    def clean_observed(self) -> np.ndarray | None:
        return None if self.clean is None else self.clean[self.observed]


@dataclass
class TargetImages:
    """Every target image with a degraded observation and its clean HSI (evaluation only).

    The images of ``01_proxy.h5`` keep their stored observations (``observed`` as flagged there);
    the held-out ``target_unobserved`` images of ``00_data.h5`` (never seen by stages 1-3) are
    degraded here by the task with seeds continuing 01's: ``seed_01 + n_01 + j`` for held-out
    image ``j`` (01 uses ``seed_01 + i`` for its image ``i``). ``held_out`` counts them.
    """

    names: list[str]
    observed: np.ndarray
    degraded: np.ndarray
    extras: list[dict]
    clean: np.ndarray
    held_out: int = 0

    def pairs(self) -> list[Pair]:
        return [Pair(d, c, e) for d, c, e in zip(self.degraded, self.clean, self.extras)]


def held_out_cubes(run_dir: Path | str) -> tuple[np.ndarray | None, list[str]]:
    """The clean ``target_unobserved`` cubes and names of ``00_data.h5`` (``None, []`` if absent)."""
    store = RunStore(run_dir)
    if not store.exists("00_data"):
        return None, []
    group = store.read("00_data").data.get("target_unobserved") or {}
    cubes = group.get("cubes") if isinstance(group, dict) else None
    if cubes is None or len(cubes) == 0:
        return None, []
    return np.asarray(cubes, dtype=np.float32), [str(n) for n in group.get("names", [])]


def target_images(inputs: FinetuneInputs) -> TargetImages:
    """The evaluation images of a run (see :class:`TargetImages`); needs clean HSIs in 01_proxy.h5."""
    if inputs.clean is None:
        raise ValueError(f"{inputs.run_dir / '01_proxy.h5'} holds no clean target HSIs: evaluation needs them "
                         "(the embedded benchmark stores them; for real data give clean scenes to notebook 00)")
    task = get_task(inputs.task)
    extras = [observation_extra(task, inputs.degradation, i, d.shape) for i, d in enumerate(inputs.degraded)]
    degraded, clean, names = list(inputs.degraded), list(inputs.clean), list(inputs.names)
    held, held_names = held_out_cubes(inputs.run_dir)
    if held is not None:
        if held.shape[1:] != inputs.clean.shape[1:]:
            raise ArtifactError(f"00_data.h5 target_unobserved cubes {held.shape[1:]} differ from the 01_proxy.h5 "
                                f"images {inputs.clean.shape[1:]}; rerun notebook 01_proxy")
        first = int(inputs.params.get("seed", 0)) + len(inputs.names)
        for j, cube in enumerate(held):
            obs = task.degrade(cube, seed=first + j)
            degraded.append(obs.data)
            extras.append(task.extra_inputs(obs.info, obs.data.shape))
            clean.append(cube)
        names += held_names if len(held_names) == len(held) else [f"held-out {j}" for j in range(len(held))]
    n_held = 0 if held is None else len(held)
    observed = np.concatenate([inputs.observed, np.zeros(n_held, dtype=bool)])
    return TargetImages(names, observed, np.stack(degraded), extras, np.stack(clean), n_held)


def _observed_rows(warp: Any, names: list[str], observed: np.ndarray) -> np.ndarray:
    """Rows of 01's images that 03_warp's ``hsi`` rows belong to (by ``names`` when stored)."""
    n = warp["hsi"].shape[0]
    if "names" in warp:
        wanted = list(warp["names"])
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise ArtifactError(f"{warp.path} holds images {unknown} that 01_proxy.h5 does not have; "
                                "rerun notebook 03_warp with this run_dir")
        return np.array([names.index(w) for w in wanted])
    if n == int(observed.sum()):
        return np.flatnonzero(observed)
    if n == len(names):
        return np.arange(len(names))
    raise ArtifactError(f"{warp.path} has {n} images but 01_proxy.h5 has {int(observed.sum())} observed "
                        f"of {len(names)}; rerun notebook 03_warp")


def synthesized_of(warp: Artifact, names: list[str], observed: np.ndarray) -> np.ndarray:
    """The synthesized HSIs ``(P, G, B, H, W)`` of the observed images (01 order) from a ``03_warp.h5`` record.

    Synthesized HSIs of unobserved images (if 03_warp made any) are dropped: only observed target
    images feed the finetuning set. A demo record (``demo=True``) is refused.
    """
    if warp.attrs.get("demo"):
        raise ArtifactError(f"{warp.path} was made from a DEMO pair (demo=True), not from this run's proxies; "
                            "rerun notebook 03_warp with demo=False")
    rows = _observed_rows(warp, names, observed)
    keep = observed[rows]
    hsi = np.asarray(warp["hsi"], dtype=np.float32)
    if hsi.ndim == 4:  # (N, B, H, W): one synthesized HSI per image
        hsi = hsi[:, None]
    lacking = sorted(set(np.flatnonzero(observed)) - set(rows[keep]))
    if lacking:
        raise ArtifactError(f"{warp.path} has no synthesized HSIs for observed images {[names[i] for i in lacking]}; "
                            "rerun notebook 03_warp on every observed proxy (max_pairs=0)")
    return hsi[keep][np.argsort(rows[keep])]  # observed rows in 01 order


def inputs_from(proxy: Artifact, warp: Artifact | None) -> FinetuneInputs:
    """Stage-3 inputs from verified ``01_proxy.h5`` and (optionally) ``03_warp.h5`` records."""
    names = [str(n) for n in proxy["names"]]
    observed = np.asarray(proxy["observed"], dtype=bool)
    if not observed.any():
        raise ArtifactError(f"{proxy.path} marks no target image as observed; rerun notebook 01_proxy with observed images")
    return FinetuneInputs(
        wavelengths=np.asarray(proxy["wavelengths"], dtype=np.float64), names=names, observed=observed,
        degraded=np.asarray(proxy["degraded"], dtype=np.float32), degradation=proxy["degradation"] if "degradation" in proxy else {},
        proxies=np.asarray(proxy["proxy"], dtype=np.float32)[observed],
        synthesized=None if warp is None else synthesized_of(warp, names, observed),
        clean=np.asarray(proxy["clean"], dtype=np.float32) if "clean" in proxy else None,
        task=str(proxy.params["task"]), source_checkpoint=str(proxy["source_checkpoint"]),
        run_dir=proxy.path.parent, params=dict(proxy.params))


def load_inputs(run_dir: Path | str, need_synthesized: bool = True) -> FinetuneInputs:
    """Read 01_proxy.h5 and (when ``need_synthesized``) 03_warp.h5 from ``run_dir`` (see :func:`inputs_from`);
    a missing record raises an error naming the notebook that makes it."""
    store = RunStore(run_dir)
    for stage, record in (("01_proxy", "01_proxy"), ("03_warp", "03_warp"))[: 1 + bool(need_synthesized)]:
        if not store.exists(record):
            raise missing_upstream(store.run_dir, stage, needed_by=STAGE)
    return inputs_from(store.read("01_proxy"), store.read("03_warp") if need_synthesized else None)


def resolve_checkpoint(path: str | Path, run_dir: Path | str | None = None) -> Path:
    """An existing checkpoint file: ``path`` as given, else relative to ``run_dir``, the notebooks
    folder or the repository root (01_proxy records the path its notebook was given)."""
    path = Path(path)
    root = Path(__file__).resolve().parents[1]
    candidates = [path] if path.is_absolute() else [path, *(b / path for b in (Path(run_dir or "."), root / "notebooks", root))]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"source checkpoint {path} not found (looked in: {', '.join(map(str, candidates))}); "
                            "pass checkpoint= explicitly")


def observation_extra(task: str | Task, degradation: Mapping[str, Any], index: int, shape: tuple[int, ...]) -> dict:
    """The task's extra inputs (mask) of stored observation ``index`` from 01's stacked degradation info."""
    task = get_task(task)
    info = {k: v[index] for k, v in degradation.items() if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) > index}
    return task.extra_inputs(info, shape)


def validation_set(inputs: FinetuneInputs, mode: str = "proxy", task: str | Task | None = None,
                   seed: int = VALIDATION_SEED) -> list[Pair]:
    """Pairs scored after every epoch for the training curves (they never steer training).

    ``proxy``: each observed proxy degraded once with the fixed seed ``seed + i`` and scored against
    the proxy -- uses no clean target data, as in the paper's protocol. ``clean``: every target
    image's observation (:func:`target_images`: observed and unobserved) scored against its clean
    HSI -- a monitoring curve for the demo, evaluation-only data. ``none``: no validation.
    """
    if mode not in VALIDATIONS:
        raise ValueError(f"unknown validation {mode!r}; choose one of {', '.join(VALIDATIONS)}")
    task = get_task(task or inputs.task)
    if mode == "none":
        return []
    if mode == "proxy":
        return [make_pair(p, task, SampleRef(PROXY, i), seed + i) for i, p in enumerate(inputs.proxies)]
    if inputs.clean is None:
        raise ValueError("validation='clean' needs clean target HSIs in 01_proxy.h5; use validation='proxy'")
    return target_images(inputs).pairs()


# ----------------------------------------------------------------------------- Eq. 30


def finetune(source_checkpoint: str | Path, pairs: AlignedPairs, config: TrainConfig, out: str | Path | None = None,
             val_pairs: Sequence[Pair] | None = None, wavelengths: Sequence[float] | None = None,
             meta: Mapping[str, Any] | None = None, resume: bool = True, progress: bool = True,
             model: nn.Module | None = None) -> TrainResult:
    """Finetune the source model on the aligned pairs (Eq. 30) and save it to ``out``.

    The model is loaded from ``source_checkpoint`` (its band count and task must match the pairs;
    ``model``, e.g. a network built outside hiralign, receives its weights instead of the network the
    checkpoint names, :func:`hiralign.train.load_checkpoint`), then trained by :func:`hiralign.train.train_pairs` with ``config`` (lr, epochs, loss ...). The
    returned history starts with an ``epoch 0`` row: the source model on ``val_pairs`` before any
    finetuning. The checkpoint config records the source checkpoint (path and hash), the
    composition, ratio, per-epoch pair counts, wavelengths and ``meta``.
    """
    bands = pairs.proxies.shape[1]
    source = load_checkpoint(source_checkpoint, bands=bands, task=pairs.task, device=config.device, model=model)
    model = source.model
    if config.patch_size % pairs.task.scale:
        raise ValueError(f"patch {config.patch_size} must be a multiple of the task scale {pairs.task.scale}")
    if config.patch_size > min(pairs.proxies.shape[2:]):
        raise ValueError(f"patch {config.patch_size} exceeds the {pairs.proxies.shape[2:]} target images")
    history0 = []
    if val_pairs:
        row0 = evaluate_pairs(model, val_pairs, tile=config.val_tile, device=config.device)
        history0 = [{"epoch": 0, **row0}]
    wl = wavelengths if wavelengths is not None else source.config.get("wavelengths")
    record = {
        "wavelengths": None if wl is None else [float(w) for w in wl],
        "stage": STAGE,
        "source": source.config.get("source", ""),
        "source_checkpoint": str(source_checkpoint),
        "source_checkpoint_sha256": file_digest(source_checkpoint),
        "finetune": {"composition": pairs.composition, "ratio": str(pairs.ratio), "seed": pairs.seed,
                     "pairs_per_epoch": pairs.counts(), "n_images": pairs.n_images, "n_guides": pairs.n_guides},
        **dict(meta or {}),
    }
    model.train()
    result = train_pairs(model, pairs, config, val_pairs=list(val_pairs or []) or None, checkpoint=out, meta=record,
                         resume=resume, progress=progress)
    result.history[:0] = history0
    return result


def model_path(run_dir: Path | str, method: str = ADAPTED) -> Path:
    """Checkpoint file of a finetuned model: ``04_model.safetensors`` for the main (``adapted``) run,
    ``04_model_<method>.safetensors`` for comparison runs (``proxy-only``, ``upper-bound`` ...)."""
    suffix = "" if method == ADAPTED else f"_{method}"
    return resolve_run_dir(run_dir) / f"04_model{suffix}.safetensors"


def finetune_runs(composition: str, compare: Sequence[str] = (), upper_bound: bool = False) -> dict[str, str]:
    """Method name -> composition of every model stage 3 trains: the main run ``adapted`` with
    ``composition``, each composition of ``compare`` (named by :data:`METHOD_NAMES`), and the
    clean-target upper bound when ``upper_bound``."""
    runs = {ADAPTED: check_composition(composition)}
    for comp in compare:
        if check_composition(comp) != composition:
            runs[METHOD_NAMES[comp]] = comp
    if upper_bound:
        runs[METHOD_NAMES["clean"]] = "clean"
    return runs


def parse_list(text: str | Sequence[str]) -> list[str]:
    """``"proxy, generated"`` -> ``["proxy", "generated"]`` (a list passes through; ``""`` -> ``[]``)."""
    if isinstance(text, str):
        return [t.strip() for t in text.split(",") if t.strip()]
    return list(text)


# ----------------------------------------------------------------------------- the stage


def history_arrays(history: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per-epoch history rows as one float array per numeric key (missing values as NaN)."""
    keys = [k for k in dict.fromkeys(k for row in history for k in row)
            if all(isinstance(row.get(k, 0.0), (int, float, np.number)) for row in history)]
    return {k: np.array([float(row.get(k, np.nan)) for row in history]) for k in keys}


def curves_tree(histories: Mapping[str, Sequence[Mapping[str, Any]]], models: Mapping[str, Path],
                compositions: Mapping[str, str]) -> dict[str, Any]:
    """The ``04_finetune.h5`` content: ``curves/<method>/<key>`` per-epoch arrays (epoch, loss, lr, psnr,
    ssim, sam, input_*, seconds), ``models/<method>`` the checkpoint file name, ``compositions/<method>``."""
    return {
        "curves": {m: history_arrays(h) for m, h in histories.items()},
        "models": {m: Path(p).name for m, p in models.items()},
        "compositions": dict(compositions),
    }


@dataclass
class StageResult:
    """What stage 3 made (or found current): per-method curves, checkpoints and compositions, the
    pairs per epoch of each run, and the inputs it read."""

    curves: dict[str, dict[str, np.ndarray]]
    models: dict[str, Path]
    compositions: dict[str, str]
    counts: dict[str, dict[str, int]]
    inputs: FinetuneInputs
    ratio: str
    seed: int

    def pairs(self, method: str = ADAPTED) -> AlignedPairs:
        """The finetuning set of a run (rebuilt: pairs are deterministic)."""
        return make_pairs(self.inputs, self.compositions[method], self.ratio, self.seed)


def make_pairs(inputs: FinetuneInputs, composition: str, ratio: str | float = DEFAULT_RATIO, seed: int = 0) -> AlignedPairs:
    """The :class:`AlignedPairs` of ``composition`` over the observed images of ``inputs``."""
    return AlignedPairs(inputs.proxies, inputs.task, inputs.synthesized,
                        inputs.clean_observed if composition == "clean" else None, composition, ratio, seed)


def stage_runs(params: Mapping[str, Any]) -> dict[str, str]:
    """Method -> composition of every model the notebook parameters ask for."""
    return finetune_runs(params["composition"], parse_list(params["compare"]), params["upper_bound"])


def needs_synthesized(runs: Mapping[str, str]) -> bool:
    return any(c in ("mixed", "generated") for c in runs.values())


def train_config(params: Mapping[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of the notebook parameters (cosine decay to lr / 100)."""
    return TrainConfig(epochs=params["epochs"], steps_per_epoch=params["steps_per_epoch"], batch_size=params["batch"],
                       patch_size=params["patch"], lr=params["lr"], min_lr=params["lr"] / 100, loss=params["loss"],
                       seed=params["seed"], device=params["device"])


def check(params: dict[str, Any]) -> None:
    """Parameter checks of stage 3 (no work): compositions, ratio, validation, loss, sizes, files."""
    from hiralign.stages import require
    from hiralign.tasks import TASKS
    from hiralign.train import LOSSES

    stage = "04_finetune"
    require(stage, params, "composition", lambda v: v in COMPOSITIONS, f"one of {', '.join(COMPOSITIONS)}")
    require(stage, params, "compare", lambda v: set(parse_list(v)) <= set(COMPOSITIONS),
            f"empty or comma-separated compositions ({', '.join(COMPOSITIONS)})")
    require(stage, params, "ratio", _valid_ratio, "generated:proxy such as 3:1, or a positive number")
    require(stage, params, "task", lambda v: not v or v in TASKS, f"empty or one of {', '.join(TASKS)}")
    require(stage, params, "validation", lambda v: v in VALIDATIONS, f"one of {', '.join(VALIDATIONS)}")
    require(stage, params, "loss", lambda v: v in LOSSES, f"one of {', '.join(sorted(LOSSES))}")
    for key in ("epochs", "steps_per_epoch", "batch", "patch"):
        require(stage, params, key, lambda v: v >= 1, ">= 1")
    require(stage, params, "lr", lambda v: v > 0, "> 0")
    require(stage, params, "checkpoint", lambda v: not v or Path(v).expanduser().is_file(),
            "empty (01's checkpoint) or an existing file")
    if "device" in params:
        resolve_device(params["device"])


def _valid_ratio(ratio: Any) -> bool:
    try:
        parse_ratio(ratio)
    except ValueError:
        return False
    return True


def compute(stage) -> StageResult:
    """Stage 3: finetune the source model once per run of :func:`finetune_runs` (the main ``adapted``
    run, comparison compositions, the upper bound), write ``04_model*.safetensors`` and ``04_finetune.h5``.

    ``task`` / ``backbone`` (optional) must agree with 01_proxy.h5 and the source checkpoint;
    ``checkpoint`` overrides the source checkpoint recorded by 01_proxy. Training always starts from
    the source model (stale resume states are not reused: the pairs may have changed).
    """
    p = stage.params
    runs = stage_runs(p)
    inputs = inputs_from(stage.read("01_proxy"), stage.read("03_warp") if needs_synthesized(runs) else None)
    if p["task"] and get_task(p["task"]).name != inputs.task:
        raise CheckpointError(f"04_finetune: task {p['task']!r} differs from the task {inputs.task!r} of 01_proxy.h5; "
                              "rerun the pipeline with one task")
    source = resolve_checkpoint(p["checkpoint"] or inputs.source_checkpoint, stage.run_dir)
    stage.use_file("checkpoint", source)
    source_config = read_checkpoint_config(source)
    if p["backbone"] and source_config.get("backbone") != p["backbone"]:
        raise CheckpointError(f"04_finetune: backbone {p['backbone']!r} differs from the source checkpoint's "
                              f"{source_config.get('backbone')!r} ({source})")
    config = train_config(p)
    val_pairs = validation_set(inputs, p["validation"])
    models = {method: model_path(stage.run_dir, method) for method in runs}
    histories = {}
    with thread_limit(p["threads"]):
        for method, comp in runs.items():
            pairs = make_pairs(inputs, comp, p["ratio"], config.seed)
            stage.log(f"finetuning {method!r} (composition {comp}, ratio {p['ratio']}): pairs per epoch {pairs.counts()}")
            resume_path(models[method]).unlink(missing_ok=True)
            result = finetune(source, pairs, config, out=models[method], val_pairs=val_pairs, wavelengths=inputs.wavelengths,
                              meta={"method": method, "validation": p["validation"]}, resume=False)
            histories[method] = result.history
            stage.log(f"  wrote {models[method]}")
    stage.write(curves_tree(histories, models, runs), files=tuple(models.values()))
    return load(stage.store)


def load(store: RunStore) -> StageResult:
    """``04_finetune.h5`` read back (verified, checkpoints included) with the inputs it was made from."""
    art = store.read(STAGE)
    p = art.params
    compositions = dict(art["compositions"])
    inputs = load_inputs(store.run_dir, need_synthesized=needs_synthesized(compositions))
    counts = {m: mixture_counts(len(inputs.proxies), c, p["ratio"]) for m, c in compositions.items()}
    models = {m: store.run_dir / name for m, name in art["models"].items()}
    return StageResult(art["curves"], models, compositions, counts, inputs, str(p["ratio"]), int(p["seed"]))


def branch_examples(pairs: AlignedPairs, epoch: int = 0) -> dict[str, AlignedPair]:
    """The first pair of each branch in ``epoch``, labelled ``"proxy 0"``, ``"generated 2/1"`` (image/guide)."""
    examples: dict[str, AlignedPair] = {}
    seen: set[str] = set()
    for pair in pairs(epoch):
        if pair.ref.branch not in seen:
            seen.add(pair.ref.branch)
            guide = f"/{pair.ref.guide}" if pair.ref.guide >= 0 else ""
            examples[f"{pair.ref.branch} {pair.ref.image}{guide}"] = pair
    return examples


def curves_table(curves: Mapping[str, Mapping[str, np.ndarray]]) -> list[dict[str, Any]]:
    """First and last epoch of every run: loss and the validation PSNR / SSIM / SAM."""
    rows = []
    for method, c in curves.items():
        for j in (0, -1):
            row = {"method": method, "epoch": int(c["epoch"][j])}
            row.update({k: float(c[k][j]) for k in ("loss", "psnr", "ssim", "sam") if k in c})
            rows.append(row)
    return rows
