"""Habitat maps: predict over a regular grid, measure uncertainty, draw folium and static maps.

At a grid cell only the location is known (no photo was taken there), so maps are
predicted from GPS through the aligned GPS head; where other modalities exist for a cell
they can be added to the features (:func:`habitat_helpers.align.site_features`).
"""

from __future__ import annotations

import base64
import colorsys
import html
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from . import labels, landmask, paths

# One hue per level-1 class; finer codes are lighter or darker shades of it.
FORMATION_COLOURS = {  # EUNIS 2021 formations
    "N": "#e6c96a",  # coastal: sand
    "Q": "#5b7fa3",  # wetlands: water blue
    "R": "#9bc74a",  # grasslands: light green
    "S": "#a0629a",  # heath and scrub: heather purple
    "T": "#2f6b2f",  # forest: dark green
    "U": "#9a9a9a",  # sparsely vegetated: grey
    "V": "#d98c3f",  # man-made: ochre
}


LEVEL1_COLOURS = {
    "eunis": FORMATION_COLOURS,
    "lucas-lc1": {"A": "#c0392b", "B": "#e0b040", "C": "#2f6b2f", "D": "#a0629a", "E": "#9bc74a",
                  "F": "#9a9a9a", "G": "#3a78c2", "H": "#4fa3a0"},   # artificial red ... wetland teal
    "corine": {"1": "#c0392b", "2": "#e0b040", "3": "#2f6b2f", "4": "#4fa3a0", "5": "#3a78c2"},
}
_FALLBACK = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
             "#bcbd22", "#17becf")


def _level1_colour(scheme, code: str) -> str:
    given = LEVEL1_COLOURS.get(scheme.name, {})
    if code in given:
        return given[code]
    return _FALLBACK[scheme.codes(1).index(code) % len(_FALLBACK)]


def class_colours(codes, scheme="eunis") -> dict[str, str]:
    """A hex colour per code of ``scheme`` (:func:`habitat_helpers.labels.get`): its level-1 class's
    hue, shaded by the code's rank among its siblings (codes with the same parent)."""

    scheme = labels.get(scheme)
    codes = sorted(set(codes))
    out = {}
    for code in codes:
        level = scheme.level_of(code)
        r, g, b = (int(_level1_colour(scheme, scheme.ancestor(code, 1))[i:i + 2], 16) / 255 for i in (1, 3, 5))
        h, lightness, s = colorsys.rgb_to_hls(r, g, b)
        siblings = [c for c in codes if scheme.parent(c) == scheme.parent(code) and scheme.level_of(c) == level]
        if level > 1 and len(siblings) > 1:
            shift = (siblings.index(code) / (len(siblings) - 1) - 0.5) * (0.35 if level == 2 else 0.2)
            lightness = min(0.85, max(0.15, lightness + shift))
        r, g, b = colorsys.hls_to_rgb(h, lightness, s)
        out[code] = "#{:02x}{:02x}{:02x}".format(*(round(255 * v) for v in (r, g, b)))
    return out


def _scheme_label(scheme) -> str:
    """How legends name the hierarchy: "EUNIS" for EUNIS 2021, else the scheme's title."""
    return "EUNIS" if scheme.name == "eunis" else scheme.title


EUROPE_BBOX = (-25.0, 34.0, 45.0, 72.0)  # lon_min, lat_min, lon_max, lat_max: the EUNIS area, roughly


def country_shape(country: str, clip_bbox=EUROPE_BBOX):
    """A country's outline (shapely geometry, EPSG:4326) by English name or ISO 3166-1 alpha-3 code,
    from Natural Earth 1:110m (:func:`country_outlines`), clipped to ``clip_bbox`` (default
    Europe, which drops overseas parts such as French Guiana; ``None`` keeps them).

    At 1:110m borders are generalised by several km: for exact borders pass your own polygon as
    ``within=`` to :func:`make_grid` or :func:`predict_rasters`."""
    import shapely

    world = _natural_earth()
    hit = world[(world["name"].str.casefold() == country.casefold()) | (world["iso_a3"] == country.upper())]
    if hit.empty:
        close = sorted(n for n in world["name"] if n.casefold().startswith(country.casefold()[:3]))
        raise ValueError(f"unknown country {country!r} (Natural Earth names or ISO alpha-3 codes"
                         + (f"; did you mean {', '.join(close)}?)" if close else ")"))
    shape = shapely.union_all(hit.geometry.to_numpy())
    if clip_bbox is not None:
        shape = shapely.clip_by_rect(shape, *clip_bbox)
    if shape.is_empty:
        raise ValueError(f"{country!r} has no land inside {clip_bbox}")
    return shape


