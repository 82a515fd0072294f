import numpy as np
import pytest
import torch

import habitat_helpers as hh


def _paired_modalities(n=300, seed=0):
    """Three 'modalities' that are different noisy linear views of one latent per site."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    emb = {
        "photo": (z @ rng.normal(size=(6, 20)) + 0.3 * rng.normal(size=(n, 20))).astype(np.float32),
        "satellite": (z @ rng.normal(size=(6, 16)) + 0.3 * rng.normal(size=(n, 16))).astype(np.float32),
        "gps": (z @ rng.normal(size=(6, 10)) + 0.3 * rng.normal(size=(n, 10))).astype(np.float32),
    }
    emb["photo"][::4] = np.nan  # a quarter of sites without photos
    return emb


def _train(emb, seed=0, epochs=25):
    idx = np.arange(len(emb["gps"]))
    cfg = hh.align.AlignConfig(dim=16, hidden=64, epochs=epochs, batch_size=64, lr=3e-3, seed=seed, patience=100,
                               radius_km=0.0)   # paired positives: no coordinates needed
    return hh.align.train_alignment(emb, idx[:220], idx[220:260], cfg, progress=False)


def test_alignment_learns_and_generalises():
    emb = _paired_modalities()
    model, history = _train(emb)
    assert history["val_loss"].min() < 0.7 * history["val_loss"].iloc[0]
    test = np.arange(260, 300)
    test = test[~np.isnan(emb["photo"][test, 0])]
    r = hh.metrics.retrieval_recall_at_k(model.embed("photo", emb["photo"][test]), model.embed("gps", emb["gps"][test]))
    assert r["recall@5"] > 0.5  # chance is 5/len(test) ~ 0.17


def test_same_seed_same_numbers_and_checkpoint_roundtrip(tmp_path):
    emb = _paired_modalities()
    m1, h1 = _train(emb, epochs=5)
    m2, h2 = _train(emb, epochs=5)
    np.testing.assert_allclose(h1["val_loss"], h2["val_loss"], rtol=1e-6)
    path = hh.align.save_alignment(m1, tmp_path / "heads.pt")
    torch.load(path, weights_only=True)  # plain types only
    loaded = hh.align.load_alignment(path)
    np.testing.assert_allclose(loaded.embed("gps", emb["gps"]), m1.embed("gps", emb["gps"]), rtol=1e-5, atol=1e-6)
    assert loaded.config == m1.config


def test_site_features_handle_missing_modalities():
    emb = _paired_modalities(n=40)
    model, _ = _train(emb, epochs=2)
    fused = hh.align.site_features(model, emb)
    assert np.isfinite(fused).all()
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, rtol=1e-5)
    only_photo = hh.align.site_features(model, emb, ("photo",))
    assert np.isnan(only_photo[::4]).all() and np.isfinite(only_photo[1]).all()


def test_fixed_temperature_stays_fixed():
    emb = _paired_modalities(n=100)
    cfg = hh.align.AlignConfig(dim=8, hidden=16, epochs=3, batch_size=32, learn_temperature=False,
                               temperature_init=0.2, seed=0, radius_km=0.0)
    idx = np.arange(100)
    _, history = hh.align.train_alignment(emb, idx[:80], idx[80:], cfg, progress=False)
    assert history["temperature"].tolist() == pytest.approx([0.2] * len(history))
