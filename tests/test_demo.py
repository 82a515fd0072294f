import hashlib

import numpy as np
import pandas as pd
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
    assert sites.crs.to_epsg() == 4326 and sites["site_id"].is_unique
    assert globe.is_land(sites.lat.to_numpy(), sites.lon.to_numpy()).all()
    assert sites.lat.between(37.5, 62).all() and sites.lon.between(-10, 30).all()


def test_three_families_in_their_real_formats(demo):
    sites = hh.demo.load_sites(demo)
    share = sites["source"].value_counts(normalize=True)
    for family, spec in hh.demo.FAMILIES.items():
        assert share[family] == pytest.approx(spec["share"], abs=0.08)
    lucas = pd.read_csv(demo / "lucas/lucas_harmonised.csv", dtype=str)
    assert (lucas["gps_long"].astype(float) >= 0).all()                  # unsigned, sign in gps_ew
    assert set(lucas["gps_ew"]) <= {"East", "West"}
    assert lucas["survey_date"].str.fullmatch(r"\d\d/\d\d/\d\d").any()      # dd/mm/yy
    assert lucas["survey_date"].str.fullmatch(r"\d\d/\d\d/\d{4}").any()     # dd/mm/yyyy
    eva = pd.read_csv(demo / "eva/eva_header.csv", sep="\t", dtype=str, keep_default_na=False)
    esy = eva["Expert System"]
    assert esy.str.contains(",").any() and esy.str.endswith("!").any() and esy.str.fullmatch(r"[NQRSTV]a").any()
    # every site has a georeferenced patch that covers it (read_satellite checks, none rejected)
    assert sites["satellite"].notna().all()
    lon_min, lat_min, lon_max, lat_max = hh.datasets.patch_bounds_wgs84(sites["satellite"].iloc[0])
    assert lat_min <= sites["lat"].iloc[0] <= lat_max and lon_min <= sites["lon"].iloc[0] <= lon_max


def test_labels_follow_the_families(demo):
    sites = hh.demo.load_sites(demo)
    labelled = sites.groupby("source")["label_l1"].apply(lambda s: s.notna().mean())
    assert labelled["eva"] > 0.7 and labelled["lucas"] < 0.5 and labelled["embal"] < 0.5
    assert sites.loc[sites.source == "embal", "label_l3"].isna().all()   # EMBAL labels stop at level 2
    assert all(hh.eunis.is_valid(c) for c in sites["label"].dropna())
    # the files state the recorded label, which is wrong for LABEL_ERROR_RATE of the labelled sites
    truth = hh.demo.load_truth(demo).set_index("site_id")
    known = sites[sites["label_l2"].notna()]
    recorded = truth.loc[known["site_id"], "label"].str[:2].to_numpy()
    assert (recorded == known["label_l2"].to_numpy()).all()
    disagree = truth.loc[known["site_id"], "label_l2"].to_numpy() != known["label_l2"].to_numpy()
    assert truth.loc[known["site_id"], "label_wrong"].to_numpy()[disagree].all()
    labelled = truth[truth["label"].notna()]
    wrong = labelled["label_wrong"].mean()
    assert abs(wrong - hh.demo.LABEL_ERROR_RATE) < 0.05 and truth.loc[truth["label"].isna(), "label_wrong"].eq(False).all()
    assert (labelled["label"] != [c[:len(k)] for c, k in zip(labelled["label_l3"], labelled["label"])]).eq(
        labelled["label_wrong"]).all()