def region_bbox(shape, resolution_deg: float) -> tuple[float, float, float, float]:
    """The bounding box of ``shape`` snapped outward to multiples of ``resolution_deg``, so grids
    of the same resolution over different regions share cell edges."""
    lon_min, lat_min, lon_max, lat_max = shape.bounds
    snap = resolution_deg
    return (float(np.floor(lon_min / snap) * snap), float(np.floor(lat_min / snap) * snap),
            float(np.ceil(lon_max / snap) * snap), float(np.ceil(lat_max / snap) * snap))


def _keep(cells: pd.DataFrame, land_only: bool, within) -> pd.DataFrame:
    keep = np.ones(len(cells), dtype=bool)
    if land_only and len(cells):

        keep &= landmask.is_land(cells["lat"].to_numpy(), cells["lon"].to_numpy())
    if within is not None and len(cells):
        import shapely

        keep &= shapely.contains_xy(within, cells["lon"].to_numpy(), cells["lat"].to_numpy())
    return cells if keep.all() else cells[keep].reset_index(drop=True)


def make_grid(bbox: tuple[float, float, float, float] | None, resolution_deg: float, land_only: bool = True,
              within=None) -> pd.DataFrame:
    """Cell centres of a regular lat/lon grid over ``bbox = (lon_min, lat_min, lon_max, lat_max)``.

    Columns ``row, col, lat, lon`` (row 0 is the northern edge, as in a raster). With
    ``land_only`` the sea cells are dropped using the 1 km GLOBE land mask (:mod:`habitat_helpers.landmask`).
    ``within`` (a shapely geometry in EPSG:4326, e.g. ``country_shape("Austria")``) keeps only the
    cells whose centre lies inside it; with ``bbox=None`` the grid covers its bounding box
    (:func:`region_bbox`).
    """
    bbox = _grid_bbox(bbox, within, resolution_deg)
    height, width = grid_shape(bbox, resolution_deg)
    # the whole grid is iter_grid's one block (none when the box is under half a cell high)
    blocks = list(iter_grid(bbox, resolution_deg, chunk_rows=max(height, 1), land_only=land_only, within=within))
    grid = blocks[0] if blocks else pd.DataFrame({"row": [], "col": [], "lat": [], "lon": []})
    grid.attrs.update(bbox=tuple(bbox), resolution_deg=resolution_deg, shape=(height, width))
    return grid


def _grid_bbox(bbox, within, resolution_deg: float):
    """``bbox``, or the snapped bounding box of ``within`` when ``bbox`` is None."""
    if bbox is not None:
        return bbox
    if within is None:
        raise ValueError("give a bbox, a region (within=), or both")
    return region_bbox(within, resolution_deg)


def to_raster(grid: pd.DataFrame, values) -> np.ndarray:
    """Scatter per-cell ``values`` back into the grid's 2-D raster (NaN / None off land)."""
    values = np.asarray(values)
    numeric = np.issubdtype(values.dtype, np.number)
    raster = np.full(grid.attrs["shape"], np.nan if numeric else None, dtype=float if numeric else object)
    raster[grid["row"].to_numpy(), grid["col"].to_numpy()] = values
    return raster


def _rgba(raster: np.ndarray, colours: dict[str, str]) -> np.ndarray:
    out = np.zeros((*raster.shape, 4), dtype=np.uint8)
    for code, hexcol in colours.items():
        mask = raster == code
        out[mask] = [int(hexcol[i:i + 2], 16) for i in (1, 3, 5)] + [210]
    return out


