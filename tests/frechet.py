"""The Fréchet distance between two Gaussians in closed form: the reference the FID tests compare against."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from numpy.typing import ArrayLike


def _as_float64(x: ArrayLike | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def frechet_distance(
    mu1: ArrayLike | torch.Tensor,
    sigma1: ArrayLike | torch.Tensor,
    mu2: ArrayLike | torch.Tensor,
    sigma2: ArrayLike | torch.Tensor,
    eps: float = 1e-6,
) -> float:
    r"""Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    .. math::
        d^2 = \lVert\mu_1-\mu_2\rVert^2
              + \operatorname{tr}\big(\Sigma_1+\Sigma_2-2(\Sigma_1\Sigma_2)^{1/2}\big)

    (Heusel et al. 2017, eq. 6; Dowson & Landau 1982). Computed in float64 with ``scipy.linalg.sqrtm`` as in
    pytorch-fid/TTUR: if the square root is not finite (singular product) ``eps * I`` is added to both
    covariances, and the tiny imaginary part from round-off is dropped.

    Args:
        mu1: mean, shape (d,).
        sigma1: covariance, shape (d, d).
        mu2: mean, shape (d,).
        sigma2: covariance, shape (d, d).
        eps: diagonal offset used only when the plain square root is not finite.

    Returns:
        The distance as a Python float.

    Raises:
        ValueError: shapes do not match, or the square root has a large imaginary component.
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            "frechet_distance needs means of shape (d,) and covariances (d, d); got "
            f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}."
        )
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has an imaginary component of {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