def test_ceiling_is_computed_and_falls_with_level(demo):
    ceiling = hh.demo.load_manifest(demo)["ceiling_accuracy"]
    assert 1 > ceiling["level1"] > ceiling["level2"] > ceiling["level3"] > 1 / 24
    cov = pd.read_parquet(demo / "covariates.parquet")
    assert set(cov["koppen"]) <= {2, 3, 4, 5} and (cov["coast_km"] >= 0).all()
    probs = cov[[c for c in cov.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-9)


def test_covariates_come_from_hh_environment():
    """One source of covariates: the demo's Köppen class and coast distance are hh.environment's."""
    lat, lon = np.array([48.21, 69.0, 43.30]), np.array([16.37, 20.0, 5.37])       # Vienna, Lapland, Marseille
    cov = hh.demo.covariates(lat, lon)
    env, _ = hh.environment.sample(lat, lon, ["koppen_main", "coast_km"])
    np.testing.assert_array_equal(cov["koppen"].to_numpy(), env["koppen_main"].to_numpy())
    np.testing.assert_allclose(cov["coast_km"].to_numpy(), env["coast_km"].to_numpy())
    assert cov["koppen"].iloc[1] in (4, 5)                                          # Lapland: cold or polar
    assert not hasattr(hh.demo, "koppen_class") and not hasattr(hh.demo, "coast_distance_km")


def test_each_modality_shows_its_own_partial_view(demo):
    """Photo and satellite show the site's habitat only partly (at the set confusion rates), and
    their confusions are drawn apart: they agree no more than independent draws would."""
    cov = pd.read_parquet(demo / "covariates.parquet")
    true = hh.demo.load_truth(demo)["label_l3"].to_numpy()
    for column, confusion in (("photo_cues", hh.demo.PHOTO_CONFUSION), ("satellite_cues", hh.demo.SATELLITE_CONFUSION)):
        shown = cov[column].to_numpy()
        right1 = np.mean([a[0] == b[0] for a, b in zip(shown, true)])
        right3 = np.mean(shown == true)
        assert abs(right1 - (1 - confusion[1])) < 0.06
        assert abs(right3 - np.prod([1 - c for c in confusion.values()])) < 0.08
    photo_wrong = cov["photo_cues"].to_numpy() != true
    sat_wrong = cov["satellite_cues"].to_numpy() != true
    assert abs((photo_wrong & sat_wrong).mean() - photo_wrong.mean() * sat_wrong.mean()) < 0.05


def test_cue_agreement_is_recorded_and_falls_with_level(demo):
    """The manifest's image ceilings are the share of sites whose cues agree with the true habitat."""
    cov = pd.read_parquet(demo / "covariates.parquet")
    truth = hh.demo.load_truth(demo)
    agreement = hh.demo.load_manifest(demo)["cue_agreement"]
    has_photo = (truth["source"] != "eva").to_numpy()
    photo = cov["photo_cues"].to_numpy()[has_photo] == truth["label_l3"].to_numpy()[has_photo]
    assert agreement["photo"]["level3"] == pytest.approx(photo.mean())
    for name in ("photo", "satellite"):
        levels = [agreement[name][f"level{k}"] for k in (1, 2, 3)]
        assert 1 >= levels[0] >= levels[1] >= levels[2] > 0.3
    assert hh.demo.cue_agreement(["R11"], ["R21"], ["S31"], [True]) == {
        "photo": {"level1": 1.0, "level2": 0.0, "level3": 0.0},
        "satellite": {"level1": 0.0, "level2": 0.0, "level3": 0.0}}


def test_views_share_habitat_signal(demo):
    """Two views of one site are more alike than views of sites with other habitats."""
    from PIL import Image

    sites = hh.demo.load_sites(demo)
    sites = sites[(sites["source"] == "lucas") & (sites["photos"].str.len() == 2)]
    truth = hh.demo.load_truth(demo).set_index("site_id").loc[sites.site_id, "label_l1"].to_numpy()

    def mean_colour(p):
        with Image.open(p) as im:
            arr = np.asarray(im, float)
        return arr[arr.shape[0] // 2:].mean(axis=(0, 1))  # lower half: ground, not sky

    n = np.array([mean_colour(p[0]) for p in sites.photos])
    e = np.array([mean_colour(p[1]) for p in sites.photos])
    same = np.linalg.norm(n - e, axis=1).mean()
    other = np.linalg.norm(n - np.roll(e, 1, axis=0), axis=1)[truth != np.roll(truth, 1)].mean()
    assert same < 0.7 * other


def test_profiles_set_sizes_not_data():
    """Any profile runs on any data: no profile names a data source, and `full` has a demo size."""
    for profile in hh.profiles.PROFILES.values():
        fields = profile.as_dict()
        assert "synthetic" not in fields and "data_paths" not in fields
        assert profile.n_sites > 0 and profile.photo_size > 0


def test_unknown_profile():
    with pytest.raises(ValueError, match="tiny"):
        hh.profiles.get("huge")


def test_input_probes_measure_what_an_input_carries():
    """An input that encodes the level-2 group exactly is probed near 1 at levels 1 and 2 and low at
    level 3 (it cannot split a group's habitats); a noise input near chance; a pair is probed on the
    sites that have both inputs."""
    rng = np.random.default_rng(0)
    n = 600
    l3 = rng.choice(["T11", "T12", "T21", "T22", "R11", "R12", "R21", "R22"], n)
    truth = pd.DataFrame({"label_l1": [c[0] for c in l3], "label_l2": [c[:2] for c in l3], "label_l3": l3},
                         dtype=object)
    groups = pd.get_dummies(truth["label_l2"]).to_numpy(float)
    embeddings = {"satellite": groups + 0.05 * rng.normal(size=groups.shape),
                  "gps": rng.normal(size=(n, 4)), "photo": rng.normal(size=(n, 4))}
    embeddings["photo"][::2] = np.nan                                # half the sites have no photo
    test = np.arange(n) >= 400
    probes = hh.calibration.input_probes(embeddings, truth, ~test, test, inputs=(("satellite",), ("gps",),
                                                                         ("photo", "satellite")))
    f1 = probes.set_index(["inputs", "level"])["macro_f1"]
    assert f1[("satellite", 1)] > 0.95 and f1[("satellite", 2)] > 0.95 and f1[("satellite", 3)] < 0.7
    assert f1[("gps", 1)] < 0.65                                     # two balanced classes: chance 0.5
    both = probes.set_index(["inputs", "level"])["n_test"][("photo + satellite", 1)]
    assert both == int((~np.isnan(embeddings["photo"][:, 0]) & test).sum()) == 100
    assert set(probes["inputs"]) == {"satellite", "gps", "photo + satellite"}


def test_calibration_table_gap_to_the_published_range():
    probes = pd.DataFrame([{"inputs": "photo", "level": 1, "macro_f1": 0.99},
                           {"inputs": "photo", "level": 2, "macro_f1": 0.62},
                           {"inputs": "satellite + env", "level": 3, "macro_f1": 0.40},
                           {"inputs": "gps + env", "level": 1, "macro_f1": 0.60}])
    table = hh.calibration.calibration_table(probes).set_index(["inputs", "level"])
    assert table.loc[("photo", 1), "gap"] == pytest.approx(0.99 - 0.89)          # easier than real photos
    assert table.loc[("photo", 2), "gap"] == 0.0                                  # inside 0.61-0.63
    assert table.loc[("satellite + env", 3), "gap"] == pytest.approx(0.40 - 0.61)
    assert np.isnan(table.loc[("gps + env", 1), "gap"])                           # measured by chapter 6
    measured = hh.calibration.calibration_table(probes, {"gps + env": 0.25}).set_index(["inputs", "level"])
    assert measured.loc[("gps + env", 1), "gap"] == pytest.approx(0.35)
    assert all(isinstance(s, str) and s for s in table["source"])


def test_true_labels_row_for_row_with_the_sites(demo):
    sites = hh.demo.load_sites(demo)
    data = hh.dataspec.Data("demo", sites, pd.DataFrame(), "eunis", True, None, demo)
    true = hh.demo.true_labels(data)
    assert list(true.columns) == ["label_l1", "label_l2", "label_l3"] and len(true) == len(sites)
    truth = hh.demo.load_truth(demo).set_index("site_id")["label_l3"]
    assert (true["label_l3"].to_numpy() == truth.loc[sites["site_id"]].to_numpy()).all()
    assert all(c3.startswith(c2) and c2.startswith(c1) and len(c1) == 1
               for c1, c2, c3 in true.itertuples(index=False))
    shuffled = hh.dataspec.Data("demo", sites.iloc[::-1].reset_index(drop=True), pd.DataFrame(), "eunis", True,
                                None, demo)
    assert (hh.demo.true_labels(shuffled)["label_l3"].to_numpy() == true["label_l3"].to_numpy()[::-1]).all()
    with pytest.raises(ValueError, match="only the synthetic demo"):
        hh.demo.true_labels(hh.dataspec.Data("mine", sites, pd.DataFrame()))
    stranger = sites.copy()
    stranger.loc[0, "site_id"] = "nowhere"
    with pytest.raises(ValueError, match="1 sites of demo are not in"):
        hh.demo.true_labels(hh.dataspec.Data("demo", stranger, pd.DataFrame(), "eunis", True, None, demo))


def test_the_data_says_whether_it_is_the_demo_and_which_region_to_map(demo):
    sites = hh.demo.load_sites(demo)
    the_demo = hh.dataspec.Data("demo", sites, pd.DataFrame(), "eunis", True, None, demo)
    synthetic_spec = hh.dataspec.Data("mine", sites.iloc[:20], pd.DataFrame(), "eunis", True)
    assert the_demo.is_demo and not synthetic_spec.is_demo and synthetic_spec.synthetic
    assert the_demo.map_bbox("tiny") == hh.profiles.get("tiny").map_bbox
    lon, lat = sites["lon"].iloc[:20], sites["lat"].iloc[:20]
    assert synthetic_spec.map_bbox("tiny") == synthetic_spec.bbox == pytest.approx(
        (lon.min() - 0.5, lat.min() - 0.5, lon.max() + 0.5, lat.max() + 0.5))
    with pytest.raises(ValueError, match="only the synthetic demo"):     # synthetic, but not the demo
        hh.demo.true_labels(synthetic_spec)
