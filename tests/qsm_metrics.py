"""QSM-CI image metrics (NRMSE, HFEN, XSIM) shared by the tests and the benchmarks.

The metric functions come from ``qsm_ci.qsm_eval`` (PyPI ``qsm-ci``, a port of the QSM.rs
reference scorer) when it is installed; otherwise the local implementations below are used
(same definitions): NRMSE (%, both maps de-meaned in the mask) and its detrended variant,
HFEN (%, Laplacian of Gaussian, sigma 1.5 voxels), XSIM (SSIM for QSM, 5x5x5 windows).
"""

import math

import numpy as np
from scipy import ndimage

try:  # pragma: no cover - optional
    from qsm_ci import qsm_eval as _qe
except ImportError:  # pragma: no cover
    _qe = None


# --------------------------------------------------------------- fallback metric definitions

def _nrmse(a, b, mask):
    m = mask > 0
    r = a[m] - a[m].mean()
    t = b[m] - b[m].mean()
    nt = math.sqrt(float((t * t).sum()))
    nrmse = 100.0 * math.sqrt(float(((r - t) ** 2).sum())) / nt
    slope, icpt = np.polyfit(t, r, 1)
    corr = (r - icpt) / slope
    return nrmse, 100.0 * math.sqrt(float(((corr - t) ** 2).sum())) / nt


def _hfen(recon, truth, mask, sigma=1.5):
    m = mask > 0
    lr = ndimage.gaussian_laplace(recon.astype(np.float64), sigma, truncate=5.0)
    lt = ndimage.gaussian_laplace(truth.astype(np.float64), sigma, truncate=5.0)
    return 100.0 * np.linalg.norm(lr[m] - lt[m]) / np.linalg.norm(lt[m])


def _xsim(a, b, mask, k=5, c1=1e-4, c2=1e-6):
    a = a.astype(np.float64)
    b = b.astype(np.float64)

    def mean(x):
        return ndimage.uniform_filter(x, k, mode="constant") / np.maximum(
            ndimage.uniform_filter(np.ones_like(x), k, mode="constant"), 1e-12)

    ma, mb = mean(a), mean(b)
    va, vb, cov = mean(a * a) - ma ** 2, mean(b * b) - mb ** 2, mean(a * b) - ma * mb
    num = (2 * ma * mb + c1) * (2 * cov + c2)
    den = (ma ** 2 + mb ** 2 + c1) * (va + vb + c2)
    valid = (mask > 0) & (den > 0)
    return float(np.mean(num[valid] / den[valid]))


def metrics(recon, truth, mask):
    m = mask > 0
    recon = np.where(m, recon - recon[m].mean(), 0.0)
    truth = np.where(m, truth - truth[m].mean(), 0.0)
    if _qe is not None:
        nrmse, nrmse_dt = _qe.nrmse_challenge(recon, truth, mask)
        return {"nrmse": nrmse, "nrmse_detrend": nrmse_dt, "hfen": _qe.hfen(recon, truth, mask),
                "xsim": _qe.xsim(recon, truth, mask)}
    nrmse, nrmse_dt = _nrmse(recon, truth, mask)
    return {"nrmse": nrmse, "nrmse_detrend": nrmse_dt, "hfen": _hfen(recon, truth, mask),
            "xsim": _xsim(recon, truth, mask)}


