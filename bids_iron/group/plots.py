"""Group figures (matplotlib, Agg backend): PNG + SVG, written atomically.

One figure per metric (and clinical column), one panel per ROI x hemisphere (x source), one
y-axis shared by every panel of a metric, numbers without offsets (no "+5e1"):
* ``group_desc-boxplot_<metric>``: every participant's value (points, over the box), and a
  box (median, quartiles, 1.5 IQR whiskers) only for groups with >= `MIN_BOX` values;
* ``group_desc-<clinical>_<metric>``: ROI value against a clinical score, coloured by group;
  the least-squares line and r only where the correlation table has a correlation (n >= 3
  pairs with variance: the same rule as `correlations`);
* ``group_desc-spaghetti_<metric>``: every participant's sessions joined by a line (time
  since the first session, or session rank without dates), group means in bold;
* ``group_desc-sites_<metric>``: values by site before and after ComBat, centred per ROI.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..anatomy.rois import ROI_NAMES  # noqa: E402
from ..bids.derivatives import atomic_path  # noqa: E402
from ..cpus import available_cpus  # noqa: E402
from ._common import METRIC_LABELS, UNIT_KEYS, group_levels  # noqa: E402

_HEMI = {"left": 0, "right": 1, "bilateral": 2}
COLORS = plt.get_cmap("tab10").colors
#: Smallest group drawn with a box (fewer: points only).
MIN_BOX = 5
#: Style of every group figure: readable sizes, plain numbers (no offset or "+5e1").
STYLE = {"axes.formatter.useoffset": False, "axes.formatter.limits": (-4, 5),
         "font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "xtick.labelsize": 9,
         "ytick.labelsize": 9, "legend.fontsize": 9, "axes.spines.top": False,
         "axes.spines.right": False}


def unit_order(units):
    """Units (roi, hemisphere, metric, source) in vocabulary order."""
    roi_rank = {r: i for i, r in enumerate(ROI_NAMES)}
    return sorted(units, key=lambda u: (roi_rank.get(u[0], 99), str(u[0]), _HEMI.get(u[1], 9),
                                        str(u[3])))


def _title(unit):
    roi, hemi, _, source = unit
    text = roi.replace("_", " ") + ("" if hemi == "bilateral" else f" {hemi[0].upper()}")
    return text + ("" if source in ("n/a", "atlas") else f" ({source})")


def _grid(n, ncols_max=5, sharey=True):
    ncols = min(ncols_max, max(1, n))
    nrows = math.ceil(n / ncols)
    width, height = 3.0 * ncols + 0.9, 2.8 * nrows + 0.9
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False,
                             sharey=sharey)
    # fixed margins (in inches) instead of tight_layout, which costs a full extra draw
    fig.subplots_adjust(left=0.95 / width, right=1 - 0.15 / width, bottom=0.6 / height,
                        top=1 - 0.8 / height, wspace=0.12 if sharey else 0.4, hspace=0.6)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _ylabel(axes, text, ncols_max=5):
    """The y label on the first panel of every row."""
    for i, ax in enumerate(axes):
        if i % ncols_max == 0:
            ax.set_ylabel(text)


def save_figure(fig, stem):
    """Save ``stem``.png (100 dpi) and ``stem``.svg atomically; close the figure."""
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_name(stem.name + f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=100)
        paths.append(path)
    plt.close(fig)
    return paths


def _units_of(data, metric):
    sub = data[data["metric"] == metric]
    return sub, unit_order({tuple(u) for u in sub[UNIT_KEYS].drop_duplicates().to_numpy()})


def _boxes_and_points(ax, vals, labels, rng):
    """Every value as a point over a box (box only for >= `MIN_BOX` values)."""
    boxed = [i for i, v in enumerate(vals) if len(v) >= MIN_BOX]
    if boxed:
        ax.boxplot([vals[i] for i in boxed], positions=boxed, widths=0.55, showfliers=False,
                   medianprops={"color": "k"}, boxprops={"color": "0.35"},
                   whiskerprops={"color": "0.35"}, capprops={"color": "0.35"}, zorder=2)
    for i, v in enumerate(vals):
        if len(v):
            ax.scatter(i + rng.uniform(-0.17, 0.17, len(v)), v, s=14, alpha=0.75,
                       color=COLORS[i % 10], linewidths=0, zorder=3)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlim(-0.6, len(labels) - 0.4)


def box_strip(data, metric, stem, value="mean", control_label="HC", title=""):
    """Every participant's ``value`` by group (points over boxes) for each unit of a metric."""
    sub, units = _units_of(data[data["group"].notna()], metric)
    if not units:
        return []
    with plt.rc_context(STYLE):
        levels = group_levels(sub["group"], control_label)
        rng = np.random.default_rng(0)
        fig, axes = _grid(len(units))
        grouped = dict(list(sub.groupby(UNIT_KEYS, sort=False)))
        for ax, unit in zip(axes, units):
            chunk = grouped[unit]
            vals = [chunk.loc[chunk.group == g, value].dropna().to_numpy(dtype=float)
                    for g in levels]
            _boxes_and_points(ax, vals, levels, rng)
            ax.set_title(_title(unit))
        _ylabel(axes, METRIC_LABELS.get(metric, metric))
        fig.suptitle(title or f"{METRIC_LABELS.get(metric, metric)} by group", fontsize=13)
        return save_figure(fig, stem)


