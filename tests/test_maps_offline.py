"""Maps that work without internet: bundled Leaflet, Natural Earth outlines, layers, legend, escaped popups."""

import html
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

import habitat_helpers as hh

matplotlib.use("Agg")
BBOX = (-5.0, 42.0, 10.0, 52.0)
EVIL = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def grid_and_predictions():
    grid = hh.maps.make_grid(BBOX, 0.5)
    codes = np.array(["R21", "R22", "T11", "S31"])[grid["row"].to_numpy() % 4]
    pred = pd.DataFrame({"label_l1": [c[0] for c in codes], "label_l2": [c[:2] for c in codes], "label_l3": codes,
                         "p_l3": np.linspace(1.0, 0.3, len(grid)), "entropy_l3": np.linspace(0.0, 1.2, len(grid))})
    return grid, pred


@pytest.fixture(scope="module")
def sites():
    return pd.DataFrame({"site_id": [EVIL, "b"], "lat": [48.0, 49.0], "lon": [2.0, 3.0],
                         "label_l1": ["R", "T"], "label": ["R21", "T11"]})


def external_assets(page: str) -> list[str]:
    """Scripts and stylesheets the page would fetch from elsewhere."""
    return re.findall(r'<script[^>]+src="[^"]+"|<link[^>]+href="[^"]+"', page)


def test_country_outlines_ship_offline_and_clip():
    world = hh.maps.country_outlines()
    assert len(world) > 150 and world.crs.to_epsg() == 4326
    france = hh.maps.country_outlines(BBOX, margin_deg=0)
    assert {"France", "Spain", "Germany", "Switzerland"} <= set(france["name"])
    assert "Brazil" not in set(france["name"])
    minx, miny, maxx, maxy = france.total_bounds
    assert minx >= BBOX[0] - 1e-9 and maxy <= BBOX[3] + 1e-9


def test_prediction_map_is_self_contained_with_layers_legend_and_escaped_popups(grid_and_predictions, sites):
    grid, pred = grid_and_predictions
    page = hh.maps.folium_prediction_map(grid, pred, sites=sites, title="demo").get_root().render()
    assert external_assets(page) == []          # Leaflet is inside the page, no CDN
    assert "L.control.layers" in page and "L.imageOverlay" in page
    for name in ["Predicted EUNIS level 1", "Predicted EUNIS level 2", "Predicted EUNIS level 3",
                 "Uncertainty (entropy_l3", "Country outlines (Natural Earth)", "Labelled sites"]:
        assert name in page, name
    # legend: a section per level with EUNIS names, and the uncertainty scale with its range
    for title in ["EUNIS level 1", "EUNIS level 2", "EUNIS level 3"]:
        assert f"<summary><b>{title}</b></summary>" in page
    assert "Grasslands and lands dominated by forbs" in page and "0.00</span><span>1.20" in page
    assert EVIL not in page and html.escape(EVIL) in page


def test_online_version_links_folium_assets(grid_and_predictions):
    grid, pred = grid_and_predictions
    page = hh.maps.folium_prediction_map(grid, pred, offline=False).get_root().render()
    assert any("leaflet" in link for link in external_assets(page))


def test_sites_map_is_self_contained_and_escaped(sites):
    page = hh.maps.folium_sites_map(sites).get_root().render()
    assert external_assets(page) == []
    assert EVIL not in page and html.escape(EVIL) in page
    # the popup names the habitat of the code
    assert "R21 " + html.escape(hh.eunis.name("R21")) in page


def test_static_map_draws_country_borders(grid_and_predictions):
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    grid, pred = grid_and_predictions
    fig, ax = plt.subplots()
    hh.maps.static_prediction_map(ax, grid, pred, level=2)
    lines = [c for c in ax.collections if isinstance(c, LineCollection) and len(c.get_segments()) > 10]
    assert lines, "no country borders drawn"
    assert ax.get_xlim() == pytest.approx((BBOX[0], BBOX[2])) and ax.get_ylim() == pytest.approx((BBOX[1], BBOX[3]))
    plt.close(fig)
