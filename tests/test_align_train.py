"""The alignment trainer: spatial positives, resume from a checkpoint, 2 processes == 1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import habitat_helpers as hh

ROOT = Path(__file__).resolve().parents[1]


def _clustered(n=240, seed=0):
    """Sites in clusters a few km wide; three modalities are noisy views of a latent that varies
    smoothly in space, so neighbours look alike (as real neighbouring sites do)."""
    rng = np.random.default_rng(seed)
    centres = np.column_stack([rng.uniform(40, 55, n // 6), rng.uniform(-5, 20, n // 6)])
    which = np.arange(n) % len(centres)
    lat = centres[which, 0] + rng.normal(0, 0.02, n)
    lon = centres[which, 1] + rng.normal(0, 0.02, n)
    latent = np.column_stack([np.sin(lat / 2 + k) + np.cos(lon / 3 - k) for k in range(6)])
    latent += 0.3 * rng.normal(size=latent.shape)
    emb = {m: (latent @ rng.normal(size=(6, d)) + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
           for m, d in (("photo", 20), ("satellite", 16), ("gps", 10))}
    emb["photo"][::3] = np.nan
    return lat, lon, emb


def _config(**kw):
    base = dict(dim=16, hidden=32, epochs=6, batch_size=48, lr=3e-3, seed=0, patience=100, dropout=0.1,
                radius_km=0.0)
    return hh.align.AlignConfig(**{**base, **kw})


def test_radius_positives_train_and_need_coordinates():
    lat, lon, emb = _clustered()
    idx = np.arange(len(lat))
    cfg = _config(radius_km=5.0)
    with pytest.raises(ValueError, match="lat and lon"):
        hh.align.train_alignment(emb, idx[:200], idx[200:], cfg, progress=False)
    model, history = hh.align.train_alignment(emb, idx[:200], idx[200:], cfg, lat, lon, progress=False)
    assert history["val_recall"].iloc[-1] > history["val_recall"].iloc[0]
    assert history.attrs["best_epoch"] == int(history.loc[history["val_recall"].idxmax(), "epoch"])
    batches = hh.align.epoch_batches(cfg, idx[:200], hh.align._neighbour_graph(cfg, lat, lon), 1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(200))


def test_resume_from_checkpoint_gives_the_uninterrupted_numbers(tmp_path):
    lat, lon, emb = _clustered()
    idx = np.arange(len(lat))
    full, h_full = hh.align.train_alignment(emb, idx[:200], idx[200:], _config(radius_km=5.0), lat, lon,
                                            progress=False)
    ckpt = tmp_path / "ckpt.pt"
    hh.align.train_alignment(emb, idx[:200], idx[200:], _config(radius_km=5.0, epochs=3), lat, lon,
                             progress=False, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3
    with pytest.raises(ValueError, match="another config"):
        hh.align.train_alignment(emb, idx[:200], idx[200:], _config(radius_km=1.0), lat, lon,
                                 progress=False, checkpoint=ckpt)
    # the run stopped after epoch 3; continuing it to epoch 6 gives the uninterrupted numbers
    resumed, h_res = hh.align.train_alignment(emb, idx[:200], idx[200:], _config(radius_km=5.0), lat, lon,
                                              progress=False, checkpoint=ckpt)
    np.testing.assert_allclose(h_res["train_loss"], h_full["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(resumed.embed("gps", emb["gps"]), full.embed("gps", emb["gps"]), rtol=1e-5, atol=1e-6)
    assert h_res.attrs["best_epoch"] == h_full.attrs["best_epoch"]


def _inputs(tmp_path):
    lat, lon, emb = _clustered(n=180, seed=1)
    rows = [{"site_id": f"t:{i:04d}", "source": "test", "lat": lat[i], "lon": lon[i], "label": None,
             "photos": [], "photo_views": [], "satellite": None} for i in range(len(lat))]
    sites = hh.datasets.finalise(pd.DataFrame(rows), hh.datasets.LoadReport("test"), verbose=False)
    table = hh.datasets.write_sites(sites, tmp_path / "sites.parquet")
    npz = hh.embed.save_site_embeddings(tmp_path / "emb.npz", sites["site_id"], emb)
    return table, npz


def _run_cli(tmp_path, out, nproc):
    table, npz = _inputs(tmp_path)
    args = ["--embeddings", str(npz), "--sites", str(table), "--out", str(out), "--radius-km", "5",
            "--epochs", "3", "--dim", "8", "--hidden", "16", "--batch-size", "40", "--dropout", "0",
            "--block-size-deg", "3", "--no-progress", "--device", "cpu"]
    base = [sys.executable, "-m"] if nproc == 1 else \
        [str(ROOT / ".venv/bin/torchrun"), f"--nproc_per_node={nproc}", "--master_port=29533", "-m"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(base + ["habitat_helpers", "align", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(tmp_path):
    one = _run_cli(tmp_path, tmp_path / "one.pt", 1)
    two = _run_cli(tmp_path, tmp_path / "two.pt", 2)
    assert two["world_size"] == 2 and one["best_epoch"] == two["best_epoch"]
    a, b = hh.align.load_alignment(tmp_path / "one.pt"), hh.align.load_alignment(tmp_path / "two.pt")
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    assert one["val_recall"] == pytest.approx(two["val_recall"], abs=1e-6)


def test_early_stopping_uses_the_validation_loss_when_no_validation_site_has_two_inputs():
    """Real tables often have photos and patches on different sites: recall@k is then undefined
    on the validation blocks, and training must still keep a trained epoch, not the initial heads."""
    rng = np.random.default_rng(0)
    n = 240
    embeddings = {m: rng.normal(size=(n, 8)).astype(np.float32) for m in ("photo", "gps")}
    val_idx = np.arange(200, n)
    embeddings["gps"][200:220] = np.nan                   # validation: photo only or GPS only
    embeddings["photo"][220:] = np.nan
    lat, lon = rng.uniform(45, 45.2, n), rng.uniform(5, 5.2, n)   # all within the radius of each other
    config = hh.align.AlignConfig(dim=4, hidden=16, epochs=6, batch_size=32, modalities=("photo", "gps"),
                                  radius_km=50.0, positives="radius")   # neighbours give the only positives
    _, history = hh.align.train_alignment(embeddings, np.arange(200), val_idx, config, lat, lon, progress=False)
    assert history["val_recall"].isna().all() and history["val_loss"].notna().all()
    scores = -history["val_loss"].to_numpy()
    assert history.attrs["best_epoch"] == int(history["epoch"].iloc[int(np.nanargmax(scores))]) > 0


def test_site_alignment_aligns_the_inputs_the_data_have_and_reuses_its_heads(capsys):
    """A LUCAS-like table with photos and GPS but no satellite patch: chapter 3's stage aligns the
    two inputs it has, keeps the heads in the run folder, and a later chapter reads them back."""
    import pandas as pd

    rng = np.random.default_rng(1)
    n = 300
    sites = pd.DataFrame({"site_id": [f"t:{i}" for i in range(n)], "lat": rng.uniform(40, 56, n),
                          "lon": rng.uniform(-5, 15, n)})
    data = hh.dataspec.Data("two-inputs", sites, pd.DataFrame(), key="two-inputs-test")
    embeddings = {"photo": rng.normal(size=(n, 8)).astype(np.float32),
                  "satellite": np.full((n, 8), np.nan, dtype=np.float32),
                  "gps": rng.normal(size=(n, 8)).astype(np.float32)}
    assert hh.align.available_modalities(embeddings) == ("photo", "gps")
    model, history, split = hh.align.site_alignment(data, embeddings, "tiny", 0, progress=False)
    assert model.config.modalities == ("photo", "gps") and set(model.heads) == {"photo", "gps"}
    assert set(split) == {"train", "val", "test"} and len(history) > 1
    again, _, _ = hh.align.site_alignment(data, embeddings, "tiny", 0, progress=False)
    assert "alignment: read from" in capsys.readouterr().out
    x = embeddings["gps"][:5]
    assert np.allclose(again.embed("gps", x), model.cpu().embed("gps", x))
    with pytest.raises(hh.align.AlignmentUnavailable, match="two of"):
        hh.align.site_alignment(data, {**embeddings, "photo": embeddings["satellite"]}, "tiny", 0)


def test_a_large_pool_trains_on_a_sample_per_epoch_that_keeps_neighbour_groups(monkeypatch):
    """AlignConfig.epoch_sites and val_sites bound an epoch's and early stopping's cost; below the
    caps nothing changes."""
    lat, lon, emb = _clustered(n=240)
    idx = np.arange(200)
    cfg = _config(radius_km=5.0, epoch_sites=60)
    graph = hh.align._neighbour_graph(cfg, lat, lon)
    epochs = [np.concatenate(hh.align.epoch_batches(cfg, idx, graph, e)) for e in (1, 2)]
    for sites in epochs:
        assert set(sites) <= set(idx) and len(set(sites)) == len(sites)
        assert 30 <= len(sites) <= 120                        # anchors and their neighbours, about 60
        pairs = graph[sites][:, sites].nnz                     # neighbour pairs inside the sample
        assert pairs > 0
    assert set(epochs[0]) != set(epochs[1])                   # a new sample each epoch
    uncapped = _config(radius_km=5.0)
    assert sorted(np.concatenate(hh.align.epoch_batches(uncapped, idx, graph, 1))) == list(idx)
    same = _config(radius_km=5.0, epoch_sites=200)             # a cap the pool does not exceed
    assert all((a == b).all() for a, b in zip(hh.align.epoch_batches(same, idx, graph, 1),
                                             hh.align.epoch_batches(uncapped, idx, graph, 1)))
    seen = []
    real = hh.align.validation_recall
    monkeypatch.setattr(hh.align, "validation_recall", lambda m, e, i, k=10: seen.append(len(i)) or real(m, e, i, k))
    hh.align.train_alignment(emb, idx, np.arange(200, 240), _config(epochs=2, val_sites=25), lat, lon,
                             progress=False)
    assert seen and set(seen) == {25}
    with pytest.raises(ValueError, match="epoch_sites"):
        _config(epoch_sites=0)


def test_standardisation_read_in_chunks_equals_the_whole(monkeypatch):
    """column_stats merges chunks exactly: the heads' mean and spread from pieces of a few rows
    equal numpy's over all rows (NaN rows left out); one chunk gives numpy's own figures."""
    rng = np.random.default_rng(3)
    x = (rng.normal(5.0, 2.0, size=(1000, 7)) * np.arange(1, 8)).astype(np.float32)
    x[::9] = np.nan
    rows = np.sort(rng.choice(1000, 600, replace=False))
    ok = x[rows][~np.isnan(x[rows]).any(axis=1)]
    one = hh.align.column_stats(hh.align._chunks(x, rows))
    assert np.array_equal(one[0], ok.mean(axis=0)) and np.array_equal(one[1], ok.std(axis=0))
    monkeypatch.setattr(hh.align, "STATS_CHUNK", 64)
    mean, std = hh.align.column_stats(hh.align._chunks(x, rows))
    np.testing.assert_allclose(mean, ok.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, ok.astype(np.float64).std(axis=0), rtol=1e-6)


def test_alignment_trains_from_a_memory_map_as_from_memory(tmp_path):
    """Photo views read from a memory-mapped .npy (hh.embed.read_items(out=...)) train the same
    heads as the same views in memory."""
    lat, lon, emb = _clustered()
    rng = np.random.default_rng(0)
    site = np.repeat(np.arange(len(lat)), 2)
    views = (np.repeat(np.nan_to_num(emb["photo"]), 2, axis=0) + 0.1 * rng.normal(size=(len(site), 20)))
    np.save(tmp_path / "views.npy", views.astype(np.float32))
    config = _config(modalities=("photo", "gps"), photo_views="items", epochs=3)
    idx = np.arange(len(lat))
    fit, val = idx[idx % 5 != 0], idx[idx % 5 == 0]
    in_memory = {**emb, "photo_per_view": views.astype(np.float32), "photo_site": site}
    mapped = {**emb, "photo_per_view": np.load(tmp_path / "views.npy", mmap_mode="r"), "photo_site": site}
    a, ha = hh.align.train_alignment(in_memory, fit, val, config, lat, lon, progress=False)
    b, hb = hh.align.train_alignment(mapped, fit, val, config, lat, lon, progress=False)
    pd.testing.assert_frame_equal(ha, hb)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_the_align_command_reads_a_folder_of_memory_maps_as_the_npz(tmp_path):
    """save_site_embeddings to a folder writes one .npy per array; load_site_embeddings maps them;
    the align command trains the same heads from the folder as from the .npz."""
    from habitat_helpers import cli

    table, npz = _inputs(tmp_path)
    site_ids, emb = hh.embed.load_site_embeddings(npz)
    folder = hh.embed.save_site_embeddings(tmp_path / "emb", site_ids, emb)
    back_ids, back = hh.embed.load_site_embeddings(folder)
    assert list(back_ids) == list(site_ids) and set(back) == set(emb)
    assert all(isinstance(x, np.memmap) and not x.flags.writeable for x in back.values())
    for source, out in ((npz, "a.pt"), (folder, "b.pt")):
        assert cli.main(["align", "--embeddings", str(source), "--sites", str(table), "--out", str(tmp_path / out),
                         "--epochs", "2", "--dim", "8", "--hidden", "16", "--batch-size", "40",
                         "--block-size-deg", "3", "--no-progress", "--device", "cpu"]) == 0
    a, b = hh.align.load_alignment(tmp_path / "a.pt"), hh.align.load_alignment(tmp_path / "b.pt")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    (folder / "site_id.npy").unlink()
    with pytest.raises(FileNotFoundError, match="site_id.npy"):
        hh.embed.load_site_embeddings(folder)
