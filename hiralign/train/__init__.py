"""Supervised training of restorers: source pretraining (stage 1) and the loop reused by finetuning (stage 3).

Two entry points share one loop (:func:`fit`, :mod:`hiralign.train.loop`):

* :func:`train` -- from *clean* cubes and a task: every step samples random patches (seeded by
  ``(seed, epoch)``), augments them (flips, 90-degree rotations) and degrades them on the fly with
  :mod:`hiralign.degrade`, so the noise is re-drawn every epoch. ``weights`` sets how often each
  cube is sampled (e.g. a source / synthetic-target mixture ratio).
* :func:`train_pairs` -- from explicit ``(degraded, clean, extra)`` :class:`Pair` s, a fixed list
  or a function ``epoch -> pairs`` (to re-draw them every epoch); aligned patches are cropped
  (flips only: rotating a striped observation would turn column stripes into row stripes).

Optimiser AdamW with a per-step cosine schedule, L1 loss by default, gradient clipping, validation
PSNR / SSIM / SAM after every epoch (:mod:`hiralign.train.validation`), tqdm progress. With
``checkpoint=PATH`` the loop saves a resume state ``PATH.resume.pt`` after every epoch (an
interrupted run continues where it stopped) and the final checkpoint at ``PATH``: safetensors
weights whose header holds the JSON config (backbone, cfg, bands, task, wavelengths, training
parameters, metrics, history; :mod:`hiralign.train.checkpoint`).

Modules: :mod:`~hiralign.train.patches` (patch sampling, augmentation, batching),
:mod:`~hiralign.train.validation`, :mod:`~hiralign.train.loop`, :mod:`~hiralign.train.checkpoint`,
:mod:`~hiralign.train.source` (source pretraining; its command line is ``hiralign pretrain``,
:mod:`hiralign.cli.pretrain`), :mod:`~hiralign.train.released` (checkpoints of other code bases:
``.pth`` / ``.ckpt`` nestings and prefixes, with a report of missing / unexpected keys).
"""
from __future__ import annotations

from hiralign.train.checkpoint import (
    CHECKPOINT_DIR,
    CHECKPOINT_FORMAT,
    Checkpoint,
    CheckpointError,
    check_compatible,
    demo_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from hiralign.train.loop import LOSSES, TrainConfig, TrainResult, cosine_factor, fit, resume_path, train, train_pairs
from hiralign.train.patches import (
    Batch,
    Pair,
    augment_patch,
    collate,
    crop_pair,
    degraded_patches,
    epoch_rng,
    sampling_probabilities,
)
from hiralign.train.released import LoadReport, load_released, read_state_dict
from hiralign.train.source import pretrain, released_source, source_cubes, source_model
from hiralign.train.validation import (
    VALIDATION_SEED,
    evaluate_pairs,
    evaluate_restorer,
    reference_input,
    validation_pairs,
)

__all__ = [
    "Batch", "CHECKPOINT_DIR", "CHECKPOINT_FORMAT", "Checkpoint", "CheckpointError", "LOSSES", "LoadReport", "Pair",
    "TrainConfig",
    "TrainResult", "VALIDATION_SEED", "augment_patch", "check_compatible", "collate", "cosine_factor", "crop_pair",
    "degraded_patches", "demo_checkpoint", "epoch_rng", "evaluate_pairs", "evaluate_restorer", "fit",
    "load_checkpoint", "load_released", "pretrain", "read_checkpoint_config", "read_state_dict", "reference_input",
    "released_source", "resume_path",
    "sampling_probabilities", "save_checkpoint", "source_cubes", "source_model", "train", "train_pairs",
    "validation_pairs",
]
