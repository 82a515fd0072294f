"""Photo views as alignment items and GeoCLIP's output layer trained with the heads (issue 26)."""

import numpy as np
import pandas as pd
import pytest

import habitat_helpers as hh


def _views(n=160, views=3, seed=0):
    """Per-view 'photo' embeddings: each view a noisy copy of its site's latent, a site's
    'satellite' and 'gps' other noisy views of it; every fifth site without photos."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    photo_site = np.repeat(np.arange(n), views)
    keep = photo_site % 5 != 0
    photo_site = photo_site[keep]
    per_view = (z[photo_site] @ rng.normal(size=(6, 12)) + 0.5 * rng.normal(size=(len(photo_site), 12)))
    pooled = np.full((n, 12), np.nan)
    for s in np.unique(photo_site):
        pooled[s] = per_view[photo_site == s].mean(axis=0)
    emb = {"photo": pooled.astype(np.float32),
           "satellite": (z @ rng.normal(size=(6, 10)) + 0.3 * rng.normal(size=(n, 10))).astype(np.float32),
           "gps": (z @ rng.normal(size=(6, 8)) + 0.3 * rng.normal(size=(n, 8))).astype(np.float32),
           "photo_per_view": per_view.astype(np.float32), "photo_site": photo_site}
    return emb


def _config(**change):
    settings = dict(dim=8, hidden=32, epochs=4, batch_size=48, lr=3e-3, seed=0, patience=100, radius_km=0.0)
    return hh.align.AlignConfig(**{**settings, **change})


def test_photo_views_as_items_are_positives_of_each_other():
    emb = _views()
    cfg = _config(photo_views="items")
    table = cfg.pair_table()
    assert bool(table[0, 0]) and not bool(table[1, 1])          # photo with photo, not satellite with satellite
    inputs = {m: hh.align.head_inputs(cfg, emb, m) for m in cfg.modalities}
    assert bool(cfg.pair_table(inputs)[0, 0])
    means = {k: v for k, v in emb.items() if k not in ("photo_per_view", "photo_site")}
    # embeddings without views: one (mean) photo per site, nothing to contrast it with in its own modality
    assert not cfg.pair_table({m: hh.align.head_inputs(cfg, means, m) for m in cfg.modalities}).diagonal().any()
    model = hh.align.AlignmentModel({m: inputs[m].x.shape[1] for m in cfg.modalities}, cfg)
    sites = np.array([1, 2, 5, 7])                              # site 5 has no photo
    items = hh.align._items(model, inputs, np.zeros(160), np.zeros(160), sites, "cpu")
    photo = items["site"][items["modality"] == 0].numpy()
    assert sorted(photo.tolist()) == [1, 1, 1, 2, 2, 2, 7, 7, 7]   # one item per view
    candidate, positive = hh.losses.spatial_positive_masks(items["site"], items["modality"], None, 0.0,
                                                           cfg.pair_table())
    first = int(np.flatnonzero(photo == 1)[0])
    # the other two views of site 1, its satellite and its GPS: four positives
    assert int(positive[first].sum()) == 4
    assert bool(candidate[first, int(np.flatnonzero(photo == 2)[0])])   # another site's view: a negative


def test_photo_views_as_items_train_and_average_the_views():
    emb = _views()
    idx = np.arange(160)
    model, history = hh.align.train_alignment(emb, idx[:120], idx[120:], _config(photo_views="items", epochs=8),
                                              progress=False)
    assert history["val_loss"].iloc[1:].min() < history["val_loss"].iloc[0]
    vectors = model.embed_sites(emb)["photo"]
    views = model.embed("photo", emb["photo_per_view"])
    site = 3
    mean = views[emb["photo_site"] == site].mean(axis=0)
    np.testing.assert_allclose(vectors[site], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
    assert np.isnan(vectors[5]).all()                           # no photo: no photo vector
    part = model.embed_sites(emb, sites=np.array([7, 3]))["photo"]
    np.testing.assert_allclose(part, vectors[[7, 3]], rtol=1e-6)
    fused = hh.align.site_features(model, emb)
    assert np.isfinite(fused).all()


def test_without_the_views_a_sites_mean_is_its_one_item():
    """Photo views as items (the default) on embeddings that give only each site's mean photo train
    exactly as photo_views='mean'; half of the views' arrays is an error."""
    emb = _views()
    pooled = {k: v for k, v in emb.items() if k not in ("photo_per_view", "photo_site")}
    idx = np.arange(160)
    runs = [hh.align.train_alignment(pooled, idx[:120], idx[120:], _config(photo_views=v), progress=False)[1]
            for v in ("items", "mean")]
    np.testing.assert_allclose(runs[0]["val_loss"], runs[1]["val_loss"], rtol=1e-6)
    assert hh.align.AlignConfig().photo_views == "items"
    half = {**pooled, "photo_per_view": emb["photo_per_view"]}
    with pytest.raises(ValueError, match="need both 'photo_per_view' and 'photo_site'"):
        hh.align.train_alignment(half, idx[:100], idx[100:], _config(photo_views="items"), progress=False)
    with pytest.raises(ValueError, match="photo_views must be one of"):
        hh.align.AlignConfig(photo_views="each")
    with pytest.raises(ValueError, match="location_layers must be one of"):
        hh.evaluation.Protocol(align_grid={"location_layers": ("frozen", "all")})


