"""HIR-ALIGN: target-adaptive data generation for hyperspectral image restoration.

Stages (paper Section III): 1. proxy generation (:mod:`hiralign.proxy`), 2a. RGB guide generation
(:mod:`hiralign.guides`), 2b. warp-based spectral transfer (:mod:`hiralign.warp`), 3. aligned
supervised finetuning (:mod:`hiralign.finetune`).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hiralign")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