def _png_data_url(rgba: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _scalar_rgba(raster: np.ndarray, cmap: str = "magma_r") -> np.ndarray:
    import matplotlib

    finite = np.isfinite(raster)
    lo, hi = (np.nanmin(raster), np.nanmax(raster)) if finite.any() else (0.0, 1.0)
    scaled = np.where(finite, (raster - lo) / (hi - lo + 1e-12), 0)
    rgba = (matplotlib.colormaps[cmap](scaled) * 255).astype(np.uint8)
    rgba[..., 3] = np.where(finite, 190, 0)
    return rgba


def country_outlines(bbox=None, margin_deg: float = 2.0):
    """Country polygons (Natural Earth 1:110m, public domain), optionally clipped to ``bbox``.

    The shapes ship offline inside ``pyogrio`` (its test data, ``naturalearth_lowres``: 177
    countries, EPSG:4326), so maps have a geographic frame without any download. Returns a
    GeoDataFrame with ``name``, ``iso_a3``, ``continent`` and ``geometry``; with ``bbox = (lon_min,
    lat_min, lon_max, lat_max)`` only the parts within ``margin_deg`` of it are kept."""
    outlines = _natural_earth().copy()
    return outlines if bbox is None else _clip(outlines, bbox, margin_deg)


def _clip(table, bbox, margin_deg: float):
    """``table``'s geometries within ``margin_deg`` of ``bbox``, empty ones dropped."""
    lon_min, lat_min, lon_max, lat_max = bbox
    table = table.clip((lon_min - margin_deg, lat_min - margin_deg, lon_max + margin_deg, lat_max + margin_deg))
    return table[~table.geometry.is_empty].reset_index(drop=True)


def _borders(bbox, margin_deg: float = 2.0):
    """Country borders as lines, clipped to ``bbox`` (clipping the lines rather than the polygons
    draws no false border along the clip box)."""
    lines = _natural_earth()[["name", "geometry"]].copy()
    lines["geometry"] = lines.geometry.boundary
    return _clip(lines, bbox, margin_deg)


@lru_cache(maxsize=1)
def _natural_earth():
    import geopandas as gpd


    try:
        path = paths.package_file("pyogrio", "tests/fixtures/naturalearth_lowres/naturalearth_lowres.shp")
    except (ImportError, FileNotFoundError) as err:
        raise FileNotFoundError("Natural Earth country outlines not found: they ship with `pyogrio` "
                                "(tests/fixtures/naturalearth_lowres); reinstall it (pip install pyogrio)") from err
    return gpd.read_file(path)[["name", "iso_a3", "continent", "geometry"]]


@lru_cache(maxsize=1)
def leaflet_assets() -> tuple[str, str]:
    """Leaflet's JavaScript and CSS as text, from the ``django-js-lib-leaflet`` package (Leaflet
    1.9.4, BSD-2-Clause), with the CSS's icon images inlined as data URLs."""
    from importlib.resources import files

    try:
        folder = files("js_lib_leaflet") / "static" / "js_lib_leaflet"
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("offline maps need Leaflet from the `django-js-lib-leaflet` package "
                                  "(pip install django-js-lib-leaflet)") from err
    js = (folder / "leaflet.js").read_text(encoding="utf-8")
    css = (folder / "leaflet.css").read_text(encoding="utf-8")
    for image in ("layers.png", "layers-2x.png", "marker-icon.png"):
        data = base64.b64encode((folder / "images" / image).read_bytes()).decode()
        css = css.replace(f"url(images/{image})", f"url(data:image/png;base64,{data})")
    if "</script" in js.lower() or "</style" in css.lower():
        raise ValueError("Leaflet's files contain a closing tag and cannot be inlined")
    return js, css


def bundle_leaflet(fmap):
    """Make a folium map self-contained: Leaflet's JS and CSS go into the page itself instead of
    folium's links to CDNs, so the map works in a book or file opened without internet.

    folium also links jQuery, Bootstrap, Font Awesome and awesome-markers, which the maps of this
    package do not use (they draw image overlays, GeoJSON, circle markers, popups and the layer
    control, all plain Leaflet); those links are dropped. Only the background tiles still come
    from the network (offline they stay grey; the country outlines layer does not need them)."""
    from branca.element import Element

    js, css = leaflet_assets()
    fmap.default_js = []
    fmap.default_css = []
    header = fmap.get_root().header
    header.add_child(Element(f"<style>{css}</style>"), name="leaflet_css_bundled")
    header.add_child(Element(f"<script>{js}</script>"), name="leaflet_js_bundled")
    header.add_child(Element(f"<script>{_DOLLAR_SHIM}</script>"), name="popup_html_shim")
    return fmap


# folium builds popup contents with jQuery, as ``$(`<div>...</div>`)[0]``: this stand-in parses
# the markup into an element, which is all those calls need (used only when jQuery is absent).
_DOLLAR_SHIM = """if (typeof window.$ === "undefined") {
  window.$ = function (markup) {
    var template = document.createElement("template");
    template.innerHTML = String(markup).trim();
    return [template.content.firstElementChild];
  };
}"""


def _outline_layer(bbox):
    import folium

    borders = _borders(bbox).simplify(0.02)
    return folium.GeoJson(borders.to_json(), name="Country outlines (Natural Earth)",
                          style_function=lambda _: {"color": "#444444", "weight": 1, "fill": False},
                          interactive=False, control=True)


def _base_map(bbox, tiles: bool, offline: bool):
    import folium

    lon_min, lat_min, lon_max, lat_max = bbox
    fmap = folium.Map(location=[(lat_min + lat_max) / 2, (lon_min + lon_max) / 2], zoom_start=4,
                      tiles=None, control_scale=True)
    if tiles:
        folium.TileLayer("OpenStreetMap", name="OpenStreetMap (needs internet)").add_to(fmap)
    _outline_layer(bbox).add_to(fmap)
    fmap.fit_bounds([[lat_min, lon_min], [lat_max, lon_max]])
    if offline:
        bundle_leaflet(fmap)
    return fmap


def _legend_section(title: str, colours: dict[str, str], names: dict[str, str], open_: bool) -> str:
    items = "".join(
        f'<div><span style="display:inline-block;width:11px;height:11px;background:{c};'
        f'margin-right:4px;vertical-align:middle"></span>{html.escape(code)} '
        f'{html.escape(names.get(code, ""))}</div>'
        for code, c in colours.items())
    return (f'<details{" open" if open_ else ""}><summary><b>{html.escape(title)}</b></summary>'
            f'{items}</details>')


def _scale_section(title: str, lo: float, hi: float, cmap: str = "magma_r") -> str:
    import matplotlib

    stops = ", ".join(matplotlib.colors.to_hex(matplotlib.colormaps[cmap](x)) for x in np.linspace(0, 1, 6))
    return (f'<details><summary><b>{html.escape(title)}</b></summary>'
            f'<div style="height:10px;width:160px;background:linear-gradient(to right, {stops})"></div>'
            f'<div style="display:flex;justify-content:space-between;width:160px">'
            f'<span>{lo:.2f}</span><span>{hi:.2f}</span></div></details>')


def _legend_box(sections: list[str]) -> str:
    return ('<div class="hh-legend" style="position:absolute;bottom:24px;left:10px;z-index:9999;'
            'background:white;padding:6px 8px;font:11px sans-serif;max-height:50%;max-width:45%;'
            'overflow:auto;border:1px solid #999;border-radius:3px">' + "".join(sections) + "</div>")


def _popup_text(row, columns, scheme) -> str:
    lines = []
    for column in columns:
        value = row.get(column)
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        if column in (labels.LABEL_COLUMN, *labels.LEVEL_COLUMNS.values()) and text and scheme.is_valid(text):
            text = f"{text} {scheme.name_of(text)}"
        lines.append(f"<b>{html.escape(str(column))}</b>: {html.escape(text)}")
    return "<br>".join(lines)


def folium_prediction_map(grid: pd.DataFrame, predictions: pd.DataFrame, sites=None,
                          levels=(1, 2, 3), uncertainty_column: str = "entropy_l3", title: str = "",
                          popup_columns=("site_id", "label"), tiles: bool = True, offline: bool = True,
                          scheme="eunis"):
    """Interactive map: one overlay per level of ``scheme``, an uncertainty overlay, country outlines,
    optional labelled-site markers, a layer control and a legend (a section per layer).

    ``predictions`` has one row per grid cell (``label_l1..3`` and the uncertainty column).
    Popups show ``popup_columns`` of ``sites``, HTML-escaped (a site named ``<script>`` is shown,
    not run). With ``offline`` (default) Leaflet is written into the page (:func:`bundle_leaflet`);
    the OpenStreetMap background (``tiles``) is the only thing that needs the internet.
    """
    import folium


    scheme = labels.get(scheme)
    what = _scheme_label(scheme)
    lon_min, lat_min, lon_max, lat_max = grid.attrs["bbox"]
    bounds = [[lat_min, lon_min], [lat_max, lon_max]]
    fmap = _base_map(grid.attrs["bbox"], tiles, offline)
    sections = []
    for level in levels:
        col = f"label_l{level}"
        raster = to_raster(grid, predictions[col].to_numpy(object))
        colours = class_colours(predictions[col].dropna(), scheme)
        folium.raster_layers.ImageOverlay(
            _png_data_url(_rgba(raster, colours)), bounds=bounds, name=f"Predicted {what} level {level}",
            show=(level == 1), interactive=False).add_to(fmap)
        sections.append(_legend_section(f"{what} level {level}", colours, {c: scheme.name_of(c) for c in colours},
                                        open_=(level == 1)))
    values = predictions[uncertainty_column].to_numpy(float)
    unc = to_raster(grid, values)
    folium.raster_layers.ImageOverlay(_png_data_url(_scalar_rgba(unc)), bounds=bounds,
                                      name=f"Uncertainty ({uncertainty_column}, dark = uncertain)",
                                      show=False).add_to(fmap)
    finite = values[np.isfinite(values)]
    if finite.size:
        sections.append(_scale_section(f"Uncertainty ({uncertainty_column})", finite.min(), finite.max()))
    if sites is not None:
        group = folium.FeatureGroup(name="Labelled sites", show=False)
        labelled = sites[sites["label_l1"].notna()]
        colours = class_colours(labelled["label_l1"], scheme)
        for _, s in labelled.iterrows():
            folium.CircleMarker([s["lat"], s["lon"]], radius=3, color=colours[s["label_l1"]], fill=True,
                                popup=folium.Popup(_popup_text(s, popup_columns, scheme), max_width=280)).add_to(group)
        group.add_to(fmap)
    if title:
        sections.insert(0, f"<div><b>{html.escape(title)}</b></div>")
    fmap.get_root().html.add_child(folium.Element(_legend_box(sections)))
    folium.LayerControl(collapsed=False).add_to(fmap)
    return fmap


def folium_sites_map(sites, colour_column: str = "label_l1", popup_columns=("site_id", "label"),
                     tiles: bool = True, offline: bool = True, scheme="eunis"):
    """Interactive map of sites coloured by ``colour_column`` (grey where unlabelled), one layer
    per class, country outlines, a legend, and HTML-escaped popups of ``popup_columns``; codes
    and names come from ``scheme`` (:func:`habitat_helpers.labels.get`)."""
    import folium


    scheme = labels.get(scheme)

    pad = 0.5
    bbox = (float(sites["lon"].min()) - pad, float(sites["lat"].min()) - pad,
            float(sites["lon"].max()) + pad, float(sites["lat"].max()) + pad)
    fmap = _base_map(bbox, tiles, offline)
    codes = sites[colour_column].dropna()
    colours = class_colours(codes, scheme)
    layers = {code: folium.FeatureGroup(name=f"{code} {scheme.name_of(code)}") for code in colours}
    layers[None] = folium.FeatureGroup(name="unlabelled", show=False)
    for _, s in sites.iterrows():
        code = s[colour_column] if isinstance(s[colour_column], str) else None
        folium.CircleMarker([s["lat"], s["lon"]], radius=3, weight=1,
                            color=colours.get(code, "#777777"), fill=True, fill_opacity=0.8,
                            popup=folium.Popup(_popup_text(s, popup_columns, scheme), max_width=280)).add_to(layers[code])
    for layer in layers.values():
        layer.add_to(fmap)
    fmap.get_root().html.add_child(folium.Element(_legend_box([_legend_section(
        f"{_scheme_label(scheme)} ({colour_column})", colours, {c: scheme.name_of(c) for c in colours},
        open_=True)])))
    folium.LayerControl(collapsed=True).add_to(fmap)
    return fmap


def land_background(ax, bbox, resolution_deg: float = 0.05, outlines: bool = True) -> None:
    """Shade land (light grey) and sea (white) on a matplotlib axis from the 1 km land mask,
    and draw the country borders (Natural Earth, :func:`country_outlines`)."""

    lon_min, lat_min, lon_max, lat_max = bbox
    lats = np.arange(lat_max, lat_min, -resolution_deg)
    lons = np.arange(lon_min, lon_max, resolution_deg)
    lon_g, lat_g = np.meshgrid(lons, lats)
    land = landmask.is_land(lat_g, lon_g)
    ax.imshow(np.where(land, 0.88, 1.0), cmap="gray", vmin=0, vmax=1,
              extent=(lon_min, lon_max, lat_min, lat_max), interpolation="nearest")
    ax.contour(lons, lats, land.astype(float), levels=[0.5], colors="#666666", linewidths=0.4)
    if outlines:
        _borders(bbox).plot(ax=ax, color="#333333", linewidth=0.5, zorder=3)
        ax.set_xlim(lon_min, lon_max)
        ax.set_ylim(lat_min, lat_max)


def static_prediction_map(ax, grid: pd.DataFrame, predictions: pd.DataFrame, level: int = 1,
                          legend: bool = True, scheme="eunis"):
    """Matplotlib map of the predicted class at ``level`` over the grid, with a legend of the
    codes and names of ``scheme``."""
    from matplotlib.patches import Patch


    scheme = labels.get(scheme)

    bbox = grid.attrs["bbox"]
    land_background(ax, bbox)
    col = f"label_l{level}"
    raster = to_raster(grid, predictions[col].to_numpy(object))
    colours = class_colours(predictions[col].dropna(), scheme)
    ax.imshow(_rgba(raster, colours), extent=(bbox[0], bbox[2], bbox[1], bbox[3]), interpolation="nearest")
    ax.set(xlabel="longitude (°)", ylabel="latitude (°)", title=f"Predicted {_scheme_label(scheme)} level {level}")
    if legend:
        handles = [Patch(color=c, label=f"{code} {scheme.name_of(code)[:38]}") for code, c in colours.items()]
        ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


def static_scalar_map(ax, grid: pd.DataFrame, values, title: str, cmap: str = "magma_r", label: str = ""):
    """Matplotlib map of a per-cell number (e.g. entropy) with a colour bar."""
    bbox = grid.attrs["bbox"]
    land_background(ax, bbox)
    image = ax.imshow(to_raster(grid, np.asarray(values, float)), cmap=cmap,
                      extent=(bbox[0], bbox[2], bbox[1], bbox[3]), interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, shrink=0.7, label=label)
    ax.set(xlabel="longitude (°)", ylabel="latitude (°)", title=title)
    return ax


def write_predictions_geoparquet(path, grid: pd.DataFrame, predictions: pd.DataFrame):
    """Point predictions (cell centres, EPSG:4326) as GeoParquet, readable by QGIS and geopandas."""
    import geopandas as gpd

    table = pd.concat([grid.reset_index(drop=True), predictions.reset_index(drop=True)], axis=1)
    gdf = gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(table.lon, table.lat), crs="EPSG:4326")
    gdf.to_parquet(path, index=False)
    return path


