"""Optional ipywidgets explorer for a cube (notebooks call it only when ``interactive=True``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from hiralign.data.cube import Cube


def plot_band_and_spectrum(cube: Cube, band: int, row: int, col: int):
    """Figure: one band as an image with a marked pixel, and that pixel's spectrum."""
    fig, (ax_img, ax_spec) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_img.imshow(cube.data[band], cmap="gray", vmin=0, vmax=max(float(cube.data.max()), 1e-6))
    ax_img.plot(col, row, "r+", markersize=12)
    ax_img.set_title(f"{cube.name}: band {band} ({cube.wavelengths[band]:g} nm)")
    ax_img.axis("off")
    ax_spec.plot(cube.wavelengths, cube.data[:, row, col], "o-", ms=3)
    ax_spec.axvline(cube.wavelengths[band], color="r", lw=0.8)
    ax_spec.set(xlabel="wavelength (nm)", ylabel="value", title=f"spectrum at ({row}, {col})")
    fig.tight_layout()
    return fig


def band_explorer(cube: Cube):
    """Sliders for band, row and column; redraws :func:`plot_band_and_spectrum`."""
    import ipywidgets as widgets

    def show(band: int, row: int, col: int) -> None:
        plot_band_and_spectrum(cube, band, row, col)
        plt.show()

    return widgets.interact(
        show,
        band=widgets.IntSlider(value=int(np.argmin(np.abs(cube.wavelengths - 550))), min=0, max=cube.bands - 1),
        row=widgets.IntSlider(value=cube.height // 2, min=0, max=cube.height - 1),
        col=widgets.IntSlider(value=cube.width // 2, min=0, max=cube.width - 1),
    )
