import hashlib
import os

import numpy as np
import pytest

import habitat_helpers as hh


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return hh.demo.make_demo("tiny", seed=3, root=tmp_path_factory.mktemp("demo") / "a", progress=False)


def test_same_seed_same_bytes_other_seed_other_data(demo, tmp_path):
    again = hh.demo.make_demo("tiny", seed=3, root=tmp_path / "b", progress=False)
    assert _digest(demo) == _digest(again)
    other = hh.demo.make_demo("tiny", seed=4, root=tmp_path / "c", progress=False)
    assert not hh.demo.load_sites(other)[["lat", "lon"]].equals(hh.demo.load_sites(demo)[["lat", "lon"]])


def test_sites_are_european_land_points(demo):
    from global_land_mask import globe

    sites = hh.demo.load_sites(demo)
    assert len(sites) == hh.profiles.get("tiny").n_sites
    assert sites.crs.to_epsg() == 4326
    assert globe.is_land(sites.lat.to_numpy(), sites.lon.to_numpy()).all()
    assert sites.lat.between(37.5, 62).all() and sites.lon.between(-10, 30).all()


def test_labels_are_a_minority_of_valid_eunis_codes(demo):
    sites = hh.demo.load_sites(demo)
    profile = hh.profiles.get("tiny")
    labelled = sites["eunis_code"].notna()
    assert labelled.mean() == pytest.approx(profile.label_fraction, abs=0.08)
    assert all(hh.eunis.is_valid(c) for c in sites.loc[labelled, "eunis_code"])
    # coarser columns are roll-ups of the given code; some labels stop at level 1 or 2
    for row in sites[labelled].itertuples():
        assert row.eunis_l1 == row.eunis_code[0]
    assert (sites.loc[labelled, "eunis_l3"].isna()).any()
    truth = hh.demo.load_truth(demo)
    agree = truth.set_index("site_id").loc[sites.loc[labelled, "site_id"], "eunis_l1"].to_numpy()
    assert (agree == sites.loc[labelled, "eunis_l1"].to_numpy()).all()


def test_files_exist_and_modalities_are_partly_missing(demo):
    from PIL import Image

    sites = hh.demo.load_sites(demo)
    assert list(sites.columns[:-1]) == hh.datasets.SITE_COLUMNS        # the documented site table
    with_photos = sites["photos"].str.len() > 0
    assert 0.6 < with_photos.mean() < 0.95
    assert all(v == ["N", "E"] for v in sites.loc[with_photos, "photo_views"])
    with Image.open(sites.loc[with_photos, "photos"].iloc[0][0]) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    assert all(p and os.path.exists(p) for p in sites["satellite"])


def test_views_share_habitat_signal(demo):
    """Two views of one site are more alike than views of sites with other habitats."""
    from PIL import Image

    sites = hh.demo.load_sites(demo)
    sites = sites[sites["photos"].str.len() > 0]
    truth = hh.demo.load_truth(demo).set_index("site_id").loc[sites.site_id, "eunis_l1"].to_numpy()

    def mean_colour(p):
        with Image.open(p) as im:
            arr = np.asarray(im, float)
        return arr[arr.shape[0] // 2:].mean(axis=(0, 1))  # lower half: ground, not sky

    n = np.array([mean_colour(p[0]) for p in sites.photos[:120]])
    e = np.array([mean_colour(p[1]) for p in sites.photos[:120]])
    same = np.linalg.norm(n - e, axis=1).mean()
    other = np.linalg.norm(n - np.roll(e, 1, axis=0), axis=1)[truth[:120] != np.roll(truth[:120], 1)].mean()
    assert same < 0.7 * other


def test_full_profile_refuses_synthetic_generation():
    with pytest.raises(ValueError, match="real data"):
        hh.demo.make_demo("full")


def test_unknown_profile():
    with pytest.raises(ValueError, match="tiny"):
        hh.profiles.get("huge")