def site_panel(data, metric, stem, raw="mean", harmonized="mean_harmonized",
               control_label="HC"):
    """Baseline values by site, centred per ROI (value - the ROI's mean over everyone),
    before and after harmonisation, every ROI of the metric pooled; points coloured by site."""
    sub = data[(data["metric"] == metric) & data["site"].notna()]
    if sub.empty or not sub[harmonized].notna().any():
        return []
    with plt.rc_context(STYLE):
        sites = sorted(sub["site"].astype(str).unique(), key=str)
        rng = np.random.default_rng(0)
        fig, axes = _grid(2, ncols_max=2)
        for ax, col, name in zip(axes, (raw, harmonized), ("before (raw)", "after ComBat")):
            centred = sub[col] - sub.groupby(UNIT_KEYS)[col].transform("mean")
            vals = [centred[sub["site"].astype(str) == s].dropna().to_numpy(dtype=float)
                    for s in sites]
            _boxes_and_points(ax, vals, sites, rng)
            ax.axhline(0, color="0.6", lw=0.8, zorder=1)
            ax.set_title(name)
            ax.tick_params(axis="x", labelrotation=20 if max(map(len, sites)) > 6 else 0)
        _ylabel(axes, f"{METRIC_LABELS.get(metric, metric)}, centred per ROI", 2)
        fig.suptitle(f"{METRIC_LABELS.get(metric, metric)} at baseline by site, every ROI",
                     fontsize=13)
        return save_figure(fig, stem)


def scatter_clinical(data, metric, clinical, stem, value="mean", control_label="HC", title="",
                     fits=None):
    """ROI value against a clinical column, one colour per group.

    ``fits``: {unit: (pearson r, q)} of the correlation table (subset ``all``); the
    least-squares line and r are drawn only for those units (None: none drawn), so that no
    line appears where the table has no correlation (n too small, no variance).
    """
    sub, units = _units_of(data, metric)
    levels = group_levels(sub["group"], control_label)  # colours as in the other figures
    sub = sub[sub[clinical].notna() & sub[value].notna()]
    units = [u for u in units if u in set(map(tuple, sub[UNIT_KEYS].to_numpy()))]
    if not units:
        return []
    fits = fits or {}
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(units))
        grouped = dict(list(sub.groupby(UNIT_KEYS, sort=False)))
        for ax, unit in zip(axes, units):
            chunk = grouped[unit]
            for i, g in enumerate(levels):
                part = chunk[chunk.group == g]
                if part.empty:
                    continue
                ax.scatter(part[clinical], part[value], s=14, alpha=0.75,
                           color=COLORS[i % 10], label=g, linewidths=0, zorder=3)
            if unit in fits and np.isfinite(fits[unit][0]):
                x = chunk[clinical].to_numpy(dtype=float)
                y = chunk[value].to_numpy(dtype=float)
                slope, icpt = np.polyfit(x, y, 1)
                xs = np.array([x.min(), x.max()])
                ax.plot(xs, icpt + slope * xs, color="k", lw=1, zorder=2)
                r, q = fits[unit]
                ax.text(0.03, 0.95, f"r = {r:.2f}" + (f", q = {q:.2g}" if np.isfinite(q)
                                                      else ""),
                        transform=ax.transAxes, va="top", fontsize=8.5)
            ax.set_title(_title(unit))
            ax.set_xlabel(clinical)
        _ylabel(axes, METRIC_LABELS.get(metric, metric))
        axes[0].legend(frameon=False, loc="lower right")
        fig.suptitle(title or f"{METRIC_LABELS.get(metric, metric)} against {clinical}",
                     fontsize=13)
        return save_figure(fig, stem)


