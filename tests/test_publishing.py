"""What publishing the book relies on: the workflows, the launch links, the citation file, Binder."""

import importlib.util
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _launch_source():
    spec = importlib.util.spec_from_file_location("launch_source", ROOT / "book" / "_ext" / "launch_source.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_links_open_the_source_notebooks():
    module = _launch_source()
    executed = "https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/build/notebooks/03_contrastive_alignment.ipynb"
    context = {"header_buttons": [
        {"label": "launch-buttons", "buttons": [{"url": executed}, {"label": "no url"}]},
        {"label": "download-buttons", "buttons": [{"url": "build/notebooks/03_contrastive_alignment.ipynb"}]}]}
    module.source_links(None, "build/notebooks/03_contrastive_alignment", "page.html", context, None)
    launch, download = context["header_buttons"]
    assert launch["buttons"][0]["url"].endswith("lab/tree/notebooks/03_contrastive_alignment.ipynb")
    assert download["buttons"][0]["url"] == "build/notebooks/03_contrastive_alignment.ipynb"   # only launch links
    # every chapter the links name exists as a source notebook
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    chapters = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    executed = [c for c in chapters if c.startswith(module.EXECUTED)]
    assert len(executed) == 6
    for chapter in executed:
        assert (ROOT / chapter.replace(module.EXECUTED, module.SOURCE)).with_suffix(".ipynb").is_file(), chapter
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["local_extensions"] == {"launch_source": "book/_ext"}
    assert config["launch_buttons"]["binderhub_url"] and config["launch_buttons"]["colab_url"]
    assert "book/model_card" in chapters


def test_citation_file_names_the_project_and_its_sources():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["version"] == version
    assert cff["license"] == "MIT" and cff["authors"]
    titles = " | ".join(r["title"] for r in cff["references"])
    for source in ("LUCAS", "EUNIS", "European Vegetation Archive", "GeoCLIP", "WorldClim",
                   "Climatologies at high resolution", "Sentinel-2"):   # the last but one: CHELSA
        assert source in titles, source
    assert any(r["authors"][0].get("family-names") == "Larcher" and r["year"] == 2026 for r in cff["references"])


def test_the_book_workflow_builds_and_deploys_what_make_book_writes():
    book = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    steps = [s for job in book["jobs"].values() for s in job.get("steps", [])]
    assert any(s.get("run", "").strip() == "make book" for s in steps)
    assert any(s.get("uses", "").startswith("actions/upload-pages-artifact") and s["with"]["path"] == "_build/html"
               for s in steps)
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in steps)
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert any(".ci/run" in s.get("run", "") for job in ci["jobs"].values() for s in job.get("steps", []))
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "-c constraints.txt -e ." in post_build          # Binder installs what `make` installs
