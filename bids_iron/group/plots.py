"""Group figures (matplotlib, Agg backend): PNG + SVG, written atomically.

One figure per metric (and clinical column), one panel per ROI x hemisphere (x source):
* ``group_desc-boxplot_<metric>``: box plot by group with every participant's value (strip);
* ``group_desc-<clinical>_<metric>``: ROI value against a clinical score, coloured by group,
  with the least-squares line over everyone with both values;
* ``group_desc-spaghetti_<metric>``: every participant's sessions joined by a line (time
  since the first session, or session rank without dates), group means in bold.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..anatomy.rois import ROI_NAMES  # noqa: E402
from ..bids.derivatives import atomic_path  # noqa: E402
from ._common import METRIC_LABELS, UNIT_KEYS, group_levels  # noqa: E402

_HEMI = {"left": 0, "right": 1, "bilateral": 2}
COLORS = plt.get_cmap("tab10").colors


def unit_order(units):
    """Units (roi, hemisphere, metric, source) in vocabulary order."""
    roi_rank = {r: i for i, r in enumerate(ROI_NAMES)}
    return sorted(units, key=lambda u: (roi_rank.get(u[0], 99), str(u[0]), _HEMI.get(u[1], 9),
                                        str(u[3])))


def _title(unit):
    roi, hemi, _, source = unit
    text = roi.replace("_", " ") + ("" if hemi == "bilateral" else f" {hemi[0].upper()}")
    return text + ("" if source in ("n/a", "atlas") else f" ({source})")


def _grid(n):
    ncols = min(6, max(1, n))
    nrows = math.ceil(n / ncols)
    width, height = 2.7 * ncols + 0.4, 2.5 * nrows + 0.7
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    # fixed margins (in inches) instead of tight_layout, which costs a full extra draw
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.55 / height,
                        top=1 - 0.75 / height, wspace=0.45, hspace=0.65)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


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


def box_strip(data, metric, stem, value="mean", control_label="HC", title=""):
    """Box + strip plot of ``value`` by group for each unit of one metric."""
    sub, units = _units_of(data[data["group"].notna()], metric)
    if not units:
        return []
    levels = group_levels(sub["group"], control_label)
    rng = np.random.default_rng(0)
    fig, axes = _grid(len(units))
    grouped = dict(list(sub.groupby(UNIT_KEYS, sort=False)))
    for ax, unit in zip(axes, units):
        chunk = grouped[unit]
        vals = [chunk.loc[chunk.group == g, value].dropna().to_numpy(dtype=float)
                for g in levels]
        keep = [i for i, v in enumerate(vals) if len(v)]
        if keep:
            ax.boxplot([vals[i] for i in keep], positions=keep, widths=0.6, showfliers=False)
        for i in keep:
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(vals[i])), vals[i], s=8, alpha=0.6,
                       color=COLORS[i % 10], linewidths=0)
        ax.set_xticks(range(len(levels)), levels)
        ax.set_xlim(-0.6, len(levels) - 0.4)
        ax.set_title(_title(unit), fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=8)
    fig.suptitle(title or f"{METRIC_LABELS.get(metric, metric)} by group", fontsize=11)
    return save_figure(fig, stem)


def scatter_clinical(data, metric, clinical, stem, value="mean", control_label="HC", title=""):
    """ROI value against a clinical column, one colour per group, least-squares line."""
    sub, units = _units_of(data, metric)
    sub = sub[sub[clinical].notna() & sub[value].notna()]
    units = [u for u in units if u in set(map(tuple, sub[UNIT_KEYS].to_numpy()))]
    if not units:
        return []
    levels = group_levels(sub["group"], control_label)
    fig, axes = _grid(len(units))
    grouped = dict(list(sub.groupby(UNIT_KEYS, sort=False)))
    for ax, unit in zip(axes, units):
        chunk = grouped[unit]
        for i, g in enumerate(levels):
            part = chunk[chunk.group == g]
            ax.scatter(part[clinical], part[value], s=9, alpha=0.7, color=COLORS[i % 10],
                       label=g, linewidths=0)
        x = chunk[clinical].to_numpy(dtype=float)
        y = chunk[value].to_numpy(dtype=float)
        if len(x) >= 3 and np.ptp(x) > 0:
            slope, icpt = np.polyfit(x, y, 1)
            xs = np.array([x.min(), x.max()])
            ax.plot(xs, icpt + slope * xs, color="k", lw=1)
        ax.set_title(_title(unit), fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=8)
    axes[0].legend(fontsize=7, frameon=False)
    for ax in axes:
        ax.set_xlabel(clinical, fontsize=8)
    fig.suptitle(title or f"{METRIC_LABELS.get(metric, metric)} against {clinical}", fontsize=11)
    return save_figure(fig, stem)


def spaghetti(data, metric, stem, value="mean", control_label="HC"):
    """Each participant's value over time (years since the first session, else session rank),
    participants with >= 2 sessions; bold line: group mean per session rank."""
    sub = data[(data["n_sessions"] >= 2) & data["group"].notna()]
    sub, units = _units_of(sub, metric)
    if not units:
        return []
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
        ax.set_title(_title(unit), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("years since first session" if dated else "session", fontsize=8)
    axes[0].set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=8)
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)}: change over sessions", fontsize=11)
    return save_figure(fig, stem)