def spaghetti(data, metric, stem, value="mean", control_label="HC"):
    """Each participant's value over time (years since the first session, else session rank),
    participants with >= 2 sessions; bold line: group mean per session rank."""
    sub = data[(data["n_sessions"] >= 2) & data["group"].notna()]
    sub, units = _units_of(sub, metric)
    if not units:
        return []
    with plt.rc_context(STYLE):
        return _spaghetti(sub, units, metric, stem, value, control_label)


def _spaghetti(sub, units, metric, stem, value, control_label):
    dated = sub["years_from_baseline"].notna().all()
    xcol = "years_from_baseline" if dated else "session_order"
    levels = group_levels(sub["group"], control_label)
    fig, axes = _grid(len(units))
    grouped = dict(list(sub.groupby(UNIT_KEYS, sort=False)))
    for ax, unit in zip(axes, units):
        chunk = grouped[unit].sort_values(["participant_id", "session_order"])
        for i, g in enumerate(levels):
            part = chunk[chunk.group == g]
            if part.empty:
                continue
            color = COLORS[i % 10]
            # one polyline per participant, separated by NaN (fast to draw)
            xs, ys = [], []
            for _, p in part.groupby("participant_id", sort=False):
                xs += list(p[xcol]) + [np.nan]
                ys += list(p[value]) + [np.nan]
            ax.plot(xs, ys, color=color, lw=0.5, alpha=0.4)
            mean = part.groupby("session_order")[[xcol, value]].mean()
            ax.plot(mean[xcol], mean[value], color=color, lw=2.2, marker="o", ms=3, label=g)
        ax.set_title(_title(unit))
        ax.set_xlabel("years since first session" if dated else "session")
    _ylabel(axes, METRIC_LABELS.get(metric, metric))
    axes[0].legend(frameon=False)
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)}: change over sessions", fontsize=13)
    return save_figure(fig, stem)


def _draw(job):
    func, args, kwargs = job
    return func(*args, **kwargs)


def _n_figure_procs(n_procs=None):
    if n_procs is None:
        n_procs = min(4, available_cpus())
    return max(1, int(n_procs))


class FigureDrawer:
    """Plot jobs ``(function, args, kwargs)`` drawn in ``n_procs`` worker processes (default:
    the CPUs this process may use, at most 4) while the caller goes on: the group level
    submits the figures whose data are ready and computes its tables meanwhile. `results`
    returns each job's result in submission order. With ``n_procs`` 1, or fewer than 3 jobs
    announced (``n_jobs``), the jobs are drawn in this process by `results`.

    The arguments are pickled when a worker takes the job: do not change them after
    `submit`.
    """

    def __init__(self, n_jobs, n_procs=None):
        self.n_procs = min(_n_figure_procs(n_procs), max(1, int(n_jobs)))
        if n_jobs < 3:
            self.n_procs = 1
        self._items, self._pool = [], None

    def submit(self, func, args=(), kwargs=None):
        job = (func, tuple(args), dict(kwargs or {}))
        if self.n_procs == 1:
            self._items.append(job)
            return
        if self._pool is None:
            import concurrent.futures
            import multiprocessing

            context = multiprocessing.get_context("spawn")  # no fork of a process with threads
            self._pool = concurrent.futures.ProcessPoolExecutor(self.n_procs, mp_context=context)
        self._items.append(self._pool.submit(_draw, job))

    def results(self):
        """Every job's result, in submission order (waits for the workers)."""
        try:
            return [_draw(item) if isinstance(item, tuple) else item.result()
                    for item in self._items]
        finally:
            self.close()

    def close(self):
        """Stop the workers; jobs not started are cancelled."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

