"""Plots shared by several notebooks: UMAP projections, image galleries, paired differences with
their intervals, score bars and reliability curves."""

from __future__ import annotations

import numpy as np

from . import maps


def umap_2d(X: np.ndarray, seed: int = 0, n_neighbors: int = 15, metric: str = "cosine") -> np.ndarray:
    """2-D UMAP of the rows of ``X`` (McInnes et al. 2018). Subsample large ``X`` first:
    on 2 CPU cores 5,000 x 512 takes about a minute."""
    import umap

    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(X) - 1), metric=metric, random_state=seed,
                        n_jobs=1, init="random" if len(X) < 50 else "spectral")
    return reducer.fit_transform(X)


def subsample(n: int, n_max: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``n_max`` of ``n`` items, drawn without replacement."""
    if n <= n_max:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, n_max, replace=False))


def scatter_by_class(ax, xy: np.ndarray, codes, title: str = "", legend: bool = True, scheme="eunis"):
    """Scatter ``xy`` coloured by the code of ``scheme`` (EUNIS by default; ``None`` in light grey,
    drawn first)."""

    codes = np.asarray([c if isinstance(c, str) else None for c in codes], dtype=object)
    unknown = np.array([c is None for c in codes])
    if unknown.any():
        ax.scatter(*xy[unknown].T, s=4, c="#cccccc", label="unlabelled", linewidths=0)
    colours = maps.class_colours(codes[~unknown], scheme)
    for code, colour in colours.items():
        sel = codes == code
        ax.scatter(*xy[sel].T, s=6, c=colour, label=code, linewidths=0)
    ax.set(title=title, xticks=[], yticks=[])
    if legend:
        ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False, ncol=2)
    return ax


def image_gallery(fig, rows: list[list[str]], row_titles: list[str], col_titles: list[str]):
    """A grid of images (file paths, ``None`` for an empty cell) with row and column titles."""
    from PIL import Image

    axes = fig.subplots(len(rows), len(col_titles), squeeze=False)
    for r, paths in enumerate(rows):
        for c, path in enumerate(paths):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if path:
                with Image.open(path) as im:
                    ax.imshow(im)
            if r == 0:
                ax.set_title(col_titles[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_titles[r], fontsize=8, rotation=0, ha="right", va="center")
    return axes


#: Bar colours of a paired comparison's verdict (``CVResult.comparisons``); grey: no clear difference.
VERDICT_COLOURS = {"better": "#08519c", "worse": "#de2d26"}


def difference_bars(ax, table, labels=None, aim: float | None = None, title: str = "",
                    xlabel: str = "macro-F1 difference (95 % interval)"):
    """Horizontal bars of paired differences with their intervals, one per row of ``table``
    (columns ``difference``, ``ci_low``, ``ci_high`` and ``verdict``, as
    :meth:`habitat_helpers.evaluation.CVResult.comparisons` gives), coloured by verdict, first
    row on top. ``labels``: the row names (default the ``baseline`` column); ``aim``: a dotted
    line at that difference."""
    y = np.arange(len(table))
    diff = table["difference"].to_numpy(float)
    colours = table["verdict"].map(VERDICT_COLOURS).fillna("#999999")
    ax.barh(y, diff, color=colours, alpha=0.6)
    ax.errorbar(diff, y, xerr=[diff - table["ci_low"].to_numpy(float), table["ci_high"].to_numpy(float) - diff],
                fmt="none", ecolor="k", capsize=3)
    ax.axvline(0, color="k", lw=1)
    if aim is not None:
        ax.axvline(aim, color="k", lw=0.8, ls=":", label=f"{aim:+g} (the aim)")
        ax.legend(fontsize=7)
    ax.set_yticks(y, list(table["baseline"] if labels is None else labels), fontsize=8)
    ax.set_ylim(len(table) - 0.5, -0.5)
    ax.set(title=title, xlabel=xlabel)
    return ax


def score_bars(axes, summary, models, metric_names, colours=None, xlabel: str = "level"):
    """One panel per metric of ``metric_names``: the mean of each of ``models`` per level with
    the standard deviation as an error bar, from a :meth:`habitat_helpers.evaluation.CVResult.summary`
    table. Models missing from the table are left as gaps."""
    for ax, metric in zip(axes, metric_names):
        mean = summary[metric]["mean"].unstack("level").reindex(models)
        std = summary[metric]["std"].unstack("level").reindex(models)
        mean.T.plot.bar(ax=ax, yerr=std.T, capsize=2, legend=False, rot=0, color=colours)
        ax.set(title=metric.replace("_", " "), xlabel=xlabel, ylim=(0, 1))
    return axes


def reliability_curves(ax, cv, models, levels=(1, 3), colours=None):
    """Reliability curves (accuracy against confidence) of ``models`` at ``levels``, from the
    pooled test predictions of ``cv`` (a :class:`habitat_helpers.evaluation.CVResult`), each
    labelled with its expected calibration error; the diagonal is perfect calibration."""
    styles = ["-", ":", "--"]
    for i, name in enumerate(models):
        colour = None if colours is None else colours[i]
        for level, style in zip(levels, styles):
            r = cv.reliability(name, level)
            ax.plot(r["confidence"], r["accuracy"], style, marker="o", color=colour, ms=3,
                    label=f"{name}, level {level} (ECE {cv.ece(name, level):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1)
    ax.set(xlabel="confidence (probability of the predicted code)", ylabel="accuracy", title="Reliability",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7)
    return ax


def groups_map(ax, lat, lon, groups, bbox, names=None, colours=None, title: str = ""):
    """Sites on a land background, one colour per group of ``groups`` (one value per site, e.g.
    the fold or ``"train"``/``"val"``/``"test"``), each in the legend with its number of sites.
    ``names``: the legend text of each group (default the group itself); ``colours``: one per
    group, in the order of ``names`` (default the groups' sorted order)."""
    lat, lon, groups = np.asarray(lat, float), np.asarray(lon, float), np.asarray(groups)
    names = names or {g: str(g) for g in sorted(set(groups.tolist()))}
    maps.land_background(ax, bbox)
    for i, (group, name) in enumerate(names.items()):
        sel = groups == group
        ax.scatter(lon[sel], lat[sel], s=4, c=None if colours is None else colours[i],
                   label=f"{name} ({sel.sum()} sites)")
    ax.set(title=title, xlabel="longitude (°)", ylabel="latitude (°)")
    ax.legend(markerscale=3, fontsize=7)
    return ax


def label_efficiency(axes, cv, models, levels=(2, 3), colours=None, level_name: str = "level"):
    """Macro-F1 against the share of labelled training sites used, one panel per level of
    ``levels``, one line (mean ± std over folds and seeds) per model of ``models``, from
    :meth:`habitat_helpers.evaluation.CVResult.label_efficiency`. Models not refitted on fewer
    labels show a single point."""
    eff = cv.label_efficiency()["macro_f1"]
    fractions = sorted(eff.index.unique("fraction"))
    for ax, level in zip(axes, levels):
        for i, name in enumerate(models):
            if (name, level) not in eff.index.droplevel("fraction"):
                continue
            m, s = eff["mean"].loc[(name, level)], eff["std"].loc[(name, level)]
            ax.errorbar(m.index * 100, m.values, yerr=s.values, marker="o", capsize=3,
                        color=None if colours is None else colours[i], label=name)
        ax.set(xscale="log", xlabel="labelled training sites used (%)", ylabel="macro-F1",
               title=f"{level_name} {level}")
        ax.set_xticks([f * 100 for f in fractions], [f"{f * 100:g}" for f in fractions])
    axes[0].legend()
    return axes


def confusion_heatmap(ax, confusion, title: str = ""):
    """A confusion table (true codes in rows, predicted in columns, as
    :meth:`habitat_helpers.evaluation.CVResult.confusion` gives) annotated with its counts and
    coloured by each row's share, so rare and common habitats read alike."""
    import seaborn as sns

    share = confusion.div(confusion.sum(axis=1), axis=0)
    sns.heatmap(share, annot=confusion, fmt="d", cmap="Blues", vmin=0, vmax=1, ax=ax, cbar=False)
    ax.set(title=title)
    return ax