def _places(n=90, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform([42, -5], [55, 20], size=(15, 2))
    xy = centres[rng.integers(0, 15, n)] + rng.normal(scale=0.05, size=(n, 2))
    return xy[:, 0], xy[:, 1]


def test_the_geoclip_layer_starts_as_geoclip_and_is_trained():
    lat, lon = _places()
    encoder = hh.encoders.get_encoder("geoclip-location")
    gps = hh.embed.embed_locations(lat, lon, encoder)
    layers = hh.embed.location_layer_inputs(lat, lon)
    weight, bias = hh.encoders.geoclip_output_layer()
    assert layers.shape == (90, 3072)
    np.testing.assert_allclose(layers @ weight.numpy().T + bias.numpy(), gps, atol=1e-6)

    rng = np.random.default_rng(1)
    other = (gps @ rng.normal(size=(512, 10)) * 50 + 0.1 * rng.normal(size=(90, 10))).astype(np.float32)
    emb = {"gps": gps, "satellite": other, "gps_layers": layers}
    cfg = _config(modalities=("satellite", "gps"), location_layers="last", epochs=3)
    idx = np.arange(90)
    model, _ = hh.align.train_alignment(emb, idx[:70], idx[70:], cfg, progress=False)
    head = model.heads["gps"]
    assert isinstance(head, hh.align.LocationLayerHead)
    moved = (head.last.weight.detach() - weight).abs().max()
    assert 0 < float(moved) < 0.1 * float(weight.abs().max())   # trained, slowly, from GeoCLIP's weights
    # the same model reads the GeoCLIP embedding's layer inputs; frozen, it reads the embedding
    assert model.embed_sites(emb)["gps"].shape == (90, 8)
    frozen, _ = hh.align.train_alignment(emb, idx[:70], idx[70:], _config(modalities=("satellite", "gps")),
                                         progress=False)
    assert isinstance(frozen.heads["gps"], hh.align.ProjectionHead)
    with pytest.raises(ValueError, match="location_layer_inputs"):
        hh.align.train_alignment({"gps": gps, "satellite": other}, idx[:70], idx[70:], cfg, progress=False)


def test_saved_heads_with_a_trained_geoclip_layer_load_back(tmp_path):
    lat, lon = _places(n=40)
    layers = hh.embed.location_layer_inputs(lat, lon)
    rng = np.random.default_rng(2)
    emb = {"gps": np.zeros((40, 512), np.float32), "gps_layers": layers,
           "satellite": rng.normal(size=(40, 6)).astype(np.float32)}
    cfg = _config(modalities=("satellite", "gps"), location_layers="last", epochs=1)
    model, _ = hh.align.train_alignment(emb, np.arange(30), np.arange(30, 40), cfg, progress=False)
    path = hh.align.save_alignment(model, tmp_path / "heads.pt")
    loaded = hh.align.load_alignment(path)
    np.testing.assert_allclose(loaded.embed_sites(emb)["gps"], model.embed_sites(emb)["gps"], rtol=1e-5, atol=1e-6)


def test_cross_validation_chooses_the_geoclip_layer_and_photo_views_on_validation_blocks():
    lat, lon = _places(n=150, seed=3)
    emb = _views(n=150, views=2, seed=3)
    rng = np.random.default_rng(3)
    code = np.array(["T1", "R2", "S3"])[rng.integers(0, 3, 150)]
    labels = pd.DataFrame({"label_l1": [c[0] for c in code], "label_l2": list(code), "label_l3": [None] * 150})
    model = [m for m in hh.evaluation.default_models(("photo", "gps")) if m.name == "aligned"][0]
    cfg = _config(modalities=("photo", "gps"), epochs=2)
    result = hh.evaluation.cross_validate(
        lat, lon, labels, emb, modalities=("photo", "gps"), models=[model], align_config=cfg, folds=2, seeds=(0,),
        block_size_deg=2.0, grids={"aligned": {"C": (1.0,), "fusion": ("mean",), "dropout_copies": (False,),
                                               "decoding": ("top-down",)}},
        align_grid={"photo_views": ("mean", "items"), "location_layers": ("frozen", "last")}, progress=False)
    chosen = result.choices
    assert len(chosen) == 2 and (chosen["candidates"] == 4).all()
    assert all(c["photo_views"] in ("mean", "items") and c["location_layers"] in ("frozen", "last")
               for c in chosen["params"])
    assert result.settings["align_grid"] == {"photo_views": ["mean", "items"], "location_layers": ["frozen", "last"]}
    assert np.isfinite(result.scores["macro_f1"]).all()
