"""The built book in a real browser: headless Chromium renders the chapter pages and the folium maps.

Runs after ``make book`` (``.ci/run`` calls it); skipped when Chromium or the built book is absent.
The maps are checked offline, which is the point: Leaflet must come from the page itself, and the
layers must be drawn by Leaflet, not just written into the HTML.

``index.html`` is a redirect, so chapter pages are opened directly, and the redirect is followed
with a virtual time budget.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import habitat_helpers as hh

BOOK = hh.paths.PROJECT_ROOT / "_build" / "html"
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine"),
    pytest.mark.skipif(not (BOOK / "build" / "notebooks" / "05_map_habitats.html").exists(),
                       reason="the book is not built (make book)"),
]

# chapter -> (figures at least, tables at least, folium maps)
CHAPTERS = {
    "01_explore_data": (4, 1, 1),
    "02_extract_embeddings": (1, 1, 0),
    "03_contrastive_alignment": (3, 2, 0),
    "04_classify_habitats": (4, 4, 0),
    "05_map_habitats": (1, 2, 1),
}
MAP_LAYERS = ["Predicted EUNIS level 1", "Predicted EUNIS level 2", "Predicted EUNIS level 3",
              "Uncertainty", "Country outlines (Natural Earth)", "Labelled sites"]


def render(path: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and the console errors, of a local page."""
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
         "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", "--dump-dom", path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    # sphinx-book-theme declares THEBE_JS_URL twice on every page (a theme bug, harmless: thebe is off)
    errors = [line for line in result.stderr.splitlines()
              if "CONSOLE" in line and "Uncaught" in line and "THEBE_JS_URL" not in line]
    return result.stdout, errors


def folium_documents(page: str) -> list[str]:
    """The HTML documents of the folium maps on a page (myst-nb keeps them in iframe srcdoc)."""
    return [html.unescape(doc) for doc in re.findall(r'<iframe srcdoc="([^"]*)"', page)
            if "leaflet" in doc.lower()]


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_chapter_shows_its_figures_and_tables(chapter, tmp_path):
    figures, tables, maps = CHAPTERS[chapter]
    page = BOOK / "build" / "notebooks" / f"{chapter}.html"
    dom, errors = render(page, tmp_path)
    main = dom[dom.find("<main"):]
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', main)
    found = [src for src in images if (page.parent / src).resolve().is_file()
             and (page.parent / src).resolve().stat().st_size > 1000]
    assert len(found) >= figures, f"{chapter}: {len(found)} figures of {len(images)} <img>"
    assert len(re.findall(r"<table", main)) >= tables, f"{chapter}: too few tables"
    assert len(folium_documents(main)) >= maps
    assert errors == [], errors


def test_the_habitat_map_draws_its_layers_offline(tmp_path):
    page = (BOOK / "build" / "notebooks" / "05_map_habitats.html").read_text(encoding="utf-8")
    documents = folium_documents(page)
    assert documents, "no folium map in chapter 5"
    doc = tmp_path / "map.html"
    doc.write_text(documents[-1], encoding="utf-8")
    dom, errors = render(doc, tmp_path)
    assert errors == [], errors
    # Leaflet built the map: the layer control lists every layer, and the overlays are drawn
    labels = re.findall(r'<label>.*?<span>\s*(.*?)</span>', dom, flags=re.S)
    names = " | ".join(html.unescape(re.sub(r"<[^>]+>", "", label)).strip() for label in labels)
    for layer in MAP_LAYERS:
        assert layer in names, f"{layer!r} not in the layer control: {names}"
    assert len(re.findall(r'class="leaflet-image-layer', dom)) >= 1          # the level-1 overlay is shown
    assert len(re.findall(r'<path[^>]+class="leaflet-interactive', dom)) + dom.count("leaflet-zoom-animated") > 0
    assert "hh-legend" in dom and "EUNIS level 1" in dom


def test_index_redirects_to_the_introduction(tmp_path):
    dom, _ = render(BOOK / "index.html", tmp_path)
    assert "Habitats from photos, satellites and GPS" in dom
