"""Pictures of samples that are not images: 2-D samples as a scatter over the contours of the true density."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ncsn_pl.system.files import atomic_write

__all__ = ["plot_samples_2d"]


def _bounds(points: np.ndarray, centres: np.ndarray | None, margin: float) -> tuple[float, float, float, float]:
    """A square view holding the bulk of the samples (1st to 99th percentile) and the density's centres."""
    parts = [np.percentile(points, [1, 99], axis=0)] if len(points) else []
    if centres is not None:
        parts.append(np.stack([centres.min(0) - margin, centres.max(0) + margin]))
    lo, hi = np.min([p[0] for p in parts], axis=0), np.max([p[1] for p in parts], axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-3) * 1.1
    return centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half


@torch.no_grad()
def plot_samples_2d(
    samples: Tensor,
    path: str | Path,
    log_density: Callable[[Tensor], Tensor] | None = None,
    centres: Tensor | None = None,
    title: str | None = None,
) -> Tensor:
    """Draw 2-D samples as a scatter over contour lines of the true log density, write a PNG and return the picture.

    As NCSN's toy figures (Song & Ermon 2019, Fig. 2): where the samples fall against where the density is.

    Args:
        samples: ``(N, 2)``.
        path: the PNG (written atomically).
        log_density: the data's log density, ``(M, 2) -> (M,)`` (e.g. ``GaussianMixture.log_prob``); None draws
            the samples alone.
        centres: points the view must include (the mixture's means), ``(K, 2)``.
        title: the plot's title.

    Returns:
        The picture as a float tensor ``(3, H, W)`` in [0, 1] (for loggers).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(f"plot_samples_2d draws samples of shape (N, 2), got {tuple(samples.shape)}.")
    points = samples.detach().double().cpu().numpy()
    points = points[np.isfinite(points).all(1)]
    means = centres.detach().double().cpu().numpy() if centres is not None else None
    x0, x1, y0, y1 = _bounds(points, means, margin=3.0)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    if log_density is not None:
        xs, ys = np.linspace(x0, x1, 200), np.linspace(y0, y1, 200)
        grid = torch.from_numpy(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)).float()
        values = log_density(grid).double().reshape(200, 200).numpy()
        top = float(np.nanmax(values))
        ax.contour(xs, ys, values, levels=np.linspace(top - 12, top, 9), cmap="Greys", linewidths=0.8)
    ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6, color="tab:orange", linewidths=0)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_title(title or f"{len(points)} samples" + (" over log p(x)" if log_density is not None else ""), fontsize=9)
    fig.tight_layout()
    fig.canvas.draw()
    picture = torch.from_numpy(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()).permute(2, 0, 1).float() / 255
    with atomic_write(path) as file:
        fig.savefig(file, format="png")
    plt.close(fig)
    return picture