def class_legend(codes, scheme="eunis") -> pd.DataFrame:
    """The legend of a class raster: ``value`` (1..K in sorted code order, 0 = no data), ``code``,
    ``name`` (in ``scheme``, EUNIS 2021 by default) and ``colour`` (hex, :func:`class_colours`),
    one row per code."""

    scheme = labels.get(scheme)
    classes = sorted({c for c in codes if isinstance(c, str)})
    colours = class_colours(classes, scheme)
    return pd.DataFrame({"value": np.arange(1, len(classes) + 1), "code": classes,
                         "name": [scheme.name_of(c) for c in classes], "colour": [colours[c] for c in classes]})


def write_class_geotiff(path, grid: pd.DataFrame, codes, p_top=None, entropy=None,
                        scheme="eunis") -> dict[str, Path]:
    """Write a predicted-habitat map as Cloud-Optimised GeoTIFFs (EPSG:4326, the grid's cells).

    ``<path>``: one uint8 band, 0 = no prediction (sea, outside), 1..K = the EUNIS codes in
    sorted order, with a colour table (:func:`class_colours`) and the code and habitat name of
    every value in the band's metadata (``class_<value>``), so GIS tools show a legend.
    ``<path stem>_legend.csv``: the same legend as a table (:func:`class_legend`).
    ``<path stem>_uncertainty.tif`` (when ``p_top`` or ``entropy`` is given): float32 bands
    ``p_top`` (probability of the predicted code) and ``entropy`` (nats), NaN = no data.
    Returns the paths written (``classes``, ``legend``, ``uncertainty``)."""
    codes = np.asarray(codes, dtype=object)
    legend = class_legend(codes, scheme)
    value = dict(zip(legend["code"], legend["value"].tolist()))
    raster = np.zeros(grid.attrs["shape"], dtype=np.uint8)
    raster[grid["row"].to_numpy(), grid["col"].to_numpy()] = [value.get(c, 0) for c in codes]
    bands = {name: to_raster(grid, np.asarray(values, float))
             for name, values in (("p_top", p_top), ("entropy", entropy)) if values is not None}
    return _write_cogs(path, raster, legend, grid.attrs["bbox"], grid.attrs["resolution_deg"], bands)


