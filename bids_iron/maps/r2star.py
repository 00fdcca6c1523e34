"""R2* (= 1/T2*) mapping from multi-echo gradient-echo magnitude images.

All functions take the magnitude with the echoes on the LAST axis, shape ``(..., n_echoes)``,
and echo times ``te`` in SECONDS; R2* is returned in 1/s, T2* in s, S0 in the signal's units.
Every map is float32 and free of NaN/inf.

Methods (``R2STAR_METHODS``)
----------------------------
``"loglinear"``
    Weighted linear least squares of ``ln S = ln S0 - R2* TE`` with weights ``S**2`` (the
    variance of ``ln S`` is about ``sigma**2 / S**2``), solved in closed form per voxel.
``"arlo"``
    Auto-Regression on Linear Operations (Pei et al. 2015, with the erratum's estimator):
    Simpson's-rule integrals of the decay regressed on echo differences; needs at least 3
    equally spaced echoes (ValueError otherwise, no fallback). Simpson's rule is not exact
    for an exponential (noise-free bias ~0.5 % at R2* = 200 1/s with 5 ms spacing), so the
    estimate is mapped through the exact discrete relation, which makes it exact without
    noise and changes nothing else.
``"nlls"``
    Non-linear least squares of ``S = S0 exp(-R2* TE)`` on the magnitude (Levenberg-Marquardt,
    started from ``"loglinear"``), all voxels of a chunk at once with closed-form 2x2 solves.
``"two-echo"``
    The closed form ``R2* = ln(S1 / S2) / (TE2 - TE1)`` of the seed study; with more than
    two echoes it uses the FIRST TWO and ignores the others.

Choice of the default
---------------------
``DEFAULT_R2STAR_METHOD = "nlls"``. Measured with ``benchmarks/accuracy_r2star.py
--n-voxels 100000`` (mono-exponential decays, complex Gaussian noise so that the magnitude is
Rician, R2* uniform in 10-60 1/s, SNR = S0 / sigma, 100 000 voxels per cell), bias / RMSE of
R2* in % of the truth:

=========  =============  =============  =============  =============
           6 echoes, TE 4..29 ms (5 ms spacing)           5 echoes 4..28
---------  ---------------------------------------------  -------------
method     SNR 20         SNR 50         SNR 100        SNR 20
=========  =============  =============  =============  =============
nlls       -0.71 / 14.72  -0.07 /  5.91  -0.03 /  2.95  -0.64 / 16.07
loglinear  -2.65 / 14.85  -0.39 /  5.92  -0.11 /  2.95  -2.43 / 16.13
arlo       -0.23 / 15.50  -0.00 /  6.24  -0.02 /  3.11  -0.31 / 16.99
two-echo   +2.78 / 61.06  +0.16 / 26.67  +0.03 / 13.45  +1.42 / 52.90
=========  =============  =============  =============  =============

(5 echoes at SNR 50/100 rank the methods the same way: nlls -0.11/6.44 and -0.03/3.22.)
NLLS has the smallest (or equal-smallest) RMSE in every cell (it is the maximum-likelihood
estimator for Gaussian noise) and a bias well below its noise. The weighted log-linear fit
is as precise but biased low at SNR 20 (its weights come from the noisy data and
``E[ln S] < ln E[S]``);
ARLO has the least bias (-0.2 % at SNR 20, from the Rician floor that pulls every
magnitude fit down) but 5 % more RMSE; two echoes discard most of the data (4x the RMSE).
Cost on 192 x 224 x 160 x 6 echoes, 2 threads (``benchmarks/bench_r2star.py``): about
0.4 s of CPU for "loglinear", 1.5 s for "nlls" (at most 3 LM iterations per chunk), peak
resident memory about 320 MB including the 165 MB input.

Clipping and undefined voxels
-----------------------------
* R2* is clipped to ``[0, R2STAR_MAX]`` (``R2STAR_MAX = 1000`` 1/s, i.e. T2* >= 1 ms: a
  faster decay leaves less than 2 % of the signal at the usual first echo of ~4 ms and cannot
  be measured). A rising signal (negative fitted R2*) gives 0.
* T2* = 1 / R2* where R2* > 0, clipped to at most ``T2STAR_MAX = 1`` s (R2* < 1 1/s, e.g.
  noisy CSF, gives T2* = 1 s), and 0 where R2* is 0 (T2* undefined / infinite).
* S0 is the least-squares amplitude of the mono-exponential at the final (clipped) R2*,
  ``S0 = sum(S e) / sum(e**2)`` with ``e = exp(-R2* TE)``, clipped to >= 0.
* Echoes whose signal is zero, negative or non-finite are "unusable": they are given zero
  weight by ``loglinear``/``nlls`` and the residual, and set to 0 for ``arlo``. A voxel with
  fewer than 2 usable echoes (``two-echo``: unless both of the first two are usable) gets 0 in
  every map, as do voxels outside ``mask``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..cpus import available_cpus
from ._numerics import check_mask

__all__ = [
    "R2STAR_METHODS",
    "DEFAULT_R2STAR_METHOD",
    "R2STAR_MAX",
    "T2STAR_MAX",
    "R2starFit",
    "fit_r2star",
    "r2star_to_t2star",
    "check_echo_times",
]

#: Names accepted by ``fit_r2star(method=...)``: ``R2STAR_METHODS``, from the method registry.
#: Most accurate method at SNR 20-100 (see the module docstring for the figures).
DEFAULT_R2STAR_METHOD = "nlls"
#: Upper clip of R2* in 1/s (T2* >= 1 ms).
R2STAR_MAX = 1000.0
#: Upper clip of T2* in s (applies where 0 < R2* < 1 1/s).
T2STAR_MAX = 1.0

#: Voxels per chunk: bounds the working memory (~ 12 arrays of chunk x n_echoes float32).
_CHUNK = 32768
#: Levenberg-Marquardt settings for "nlls".
_NLLS_MAX_ITER = 20
_NLLS_RTOL = 1e-3  # converged when |dR2*| <= _NLLS_ATOL + _NLLS_RTOL * |R2*|,
_NLLS_ATOL = 1e-2  # 1/s; i.e. far below the noise of any real R2* map
_EXP_LIMIT = 80.0  # |exponent| bound, keeps float32 exp() finite during iterations


@dataclass
class R2starFit:
    """Result of `fit_r2star`: maps of the voxel shape (magnitude.shape[:-1]), float32.

    Attributes
    ----------
    r2star : ndarray
        R2* (1/s), in ``[0, R2STAR_MAX]``.
    t2star : ndarray
        T2* (s): ``1 / r2star`` clipped to ``T2STAR_MAX``, 0 where ``r2star == 0``.
    s0 : ndarray
        Signal extrapolated to TE = 0 (units of the magnitude), >= 0.
    residual : ndarray
        Normalised RMS residual of the mono-exponential fit over the usable echoes,
        ``sqrt(sum((S - S0 exp(-R2* TE))**2) / sum(S**2))`` (0 = perfect fit), for QC.
    method : str
        The method used.
    te : tuple of float
        Echo times (s) used in the fit.
    clipped_fraction : float
        Fraction of the fitted (valid) voxels whose raw R2* fell outside
        ``[0, R2STAR_MAX]`` and was clipped.
    invalid_fraction : float
        Fraction of the voxels in the mask with too few usable echoes (set to 0).
    n_iterations : int
        Largest number of Levenberg-Marquardt iterations used by a chunk ("nlls"; 0 otherwise).
    """

    r2star: np.ndarray
    t2star: np.ndarray
    s0: np.ndarray
    residual: np.ndarray
    method: str
    te: tuple = field(default_factory=tuple)
    clipped_fraction: float = 0.0
    invalid_fraction: float = 0.0
    n_iterations: int = 0


def check_echo_times(te, n_echoes=None, equally_spaced=False, min_echoes=2):
    """Validate echo times and return them as a float64 array.

    Parameters
    ----------
    te : array_like, shape (n_echoes,)
        Echo times in seconds, strictly increasing.
    n_echoes : int, optional
        Required length (the size of the magnitude's last axis).
    equally_spaced : bool
        Also require equal spacing (relative tolerance 1e-3 of the mean spacing).
    min_echoes : int
        Minimum number of echoes.

    Returns
    -------
    ndarray, shape (n_echoes,)
        The echo times, float64.

    Raises
    ------
    ValueError
        If ``te`` is not 1-D, finite, >= 0, in seconds (values above 1 s are taken for
        milliseconds and refused), strictly increasing, of length ``n_echoes``, at least
        ``min_echoes`` long, or (when asked) equally spaced.

    Examples
    --------
    >>> check_echo_times([0.004, 0.009, 0.014], equally_spaced=True).tolist()
    [0.004, 0.009, 0.014]
    """
    te = np.asarray(te, dtype=np.float64)
    if te.ndim != 1:
        raise ValueError(f"te must be a 1-D sequence of echo times in s, got shape {te.shape}")
    if n_echoes is not None and te.size != n_echoes:
        raise ValueError(f"te has {te.size} echo times but magnitude has {n_echoes} echoes "
                         "on its last axis; they must be equal")
    if te.size < min_echoes:
        raise ValueError(f"R2* needs at least {min_echoes} echoes, got {te.size}")
    if not np.all(np.isfinite(te)) or np.any(te < 0):
        raise ValueError(f"te must be finite and >= 0 (s), got {te.tolist()}")
    if te.max() > 1.0:
        raise ValueError(f"te must be in seconds; got values up to {te.max():g} "
                         "(milliseconds? divide by 1000)")
    if np.any(np.diff(te) <= 0):
        raise ValueError(f"te must be sorted ascending with distinct values, got {te.tolist()}")
    if equally_spaced and te.size > 2:
        step = np.diff(te)
        if np.max(np.abs(step - step.mean())) > 1e-3 * step.mean():
            raise ValueError(f"te must be equally spaced for this method, got spacings "
                             f"{(step * 1e3).round(4).tolist()} ms")
    return te


def r2star_to_t2star(r2star):
    """T2* (s) from R2* (1/s): ``1 / r2star`` clipped to `T2STAR_MAX`, 0 where R2* <= 0.

    Parameters
    ----------
    r2star : array_like
        R2* in 1/s (any shape); non-finite values give 0.

    Returns
    -------
    ndarray
        T2* in s, float32, same shape.

    Examples
    --------
    >>> r2star_to_t2star([0.0, 20.0, 0.5]).tolist()
    [0.0, 0.05000000074505806, 1.0]
    """
    r2 = np.asarray(r2star, dtype=np.float32)
    out = np.zeros(r2.shape, np.float32)
    pos = np.isfinite(r2) & (r2 > 0)
    np.divide(np.float32(1.0), r2, out=out, where=pos)
    np.minimum(out, np.float32(T2STAR_MAX), out=out)
    return out


# ----------------------------------------------------------------------------------------
# per-chunk kernels; ``sig`` is (n_echoes, m) float32 C-contiguous with unusable echoes set
# to 0, ``use`` the (n_echoes, m) bool mask of usable echoes (or None when all are usable).
# Each returns the raw (unclipped, possibly non-finite) R2* of length m.
# ----------------------------------------------------------------------------------------

def _r2_loglinear(sig, te, t_amp=None):
    """Weighted (S**2) log-linear fit; centred time makes the 2x2 solve well conditioned.
    Unusable echoes have S = 0, hence zero weight.

    Returns R2*, or (R2*, ln S(t_amp)) when ``t_amp`` is given."""
    w = sig * sig  # the chunk is scaled to a peak of 1 (see _fit_chunk)
    y = np.zeros_like(sig)
    np.log(sig, out=y, where=sig > 0)
    sw = w.sum(axis=0)
    # times from the first echo: with fast decays the weighted mean time sits just after
    # TE1, and t - tbar must not be a float32 difference of two nearly equal numbers
    te0 = float(te[0])
    te = [float(t) - te0 for t in te]
    swt = np.zeros_like(sw)
    for i, t in enumerate(te[1:], start=1):
        swt += np.float32(t) * w[i]
    tbar = np.zeros_like(sw)
    np.divide(swt, sw, out=tbar, where=sw > 0)
    num = np.zeros_like(sw)
    den = np.zeros_like(sw)
    d = np.empty_like(sw)
    wd = np.empty_like(sw)
    for i, t in enumerate(te):
        np.subtract(np.float32(t), tbar, out=d)
        np.multiply(w[i], d, out=wd)
        num += wd * y[i]
        den += wd * d
    r2 = np.full_like(sw, np.nan)
    np.divide(num, den, out=r2, where=den > 0)
    np.negative(r2, out=r2)
    if t_amp is None:
        return r2
    # weighted mean of ln S sits at tbar; extrapolate along the fitted line to t_amp
    swy = np.zeros_like(sw)
    for i in range(len(te)):
        swy += w[i] * y[i]
    ln_amp = np.zeros_like(sw)
    np.divide(swy, sw, out=ln_amp, where=sw > 0)
    ln_amp -= r2 * (np.float32(t_amp - te0) - tbar)
    return r2, ln_amp


def _r2_two_echo(sig, te):
    s1, s2 = sig[0], sig[1]
    ok = (s1 > 0) & (s2 > 0)
    ratio = np.ones_like(s1)
    np.divide(s1, s2, out=ratio, where=ok)
    r2 = np.log(ratio)
    r2 *= np.float32(1.0 / (te[1] - te[0]))
    r2[~ok] = np.nan
    return r2


def _r2_arlo(sig, te):
    """Pei et al. 2015 (with the 2019 erratum's correction term), Simpson bias inverted."""
    dte = float(np.mean(np.diff(te)))
    a = np.float32(dte / 3.0)
    n = sig.shape[0]
    ss = np.zeros(sig.shape[1], np.float32)
    sd = np.zeros_like(ss)
    dd = np.zeros_like(ss)
    s = np.empty_like(ss)
    d = np.empty_like(ss)
    for i in range(n - 2):
        np.multiply(sig[i + 1], np.float32(4.0), out=s)
        s += sig[i]
        s += sig[i + 2]
        s *= a                      # Simpson's rule integral over [TE_i, TE_i+2]
        np.subtract(sig[i], sig[i + 2], out=d)
        ss += s * s
        sd += s * d
        dd += d * d
    num = ss + a * sd
    den = a * dd + sd
    t2 = np.full_like(ss, np.nan)  # Pei's T2* estimate
    np.divide(num, den, out=t2, where=den != 0)
    # Simpson's rule is not exact for an exponential: noise-free, t2 equals
    # c(u) = (dte/3) (1 + 4u + u^2) / (1 - u^2) with u = exp(-R2* dte), not 1/R2*. Invert c(u)
    # exactly: with k = 3 t2 / dte, (1 + k) u^2 + 4 u + (1 - k) = 0, whose root in (0, 1) is
    # u = 1 - 6 / (sqrt(3 + k^2) + 3 + k) (written so that log1p loses no digits for slow
    # decays). k <= 1 means u <= 0 (decay faster than measurable): R2* = +inf, clipped later.
    # t2 < 0 (rising signal) keeps Pei's 1 / t2 < 0, clipped to 0 later.
    k = t2 * np.float32(3.0 / dte)
    fast = k > 1
    q = np.sqrt(np.float32(3.0) + k * k)
    q += np.float32(3.0)
    q += k
    np.divide(np.float32(-6.0), q, out=q)
    r2 = np.full_like(k, np.inf)
    np.log1p(q, out=r2, where=fast)
    r2 *= np.float32(-1.0 / dte)
    r2[~fast] = np.inf
    neg = t2 < 0
    r2[neg] = 1.0 / t2[neg]
    r2[np.isnan(t2)] = np.nan
    return r2


def _model_sums(sig, uf, tau, amp, r2):
    """Sums for one Levenberg-Marquardt step at (amp, r2): returns
    (cost, e2, e2t, e2tt, ger, gter) with e = exp(-r2 tau) and r = S - amp e."""
    m = sig.shape[1]
    out = [np.zeros(m, np.float32) for _ in range(6)]
    cost, e2, e2t, e2tt, ger, gter = out
    e = np.empty(m, np.float32)
    r = np.empty(m, np.float32)
    tmp = np.empty(m, np.float32)
    for i, t in enumerate(tau):
        np.multiply(r2, np.float32(-t), out=e)
        np.clip(e, -_EXP_LIMIT, _EXP_LIMIT, out=e)
        np.exp(e, out=e)
        if uf is not None:
            e *= uf[i]
        np.multiply(amp, e, out=r)
        np.subtract(sig[i], r, out=r)          # residual (0 for unusable echoes)
        np.multiply(r, r, out=tmp)
        cost += tmp
        np.multiply(e, r, out=tmp)
        ger += tmp
        tmp *= np.float32(t)
        gter += tmp
        np.multiply(e, e, out=tmp)
        e2 += tmp
        tmp *= np.float32(t)
        e2t += tmp
        tmp *= np.float32(t)
        e2tt += tmp
    return out


def _r2_nlls(sig, use, te):
    """Levenberg-Marquardt on S = A exp(-R2* (TE - tc)), tc = mean TE (decorrelates A, R2*),
    started from the weighted log-linear fit. Returns (R2*, iterations)."""
    tc = float(np.mean(te))
    tau = [float(t - tc) for t in te]
    uf = None if use is None else use.astype(np.float32)
    m = sig.shape[1]
    r2, ln_amp = _r2_loglinear(sig, te, t_amp=tc)
    np.nan_to_num(r2, copy=False, nan=0.0, posinf=R2STAR_MAX, neginf=0.0)
    np.clip(r2, -R2STAR_MAX, 2 * R2STAR_MAX, out=r2)
    np.nan_to_num(ln_amp, copy=False, nan=-np.inf, posinf=_EXP_LIMIT, neginf=-np.inf)
    np.minimum(ln_amp, _EXP_LIMIT, out=ln_amp)
    amp = np.exp(ln_amp)
    sums = _model_sums(sig, uf, tau, amp, r2)
    lam = np.full(m, 1e-3, np.float32)
    active = np.ones(m, bool)
    n_iter = 0
    for n_iter in range(1, _NLLS_MAX_ITER + 1):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            n_iter -= 1
            break
        full = idx.size == m
        sub = (lambda x: x) if full else (lambda x: x[idx])
        cost, e2, e2t, e2tt, ger, gter = (sub(x) for x in sums)
        a_, r_, l_ = sub(amp), sub(r2), sub(lam)
        # J = [e, -tau a e]; JtJ = [[e2, -a e2t], [-a e2t, a^2 e2tt]]; Jt r = [ger, -a gter]
        haa = e2 * (1 + l_)
        hab = -a_ * e2t
        hbb = (a_ * a_) * e2tt * (1 + l_)
        ga = ger
        gb = -a_ * gter
        det = haa * hbb - hab * hab
        ok = det > 0
        inv = np.zeros_like(det)
        np.divide(np.float32(1.0), det, out=inv, where=ok)
        da = (hbb * ga - hab * gb) * inv
        dr = (haa * gb - hab * ga) * inv
        a_t = a_ + da
        r_t = np.clip(r_ + dr, -R2STAR_MAX, 2 * R2STAR_MAX)
        sig_s = sig if full else sig[:, idx]
        uf_s = uf if (uf is None or full) else uf[:, idx]
        trial = _model_sums(sig_s, uf_s, tau, a_t, r_t)
        acc = ok & (trial[0] <= cost)
        # update accepted voxels
        upd = idx[acc]
        amp[upd] = a_t[acc]
        r2[upd] = r_t[acc]
        for k in range(6):
            sums[k][upd] = trial[k][acc]
        l_new = np.where(acc, np.maximum(l_ * np.float32(0.3), np.float32(1e-7)),
                         l_ * np.float32(10.0))
        lam[idx] = l_new
        # converged when the undamped (Gauss-Newton) step, at most (1 + lambda) times the
        # damped one, is below tolerance (accepted or not: near the optimum float32 cost
        # comparisons are noise), or when the damping has grown hopeless
        done = (np.abs(dr) * (1 + l_) <= _NLLS_ATOL + _NLLS_RTOL * np.abs(r_)) | ~ok \
            | (l_new > 1e8)
        active[idx[done]] = False
    if active.any():
        n_iter = _NLLS_MAX_ITER
    return r2, n_iter


def _amplitude_and_residual(sig, uf, te, r2):
    """Least-squares S0 at fixed R2* and the normalised RMS residual."""
    m = sig.shape[1]
    sse = np.zeros(m, np.float32)
    see = np.zeros(m, np.float32)
    sss = np.zeros(m, np.float32)
    e = np.empty((len(te), m), np.float32)
    for i, t in enumerate(te):
        np.multiply(r2, np.float32(-t), out=e[i])
    np.exp(e, out=e)
    if uf is not None:
        e *= uf
    for i in range(len(te)):
        sse += sig[i] * e[i]
        see += e[i] * e[i]
        sss += sig[i] * sig[i]
    s0 = np.zeros(m, np.float32)
    np.divide(sse, see, out=s0, where=see > 0)
    np.maximum(s0, 0, out=s0)
    # sum (S - s0 e)^2 = sss - 2 s0 sse + s0^2 see; evaluate directly for accuracy
    res = np.zeros(m, np.float32)
    tmp = np.empty(m, np.float32)
    for i in range(len(te)):
        np.multiply(s0, e[i], out=tmp)
        np.subtract(sig[i], tmp, out=tmp)
        tmp *= tmp
        res += tmp
    np.divide(res, sss, out=res, where=sss > 0)
    np.sqrt(res, out=res)
    return s0, res


def _fit_chunk(block, method, te):
    """Fit one chunk. ``block`` is (m, n_echoes) of any real dtype. Returns
    (r2, s0, residual, valid, n_clipped, n_iter) with r2/s0/residual float32 (m,)."""
    sig = np.array(block.T, dtype=np.float32, order="C")
    use = np.isfinite(sig)
    use &= sig > 0
    all_usable = bool(use.all())
    if not all_usable:
        sig[~use] = 0
    # scale the chunk to a peak of 1: every intermediate stays far from float32 limits
    peak = float(sig.max()) if sig.size else 0.0
    scale = peak if peak > 0 else 1.0
    sig *= np.float32(1.0 / scale)
    n_use = use.sum(axis=0) if not all_usable else None
    use_arg = None if all_usable else use
    n_iter = 0
    if method == "two-echo":
        valid = use[0] & use[1]
        r2 = _r2_two_echo(sig, te)
    else:
        valid = np.ones(sig.shape[1], bool) if all_usable else n_use >= 2
        if method == "arlo":
            r2 = _r2_arlo(sig, te)
        elif method == "nlls":
            r2, n_iter = _r2_nlls(sig, use_arg, te)
        else:
            r2 = _r2_loglinear(sig, te)
    valid &= ~np.isnan(r2)  # +-inf are clipped below (decay too fast / rising signal)
    clipped = valid & ((r2 < 0) | (r2 > R2STAR_MAX))
    r2[~valid] = 0
    np.clip(r2, 0, R2STAR_MAX, out=r2)  # also maps +inf to R2STAR_MAX, -inf to 0
    if method == "two-echo":
        sig, te_fit = sig[:2], te[:2]
        uf = None if all_usable else use[:2].astype(np.float32)
    else:
        te_fit = te
        uf = None if all_usable else use.astype(np.float32)
    s0, res = _amplitude_and_residual(sig, uf, te_fit, r2)
    s0[~valid] = 0
    s0 *= np.float32(scale)
    res[~valid] = 0
    return r2, s0, res, valid, int(clipped.sum()), n_iter


def fit_r2star(magnitude, te, method=DEFAULT_R2STAR_METHOD, mask=None, n_threads=None):
    """Fit a mono-exponential decay ``S(TE) = S0 exp(-R2* TE)`` voxel by voxel.

    Parameters
    ----------
    magnitude : array_like, shape (..., n_echoes)
        Multi-echo magnitude, echoes on the last axis (any leading voxel shape, e.g.
        ``(x, y, z, n_echoes)``); any real dtype, computed in float32. Zero, negative or
        non-finite values mark unusable echoes (see Notes).
    te : array_like, shape (n_echoes,)
        Echo times in SECONDS, sorted ascending and distinct.
    method : {"nlls", "loglinear", "arlo", "two-echo"}
        Estimator (see the module docstring); default `DEFAULT_R2STAR_METHOD`. ``"arlo"``
        needs >= 3 equally spaced echoes; ``"two-echo"`` uses the first two echoes only.
    mask : array_like of bool, shape magnitude.shape[:-1], optional
        Voxels to fit; the others get 0 in every map. Default: all voxels.
    n_threads : int, optional
        Worker threads over chunks of voxels (numpy releases the GIL). Default: the CPUs
        this process may use (`bids_iron.cpus.available_cpus`).

    Returns
    -------
    R2starFit
        ``r2star`` (1/s, in ``[0, R2STAR_MAX]``), ``t2star`` (s, ``1/r2star`` clipped to
        ``T2STAR_MAX``, 0 where ``r2star`` is 0), ``s0`` (>= 0) and ``residual``
        (normalised RMS), each float32 of shape ``magnitude.shape[:-1]``, plus the method,
        the clipped and invalid voxel fractions and the iteration count.

    Raises
    ------
    ValueError
        If ``method`` is unknown; ``magnitude`` is not real or has no echo axis; ``te`` has
        fewer than 2 echoes, a length other than ``magnitude.shape[-1]``, is not sorted
        ascending and distinct, is not finite, looks like milliseconds, or (``"arlo"``) has
        fewer than 3 or unequally spaced echoes; ``mask`` has the wrong shape; ``n_threads``
        is not a positive integer.

    Notes
    -----
    Voxels with fewer than two usable echoes (signal > 0 and finite; for ``"two-echo"`` both
    of the first two) get 0 in every map. Unusable echoes have zero weight in ``"loglinear"``,
    ``"nlls"`` and the residual, and count as 0 signal in ``"arlo"``. The work is done in
    chunks of voxels (bounded memory) spread over a thread pool.

    References
    ----------
    .. [1] Pei M, Nguyen TD, Thimmappa ND, et al. Algorithm for fast monoexponential fitting
       based on Auto-Regression on Linear Operations (ARLO) of data. Magn Reson Med
       2015;73:843-850. doi:10.1002/mrm.25137 (erratum: MRM 2019, doi:10.1002/mrm.27807).
    .. [2] Veraart J, Sijbers J, Sunaert S, Leemans A, Jeurissen B. Weighted linear least
       squares estimation of diffusion MRI parameters: strengths, limitations, and pitfalls.
       NeuroImage 2013;81:335-346 (weights S**2 for a fit of ln S, var(ln S) ~ sigma**2/S**2).
    .. [3] Hernando D, Kramer JH, Reeder SB. Multipeak fat-corrected complex R2* relaxometry:
       theory, optimization, and clinical validation. Magn Reson Med 2013;70:1319-1331
       (non-linear least-squares R2* and its noise behaviour).
    .. [4] Marquardt DW. An algorithm for least-squares estimation of nonlinear parameters.
       J Soc Ind Appl Math 1963;11:431-441.

    Examples
    --------
    >>> te = np.array([0.004, 0.009, 0.014, 0.019, 0.024, 0.029])
    >>> mag = 1000.0 * np.exp(-np.outer([20.0, 45.0], te))       # 2 voxels x 6 echoes
    >>> fit = fit_r2star(mag, te)
    >>> bool(np.allclose(fit.r2star, [20.0, 45.0], rtol=1e-4))
    True
    >>> bool(np.allclose(fit.t2star * fit.r2star, 1.0)), fit.r2star.dtype
    (True, dtype('float32'))
    >>> bool(np.allclose(fit_r2star(mag, te, method="two-echo").r2star, [20.0, 45.0]))
    True
    """
    from . import registry

    registry.get("r2star", method)  # ValueError naming the choices
    magnitude = np.asarray(magnitude)
    if magnitude.dtype.kind not in "biuf":
        raise ValueError(f"magnitude must be a real array (use np.abs for complex data), "
                         f"got dtype {magnitude.dtype}")
    if magnitude.ndim < 1:
        raise ValueError("magnitude must have the echoes on its last axis, got a scalar")
    n_echoes = magnitude.shape[-1]
    te = check_echo_times(te, n_echoes=n_echoes)
    if method == "arlo":
        if te.size < 3:
            raise ValueError(f"method 'arlo' needs at least 3 equally spaced echoes; te has "
                             f"{te.size}")
        check_echo_times(te, equally_spaced=True)
    vshape = magnitude.shape[:-1]
    if mask is not None:
        mask = check_mask(mask, vshape, like="voxel shape (magnitude.shape[:-1])",
                          allow_empty=True)
    if n_threads is None:
        n_threads = available_cpus()
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) \
            or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")

    n_vox = int(np.prod(vshape, dtype=np.int64))
    # Fortran-ordered input (what nibabel usually returns) is walked in its own memory order,
    # so that neither order is copied; the maps come back in the same order.
    order = "F" if magnitude.flags.f_contiguous and not magnitude.flags.c_contiguous else "C"
    flat = magnitude.reshape(n_vox, n_echoes, order=order)
    idx = None if mask is None else np.flatnonzero(mask.ravel(order=order))
    n_fit = n_vox if idx is None else idx.size
    out_r2 = np.zeros(n_vox, np.float32)
    out_s0 = np.zeros(n_vox, np.float32)
    out_res = np.zeros(n_vox, np.float32)

    def work(start):
        stop = min(start + _CHUNK, n_fit)
        if idx is None:
            sel = slice(start, stop)
            block = flat[sel]
        else:
            sel = idx[start:stop]
            block = flat[sel]
        with np.errstate(all="ignore"):  # degenerate voxels are handled explicitly
            r2, s0, res, valid, n_clip, n_it = _fit_chunk(block, method, te)
        out_r2[sel] = r2
        out_s0[sel] = s0
        out_res[sel] = res
        return int(valid.sum()), n_clip, n_it

    starts = range(0, n_fit, _CHUNK)
    if n_threads == 1 or len(starts) <= 1:
        stats = [work(s) for s in starts]
    else:
        with ThreadPoolExecutor(max_workers=min(int(n_threads), len(starts))) as pool:
            stats = list(pool.map(work, starts))
    n_valid = sum(s[0] for s in stats)
    n_clip = sum(s[1] for s in stats)
    n_iter = max((s[2] for s in stats), default=0)

    r2 = out_r2.reshape(vshape, order=order)
    return R2starFit(
        r2star=r2,
        t2star=r2star_to_t2star(r2),
        s0=out_s0.reshape(vshape, order=order),
        residual=out_res.reshape(vshape, order=order),
        method=method,
        te=tuple(float(t) for t in te),
        clipped_fraction=float(n_clip / n_valid) if n_valid else 0.0,
        invalid_fraction=float((n_fit - n_valid) / n_fit) if n_fit else 0.0,
        n_iterations=int(n_iter),
    )


def __getattr__(name):
    """``R2STAR_METHODS``: the registry's r2star method names (`bids_iron.maps.registry`)."""
    if name == "R2STAR_METHODS":
        from . import registry

        return registry.names("r2star")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
