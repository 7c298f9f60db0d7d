"""Stage 2b: warp-based hyperspectral generation (Sec. III-B.2, Eq. 9-26).

``spectral_warp(proxy_hsi, proxy_rgb, guide_rgb, **params)`` retrieves candidate proxy pixels for
every guide pixel with patch descriptors and FAISS (Eq. 9-13), optimises soft aggregation and local
interpolation weights against the guide RGB (Eq. 14-21), and moves the proxy spectra with the same
weights through the sparse stochastic operator ``W = S A`` (Eq. 22-26).
"""
from hiralign.warp.demo import demo_guide, demo_proxy
from hiralign.warp.descriptors import patch_descriptors
from hiralign.warp.operator import apply_operator, composed_operator
from hiralign.warp.params import WarpInputError, WarpParams
from hiralign.warp.result import WarpResult
from hiralign.warp.retrieval import build_index, retrieval_recall, retrieve_candidates
from hiralign.warp.synthesis import spectral_warp, spectral_warps
from hiralign.warp.transport import BOUNDARY_RULE, transport_image

__all__ = [
    "BOUNDARY_RULE",
    "WarpInputError",
    "WarpParams",
    "WarpResult",
    "apply_operator",
    "build_index",
    "composed_operator",
    "demo_guide",
    "demo_proxy",
    "patch_descriptors",
    "retrieval_recall",
    "retrieve_candidates",
    "spectral_warp",
    "spectral_warps",
    "transport_image",
]