def write_rasters_geotiffs(folder, rasters: dict, stem: str = "habitat", scheme="eunis") -> dict[int, dict[str, Path]]:
    """Write the output of :func:`predict_rasters` as ``<stem>_level{1,2,3}.tif`` (+ legends), the
    level-3 file with ``<stem>_level3_uncertainty.tif`` (bands ``p_top`` and ``entropy``), in the
    same format as :func:`write_class_geotiff`. Returns the paths written per level."""
    written = {}
    for level in (1, 2, 3):
        legend = class_legend(rasters["classes"][level], scheme)
        bands = ({"p_top": rasters["p_l3"], "entropy": rasters["entropy_l3"]} if level == 3 else {})
        written[level] = _write_cogs(Path(folder) / f"{stem}_level{level}.tif", rasters[f"level{level}"], legend,
                                     rasters["bbox"], rasters["resolution_deg"], bands)
    return written


def style_class_band(dst, legend: pd.DataFrame) -> None:
    """Give band 1 of an open GeoTIFF (uint8 class values) the legend's colour table, its codes and
    names in ``class_<value>`` tags, and a description, so GIS tools show the legend."""
    colours = {int(v): tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) + (255,)
               for v, c in zip(legend["value"], legend["colour"])}
    dst.write_colormap(1, {0: (0, 0, 0, 0), **colours})
    dst.update_tags(1, **{f"class_{v}": f"{c} {n}" for v, c, n in legend[["value", "code", "name"]].itertuples(index=False)})
    dst.set_band_description(1, "class (code and name in the band's class_<value> tags)")


