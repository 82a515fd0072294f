"""Sharded extraction: read-back alignment, resume after a kill, 2 ranks == 1 rank."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import habitat_helpers as hh

ROOT = Path(__file__).resolve().parents[1]


def _site_table(folder: Path, n_sites: int, views=("N", "E")) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_sites):
        paths = []
        for v in views:
            path = folder / f"{i:04d}{v}.png"
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
            paths.append(str(path))
        rows.append({"site_id": f"t:{i:04d}", "source": "test", "lat": 45 + i * 0.01, "lon": 7.0,
                     "label": None, "photos": paths, "photo_views": list(views), "satellite": None})
    sites = hh.datasets.finalise(pd.DataFrame(rows), hh.datasets.LoadReport("test"), verbose=False)
    return hh.datasets.write_sites(sites, folder / "sites.parquet")


def _cli(*args, torchrun=False):
    base = [str(ROOT / ".venv/bin/torchrun"), "--nproc_per_node=2", "--master_port=29531", "-m"] if torchrun \
        else [sys.executable, "-m"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return base + ["habitat_helpers", "embed", *args, "--no-progress"], env


@pytest.fixture(scope="module")
def encoder():
    return hh.encoders.get_encoder("efficientnet-lite0-imagenet", image_size=32)


def test_shards_read_back_in_item_order(tmp_path, encoder):
    sites = hh.datasets.read_sites(_site_table(tmp_path, 9))
    keys, files, rows = hh.embed.item_keys(sites, "photo", "demo")
    assert keys[:2] == ["demo|t:0000|N", "demo|t:0000|E"] and rows[:3].tolist() == [0, 0, 1]
    report = hh.embed.extract(keys, files, encoder, tmp_path / "cache", shard_size=4, progress=False)
    assert report["computed"] == 5 and report["images"] == 18
    again = hh.embed.extract(keys, files, encoder, tmp_path / "cache", shard_size=4, progress=False)
    assert again == {**again, "computed": 0, "reused": 5, "images": 0}
    index = pd.read_parquet(again["index"])
    assert len(index) == 18 and set(index["view"]) == {"N", "E"} and index["shard"].nunique() == 5
    assert index.loc[index["key"] == "demo|t:0003|E", "site_id"].item() == "t:0003"
    emb = hh.embed.read_items(keys, files, encoder, tmp_path / "cache", shard_size=4)
    direct = hh.embed.embed_images(files[:3], encoder, progress=False)
    np.testing.assert_allclose(emb[:3], direct, rtol=1e-4, atol=1e-5)
    mapped = hh.embed.read_items(keys, files, encoder, tmp_path / "cache", shard_size=4,
                                 out=tmp_path / "photos.npy")
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, emb)
    other = hh.encoders.get_encoder("efficientnet-lite0-imagenet", image_size=40)   # other preprocessing
    with pytest.raises(FileNotFoundError, match="not computed yet"):
        hh.embed.read_items(keys, files, other, tmp_path / "cache", shard_size=4)
    with pytest.raises(FileNotFoundError, match="not computed yet"):
        hh.embed.read_items(keys, files, other, tmp_path / "cache", shard_size=4, out=tmp_path / "other.npy")
    assert sorted(p.name for p in tmp_path.glob("*.npy*")) == ["photos.npy"]     # no half-written file


def test_a_file_rewritten_in_place_is_embedded_again(tmp_path, encoder):
    """Regenerated images keep their names (a new demo, an updated photo): their shard is new, and
    the embedding read back is the new image's, never the old one's."""
    sites = hh.datasets.read_sites(_site_table(tmp_path, 4))
    keys, files, _ = hh.embed.item_keys(sites, "photo", "demo")
    hh.embed.extract(keys, files, encoder, tmp_path / "cache", shard_size=4, progress=False)
    before = hh.embed.read_items(keys, files, encoder, tmp_path / "cache", shard_size=4)
    stat = os.stat(files[5])
    Image.fromarray(np.full((24, 24, 3), 200, dtype=np.uint8)).save(files[5])     # same name, new pixels
    os.utime(files[5], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))            # a later write
    again = hh.embed.extract(keys, files, encoder, tmp_path / "cache", shard_size=4, progress=False)
    assert again["computed"] == 1 and again["reused"] == 1                          # only its shard
    after = hh.embed.read_items(keys, files, encoder, tmp_path / "cache", shard_size=4)
    order = np.argsort(keys)                                                        # shards follow the keys
    changed = {int(np.where(order == 5)[0][0]) // 4}
    assert not np.allclose(after[5], before[5])
    np.testing.assert_allclose(after[5], hh.embed.embed_images([files[5]], encoder, progress=False)[0],
                               rtol=1e-4, atol=1e-5)
    untouched = [i for i in range(len(keys)) if int(np.where(order == i)[0][0]) // 4 not in changed]
    np.testing.assert_array_equal(after[untouched], before[untouched])


def test_mixed_precision_channels_last_path_matches_float32(tmp_path, encoder):
    """The GPU path (autocast + channels-last) run on CPU with bfloat16: same embeddings up to
    reduced precision, float32 output, and a real difference from the float32 run."""
    sites = hh.datasets.read_sites(_site_table(tmp_path, 4))
    _, files, _ = hh.embed.item_keys(sites, "photo", "demo")
    exact = hh.embed.embed_images(files, encoder, progress=False)
    fast = hh.embed.embed_images(files, encoder, progress=False, amp=True, channels_last=True)
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    cos = (exact * fast).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(fast, axis=1)
    assert cos.min() > 0.99
    assert not np.array_equal(exact, fast)          # bfloat16 really ran
    layout = hh.embed.embed_images(files, encoder, progress=False, channels_last=True)
    np.testing.assert_allclose(layout, exact, rtol=1e-3, atol=1e-4)


def test_killed_run_resumes_with_only_the_missing_shards(tmp_path):
    table = _site_table(tmp_path, 120, views=("N", "E", "S"))
    cache = tmp_path / "cache"
    cmd, env = _cli("--sites", str(table), "--cache", str(cache), "--image-size", "32", "--shard-size", "8",
                    "--batch-size", "8")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(cache.rglob("shard-*.npz"))) < 3:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(cache.rglob("shard-*.npz"))
    assert 3 <= len(done) < 45
    for shard in done:                                   # every shard on disk is complete
        with np.load(shard) as data:
            assert data["embeddings"].shape == (8, 1280) and len(data["keys"]) == 8
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["reused"] == len(done) and report["computed"] == 45 - len(done)
    assert not list(cache.rglob("*.tmp*"))


def test_two_ranks_give_the_same_embeddings_as_one(tmp_path, encoder):
    table = _site_table(tmp_path, 20)
    one, env = _cli("--sites", str(table), "--cache", str(tmp_path / "one"), "--image-size", "32", "--shard-size", "6")
    two, _ = _cli("--sites", str(table), "--cache", str(tmp_path / "two"), "--image-size", "32", "--shard-size", "6",
                  torchrun=True)
    subprocess.run(one, env=env, check=True, capture_output=True)
    run = subprocess.run(two, env=env, check=True, capture_output=True, text=True)
    # the two ranks print one JSON report each; their lines may interleave on stdout
    reports = [json.loads(obj) for obj in re.findall(r"\{[^{}]*\}", run.stdout)]
    assert sorted(r["rank"] for r in reports) == [0, 1] and sum(r["computed"] for r in reports) == 7
    assert len(pd.read_parquet(next(r["index"] for r in reports if r["rank"] == 0))) == 40
    sites = hh.datasets.read_sites(table)
    keys, files, _ = hh.embed.item_keys(sites, "photo")
    a = hh.embed.read_items(keys, files, encoder, tmp_path / "one", shard_size=6)
    b = hh.embed.read_items(keys, files, encoder, tmp_path / "two", shard_size=6)
    np.testing.assert_array_equal(a, b)
