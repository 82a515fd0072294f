"""Plots shared by several notebooks: UMAP projections and image galleries."""

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