def _write_cogs(path, raster: np.ndarray, legend: pd.DataFrame, bbox, res: float,
                bands: dict[str, np.ndarray]) -> dict[str, Path]:
    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin

    if len(legend) > 254:
        raise ValueError(f"{len(legend)} classes do not fit in one byte")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = raster.shape
    profile = {"driver": "GTiff", "height": height, "width": width, "crs": "EPSG:4326",
               "transform": from_origin(bbox[0], bbox[3], res, res)}
    written = {}
    tmp = path.with_name(path.name + ".tmp.tif")
    with rasterio.open(tmp, "w", count=1, dtype="uint8", nodata=0, **profile) as dst:
        dst.write(raster.astype(np.uint8, copy=False), 1)
        style_class_band(dst, legend)
    rasterio.shutil.copy(tmp, path, driver="COG")
    tmp.unlink()
    written["classes"] = path
    written["legend"] = path.with_name(path.stem + "_legend.csv")
    legend.to_csv(written["legend"], index=False)
    if bands:
        upath = path.with_name(path.stem + "_uncertainty.tif")
        tmp = upath.with_name(upath.name + ".tmp.tif")
        with rasterio.open(tmp, "w", count=len(bands), dtype="float32", nodata=np.nan, **profile) as dst:
            for i, (name, values) in enumerate(bands.items(), start=1):
                dst.write(np.asarray(values, dtype=np.float32), i)
                dst.set_band_description(i, name)
        rasterio.shutil.copy(tmp, upath, driver="COG")
        tmp.unlink()
        written["uncertainty"] = upath
    return written


def iter_grid(bbox: tuple[float, float, float, float] | None, resolution_deg: float, chunk_rows: int = 64,
              land_only: bool = True, within=None):
    """The cells of :func:`make_grid`, a block of ``chunk_rows`` raster rows at a time, so a
    country at 100 m never sits in memory as one table. Yields DataFrames ``row, col, lat,
    lon``; ``grid_shape(bbox, resolution_deg)`` gives the raster's shape. ``land_only`` and ``within``
    filter cells as in :func:`make_grid` (``bbox=None``: the box of ``within``)."""
    bbox = _grid_bbox(bbox, within, resolution_deg)
    lon_min, lat_min, lon_max, lat_max = bbox
    height, width = grid_shape(bbox, resolution_deg)
    lons = lon_min + resolution_deg * (np.arange(width) + 0.5)
    for start in range(0, height, chunk_rows):
        rows = np.arange(start, min(height, start + chunk_rows))
        lats = lat_max - resolution_deg * (rows + 0.5)
        r, c = np.meshgrid(rows, np.arange(width), indexing="ij")
        chunk = pd.DataFrame({"row": r.ravel(), "col": c.ravel(), "lat": lats[r.ravel() - start],
                              "lon": lons[c.ravel()]})
        yield _keep(chunk, land_only, within)


def grid_shape(bbox, resolution_deg: float) -> tuple[int, int]:
    """``(rows, cols)`` of the raster :func:`make_grid` and :func:`iter_grid` cover."""
    lon_min, lat_min, lon_max, lat_max = bbox
    if not (lon_min < lon_max and lat_min < lat_max) or resolution_deg <= 0:
        raise ValueError(f"bad bbox {bbox} or resolution {resolution_deg}")
    return int(round((lat_max - lat_min) / resolution_deg)), int(round((lon_max - lon_min) / resolution_deg))


def predict_rasters(bbox, resolution_deg: float, predict, classes: dict[int, list[str]], *,
                    chunk_rows: int = 64, land_only: bool = True, within=None, progress: bool = True) -> dict:
    """Predict every cell of a grid, streamed in blocks of rows, into preallocated rasters.

    ``predict(chunk)`` gets a DataFrame of cells (``lat, lon``) and returns a DataFrame with
    ``label_l1, label_l2, label_l3, p_l3, entropy_l3`` (e.g. a classifier's ``predict`` on the
    cells' features). ``classes[level]`` lists the codes the model can predict: raster value
    ``i + 1`` is the ``i``-th code in sorted order (as in :func:`class_legend`) and 0 is no data. Memory holds one block of cells plus
    the output rasters (3 bytes + 8 bytes per cell), whatever the grid's size. ``within`` (e.g.
    ``country_shape("Austria")``, with ``bbox=None`` for its bounding box) limits the cells to a region.

    Returns ``{"level1": uint8 raster, ..., "p_l3": float32, "entropy_l3": float32,
    "classes": sorted codes per level, "cells": n predicted, "bbox", "resolution_deg"}``, which
    :func:`write_rasters_geotiffs` writes as GeoTIFFs."""
    from tqdm.auto import tqdm

    bbox = _grid_bbox(bbox, within, resolution_deg)
    height, width = grid_shape(bbox, resolution_deg)
    out = {f"level{k}": np.zeros((height, width), np.uint8) for k in (1, 2, 3)}
    out.update(p_l3=np.full((height, width), np.nan, np.float32),
               entropy_l3=np.full((height, width), np.nan, np.float32))
    classes = {k: sorted(set(codes)) for k, codes in classes.items()}
    lookup = {k: {c: i + 1 for i, c in enumerate(codes)} for k, codes in classes.items()}
    cells = 0
    with tqdm(total=height, desc="map rows", unit="row", disable=not progress) as bar:
        for chunk in iter_grid(bbox, resolution_deg, chunk_rows, land_only, within):
            if len(chunk):
                pred = predict(chunk)
                r, c = chunk["row"].to_numpy(), chunk["col"].to_numpy()
                for k in (1, 2, 3):
                    out[f"level{k}"][r, c] = [lookup[k].get(v, 0) for v in pred[f"label_l{k}"]]
                out["p_l3"][r, c] = pred["p_l3"].to_numpy(np.float32)
                out["entropy_l3"][r, c] = pred["entropy_l3"].to_numpy(np.float32)
                cells += len(chunk)
            bar.update(min(chunk_rows, height - bar.n))
    out.update(classes=classes, cells=cells, bbox=tuple(bbox), resolution_deg=resolution_deg)
    return out
