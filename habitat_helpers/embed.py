"""Batched, sharded, resumable embedding extraction.

Images go through a ``DataLoader`` (decoding in worker processes, batching) and the
encoder under ``torch.inference_mode`` (with AMP and channels-last on a GPU); a progress bar
shows images per second. Multi-view ground photos (LUCAS N/E/S/W/P, EMBAL transects) are
embedded per view and pooled per site (mean of the views present), keeping the per-view
embeddings.

The cache
---------
Each input is an *item* keyed by ``dataset|site_id|view``. Items are sorted by key and cut
into shards of ``shard_size``; a shard is one ``.npz`` file in
``cache_dir/<encoder name>-<hash of its preprocessing>/`` whose name carries a hash of its
items (keys, files and each file's size and modification time), so changing the data (also a
file rewritten in place under the same name) or the preprocessing makes new shards. A shard
is written to a temporary file and renamed (atomic): a killed run leaves complete shards
only, and the next run computes just the shards that are missing (resume). Reading back
(:func:`read_items`) returns an array aligned to the items asked for; an index file
(``index-<hash>.parquet``) lists every item's dataset, site, view, file, shard and row.

Several processes share the work with ``torch.distributed``: shard ``i`` belongs to rank
``i % world_size``. ``torchrun --nproc_per_node=N -m habitat_helpers embed ...`` runs the
``embed`` command (:func:`run`, below) on N GPUs (``nccl``) or CPU processes (``gloo``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from . import cache, datasets, encoders, profiles, runtime
from .encoders import OFFLINE_IMAGE_DEFAULT, Encoder, geoclip_layer_inputs, get_encoder


class ImageFiles(Dataset):
    """Images read from ``paths`` and passed through ``transform``; yields ``(tensor, index)``.

    Every file goes through :func:`habitat_helpers.datasets.open_image` (JPEG/PNG photos, with
    large JPEGs decoded at a reduced scale no smaller than ``draft_size``; GeoTIFF patches and
    BigEarthNet band folders rendered to true colour), or through ``loader`` when the encoder
    brings its own (e.g. multi-band patches for a widened first convolution)."""

    def __init__(self, paths: list[str], transform, loader=None, draft_size: int | None = None):
        self.paths = list(paths)
        self.transform = transform
        self.loader = loader
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            if self.loader is not None:
                return self.transform(self.loader(path)), i
            return self.transform(datasets.open_image(path, draft_size=self.draft_size)), i
        except FileNotFoundError:
            raise FileNotFoundError(f"image missing: {path}") from None
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise OSError(f"image unreadable (corrupt or not an image): {path}: {err}") from None


def embed_images(paths: list[str], encoder: Encoder, *, batch_size: int = 64, num_workers: int = 0,
                 device: str = "cpu", desc: str = "images", progress: bool = True,
                 amp: bool | None = None, channels_last: bool | None = None) -> np.ndarray:
    """Embed image files; returns a float32 array ``(len(paths), encoder.dim)`` in input order.

    ``amp`` (mixed precision: float16 on CUDA, bfloat16 on CPU) and ``channels_last`` (memory
    layout that suits convolutions on tensor cores) default to on for CUDA devices and off on
    CPU; either can be forced. Outputs are always float32."""
    from tqdm.auto import tqdm

    if encoder.modality != "image":
        raise ValueError(f"{encoder.name} embeds {encoder.modality}, not images")
    out = np.empty((len(paths), encoder.dim), dtype=np.float32)
    if not paths:
        return out
    on_gpu = device.startswith("cuda")
    amp = on_gpu if amp is None else amp
    channels_last = on_gpu if channels_last is None else channels_last
    device_type = torch.device(device).type
    amp_dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    files = ImageFiles(paths, encoder.transform, encoder.loader, draft_size=encoder.config.get("size"))
    loader = DataLoader(files, batch_size=batch_size,
                        num_workers=num_workers, pin_memory=on_gpu,
                        persistent_workers=False)
    model = encoder.model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    with torch.inference_mode(), tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for batch, index in loader:
            batch = batch.to(device, non_blocking=True)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device_type, dtype=amp_dtype, enabled=amp):
                feats = model(batch)
            out[index.numpy()] = feats.float().cpu().numpy()
            bar.update(len(index))
    return out


def embed_locations(lat, lon, encoder: Encoder, *, batch_size: int = 4096, device: str = "cpu") -> np.ndarray:
    """Embed coordinates in degrees; returns float32 ``(n, encoder.dim)``."""
    if encoder.modality != "location":
        raise ValueError(f"{encoder.name} embeds {encoder.modality}, not locations")
    latlon = torch.tensor(np.column_stack([lat, lon]), dtype=torch.float32)
    model = encoder.model.to(device).eval()
    return _batched(latlon, encoder.dim, batch_size, lambda batch: model(batch.to(device)).float())


def location_layer_inputs(lat, lon, *, batch_size: int = 4096, device: str = "cpu") -> np.ndarray:
    """The inputs of GeoCLIP's output layers at the coordinates (float32 ``n x 3072``;
    :func:`habitat_helpers.encoders.geoclip_layer_inputs`): what the GPS head reads when that
    layer is trained with the alignment (``AlignConfig(location_layers="last")``)."""

    encoder = get_encoder("geoclip-location", device=device)
    latlon = torch.tensor(np.column_stack([lat, lon]), dtype=torch.float32)
    return _batched(latlon, 3072, batch_size, lambda batch: geoclip_layer_inputs(batch.to(device), encoder))


def _batched(latlon: torch.Tensor, dim: int, batch_size: int, embed) -> np.ndarray:
    """``embed`` of ``latlon`` batch by batch, written into one float32 ``(n, dim)`` array made
    first (the batches are not kept and joined: at 500,000 sites that held twice the result)."""
    out = np.empty((len(latlon), dim), np.float32)
    with torch.inference_mode():
        for start in range(0, len(latlon), batch_size):
            out[start:start + batch_size] = embed(latlon[start:start + batch_size]).cpu().numpy()
    return out


def _fingerprint(items) -> str:
    h = hashlib.sha1()
    for item in items:
        h.update(str(item).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def write_atomic(path: Path, write) -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path`` (atomic): readers
    never see a half-written file, and a killed writer leaves only a ``*.tmp<pid>`` file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)
    return path


def save_npz_atomic(path: Path, **arrays) -> None:
    """Write ``arrays`` to ``path`` as ``.npz`` via :func:`write_atomic`."""
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    write_atomic(path, write)


def item_keys(sites, modality: str, dataset: str = "") -> tuple[list[str], list[str], np.ndarray]:
    """Items of one image modality of a site table: ``(keys, files, site_row)``.

    ``photo`` gives one item per ground view (key ``dataset|site_id|view``), ``satellite``
    one per patch (view ``sat``). ``site_row`` maps each item back to its row in ``sites``.
    """
    keys, files, rows = [], [], []
    if modality == "photo":
        for i, (sid, paths, views) in enumerate(zip(sites["site_id"], sites["photos"], sites["photo_views"])):
            for path, view in zip(paths, views):
                keys.append(f"{dataset}|{sid}|{view}")
                files.append(str(path))
                rows.append(i)
    elif modality == "satellite":
        for i, (sid, path) in enumerate(zip(sites["site_id"], sites["satellite"])):
            if isinstance(path, str):
                keys.append(f"{dataset}|{sid}|sat")
                files.append(path)
                rows.append(i)
    else:
        raise ValueError(f"image modality must be 'photo' or 'satellite', not {modality!r}")
    return keys, files, np.asarray(rows, dtype=np.int64)


def _file_state(path: str) -> str:
    """Size and modification time of ``path`` (``missing`` when it cannot be read): a file
    rewritten in place, e.g. a regenerated demo photo, gets a new shard."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def plan_shards(keys: list[str], files: list[str], shard_size: int) -> list[dict]:
    """Cut items (sorted by key) into shards; each shard's ``name`` hashes its keys, its files'
    paths and their size and modification time, so changed files are never read from old shards."""
    if len(set(keys)) != len(keys):
        raise ValueError("item keys must be unique (dataset|site_id|view)")
    order = sorted(range(len(keys)), key=keys.__getitem__)
    shards = []
    for start in range(0, len(order), shard_size):
        idx = order[start:start + shard_size]
        digest = _fingerprint([f"{keys[i]}={files[i]}@{_file_state(files[i])}" for i in idx])
        shards.append({"index": len(shards), "items": idx, "name": f"shard-{len(shards):05d}-{digest}.npz"})
    return shards


def extract(keys: list[str], files: list[str], encoder: Encoder, cache_dir: str | Path, *,
            shard_size: int = 512, batch_size: int = 64, num_workers: int = 0, device: str = "cpu",
            rank: int = 0, world_size: int = 1, progress: bool = True) -> dict:
    """Embed the items this rank owns into shards under ``cache_dir``, skipping shards that exist.

    Returns ``{"computed": n, "reused": n, "images": n, "seconds": s}`` for this rank.
    """
    import time

    folder = Path(cache_dir) / encoder.cache_key
    folder.mkdir(parents=True, exist_ok=True)
    if world_size == 1:  # temporary files left by a killed run are never valid shards
        for stale in folder.glob("*.tmp*"):
            stale.unlink(missing_ok=True)
    mine = [sh for sh in plan_shards(keys, files, shard_size) if sh["index"] % world_size == rank]
    todo = [sh for sh in mine if not (folder / sh["name"]).exists()]
    report = {"computed": 0, "reused": len(mine) - len(todo), "images": 0, "seconds": 0.0}
    start = time.perf_counter()
    for sh in todo:
        paths = [files[i] for i in sh["items"]]
        emb = embed_images(paths, encoder, batch_size=batch_size, num_workers=num_workers, device=device,
                           desc=f"shard {sh['index']} (rank {rank})", progress=progress)
        save_npz_atomic(folder / sh["name"], embeddings=emb,
                        keys=np.asarray([keys[i] for i in sh["items"]], dtype=str))
        report["computed"] += 1
        report["images"] += len(paths)
    report["seconds"] = round(time.perf_counter() - start, 3)
    if world_size == 1:
        report["index"] = str(write_index(keys, files, encoder, cache_dir, shard_size))
    return report


def write_index(keys: list[str], files: list[str], encoder: Encoder, cache_dir: str | Path,
                shard_size: int = 512) -> Path:
    """Write ``index-<hash of the items>.parquet`` beside the shards: one row per item with its
    dataset, site, view, file, shard and row, plus the encoder and its preprocessing hash."""
    folder = Path(cache_dir) / encoder.cache_key
    rows = []
    for sh in plan_shards(keys, files, shard_size):
        for row, i in enumerate(sh["items"]):
            dataset, site, view = keys[i].split("|", 2)
            rows.append({"key": keys[i], "dataset": dataset, "site_id": site, "view": view, "file": files[i],
                         "shard": sh["name"], "row": row})
    table = pd.DataFrame(rows, columns=["key", "dataset", "site_id", "view", "file", "shard", "row"])
    table["encoder"] = encoder.name
    table["preprocessing"] = encoder.cache_key.rsplit("-", 1)[-1]
    return write_atomic(folder / f"index-{_fingerprint(keys)}.parquet",
                        lambda tmp: table.to_parquet(tmp, index=False))


def read_items(keys: list[str], files: list[str], encoder: Encoder, cache_dir: str | Path,
               shard_size: int = 512, out: str | Path | None = None) -> np.ndarray:
    """The cached embeddings of ``keys``, in that order; raises if any shard is missing.

    ``out``: a ``.npy`` file to copy them into, one shard at a time; the array returned is then a
    read-only memory map of it, so that tens of thousands of photos' embeddings train the
    alignment (:func:`habitat_helpers.align.train_alignment` reads a batch's rows at a time)
    without being held in memory."""
    folder = Path(cache_dir) / encoder.cache_key
    if out is None:
        target = np.full((len(keys), encoder.dim), np.nan, dtype=np.float32)
    else:                               # written under a temporary name, renamed when complete
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        target = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(keys), encoder.dim))
        target[:] = np.nan
    missing = []
    for sh in plan_shards(keys, files, shard_size):
        path = folder / sh["name"]
        if not path.exists():
            missing.append(sh["name"])
            continue
        with np.load(path) as data:
            stored = list(data["keys"])
            if stored != [keys[i] for i in sh["items"]]:
                raise ValueError(f"{path} holds other items than expected: delete it and rerun")
            target[sh["items"]] = data["embeddings"]
    if out is not None:
        target.flush()
        del target
        if missing:
            tmp.unlink()
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) not computed yet in {folder}, e.g. {missing[0]}: "
                                "run the extraction (it resumes where it stopped)")
    if out is None:
        return target
    os.replace(tmp, out)
    return np.load(out, mmap_mode="r")


def embed_modality(sites, modality: str, encoder: Encoder, cache_dir: str | Path, *, dataset: str = "",
                   shard_size: int = 512, batch_size: int = 64, num_workers: int = 0, device: str = "cpu",
                   progress: bool = True, out: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Extract (resuming) and read back one image modality: ``(embeddings, site_row, keys)``;
    ``out``: read back into that ``.npy`` file, as a memory map (:func:`read_items`)."""
    keys, files, rows = item_keys(sites, modality, dataset)
    extract(keys, files, encoder, cache_dir, shard_size=shard_size, batch_size=batch_size,
            num_workers=num_workers, device=device, progress=progress)
    return read_items(keys, files, encoder, cache_dir, shard_size, out=out), rows, keys


def embed_sites(sites, image_encoder: Encoder, location_encoder: Encoder, cache_dir: str | Path, *,
                batch_size: int = 64, num_workers: int = 0, device: str = "cpu", shard_size: int = 512,
                dataset: str = "", progress: bool = True, views_out: str | Path | None = None) -> dict[str, np.ndarray]:
    """Embed every modality of a site table (:mod:`habitat_helpers.datasets` schema), resuming
    from the shards already in ``cache_dir``. ``views_out``: a ``.npy`` file that holds the
    per-view photo embeddings, returned as a memory map (tens of thousands of photos).

    Returns, aligned to the rows of ``sites`` (NaN rows where a site lacks the modality):

    * ``photo``: ``(n, d)``, the mean over the site's ground views
    * ``satellite``: ``(n, d)``
    * ``gps``: ``(n, 512)``

    and the per-view embeddings behind ``photo``: ``photo_per_view`` ``(n_photos, d)`` with
    ``photo_site`` (row of the site) and ``photo_view`` (view name) for each photo.
    """
    n = len(sites)
    common = {"dataset": dataset, "shard_size": shard_size, "batch_size": batch_size,
              "num_workers": num_workers, "device": device, "progress": progress}
    per_view, site_of, keys = embed_modality(sites, "photo", image_encoder, cache_dir, out=views_out, **common)
    pooled = _mean_per_site(per_view, site_of, n, image_encoder.dim)
    sat_flat, sat_rows, _ = embed_modality(sites, "satellite", image_encoder, cache_dir, **common)
    sat = np.full((n, image_encoder.dim), np.nan, dtype=np.float32)
    sat[sat_rows] = sat_flat
    gps = gps_embeddings(sites["lat"].to_numpy(float), sites["lon"].to_numpy(float), cache_dir=cache_dir,
                         device=device, progress=progress, encoder=location_encoder)
    return {"photo": pooled, "satellite": sat, "gps": gps, "photo_per_view": per_view,
            "photo_site": site_of, "photo_view": np.asarray([k.rsplit("|", 1)[1] for k in keys], dtype=str)}


# --- what an evaluation of a table needs ---------------------------------------------------------

def embed_for_evaluation(sites, modalities, *, cache_dir, image_encoder: str | None = None,
                         image_size: int | None = None, device: str = "cpu", batch_size: int = 64,
                         num_workers: int = 0, progress: bool = True, per_view: bool = True) -> dict[str, np.ndarray]:
    """The embeddings that ``modalities`` need, one row per site (NaN rows where a site lacks
    the input), as :func:`habitat_helpers.evaluation.cross_validate` takes them.

    Only the requested modalities are embedded: a GPS-only evaluation never loads an image
    model. Image embeddings go through the resumable cache of :mod:`habitat_helpers.embed`
    (a second run with the same files reads them back); ground photos are averaged over the
    views a site has; ``per_view`` (the default) adds the views themselves (``photo_per_view`` and
    ``photo_site``, as :func:`embed_sites` gives them), which photo views as alignment items read."""
    out = {}
    if "gps" in modalities:
        out["gps"] = gps_embeddings(sites["lat"].to_numpy(float), sites["lon"].to_numpy(float),
                                    cache_dir=cache_dir, device=device, progress=progress)
    image_modalities = [m for m in modalities if m in ("photo", "satellite")]
    if image_modalities:
        encoder = get_encoder(image_encoder or OFFLINE_IMAGE_DEFAULT,
                                       image_size=image_size, device=device)
        for modality in image_modalities:
            per_item, site_row, _ = embed_modality(sites, modality, encoder, cache_dir, device=device,
                                                         batch_size=batch_size, num_workers=num_workers,
                                                         progress=progress)
            out[modality] = _mean_per_site(per_item, site_row, len(sites), encoder.dim)
            if modality == "photo" and per_view:
                out["photo_per_view"], out["photo_site"] = per_item, site_row
    return out


def _mean_per_site(per_item: np.ndarray, site_row: np.ndarray, n_sites: int, dim: int) -> np.ndarray:
    """Average the items (photo views, patches) of each site; NaN rows for sites without any."""
    sums = np.zeros((n_sites, dim))
    for start in range(0, len(site_row), 65_536):          # a memory map is read a piece at a time
        np.add.at(sums, site_row[start:start + 65_536], per_item[start:start + 65_536])
    counts = np.bincount(site_row, minlength=n_sites)
    out = np.full((n_sites, dim), np.nan, dtype=np.float32)
    has = counts > 0
    out[has] = sums[has] / counts[has, None]
    return out


def gps_embeddings(lat, lon, *, cache_dir, device: str = "cpu", progress: bool = True,
                   chunk: int = 4096, encoder: Encoder | None = None) -> np.ndarray:
    """Location embeddings of the coordinates (GeoCLIP's, or ``encoder``'s), in chunks behind a
    progress bar, saved in ``cache_dir`` under the encoder and a hash of the coordinates: the one
    GPS cache, so the same coordinates are embedded once whichever stage asks. Returns a
    read-only memory map of the cached ``.npy`` file (float32 ``n x dim``)."""
    from tqdm.auto import tqdm

    encoder = encoder or get_encoder("geoclip-location", device=device)
    coordinates = np.round(np.column_stack([lat, lon]).astype(np.float64), 6)
    digest = hashlib.sha1(coordinates.tobytes()).hexdigest()[:12]
    path = Path(cache_dir) / encoder.cache_key / f"gps-{digest}.npy"
    if not path.exists():
        def write(tmp):         # chunk by chunk into the file: the whole array is never in memory
            target = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(lat), encoder.dim))
            with tqdm(total=len(lat), desc="gps", unit="site", disable=not progress) as bar:
                for start in range(0, len(lat), chunk):
                    stop = min(start + chunk, len(lat))
                    target[start:stop] = embed_locations(lat[start:stop], lon[start:stop], encoder, device=device)
                    bar.update(stop - start)
            target.flush()
            del target

        write_atomic(path, write)
    # a read-only memory map: the fold workers of a cross-validation map the same file (joblib
    # passes a memory map by its path), so the study's embeddings are in memory once, not once
    # in this process and once more in the copy joblib would make for the workers
    return np.load(path, mmap_mode="r")


def save_site_embeddings(path: str | Path, site_ids, embeddings: dict[str, np.ndarray]) -> Path:
    """Save the per-site embeddings of :func:`embed_sites`: one ``.npz`` file (the notebooks'),
    or, when ``path`` does not end in ``.npz``, a folder of one ``.npy`` file per array, which
    :func:`load_site_embeddings` opens as memory maps (each file written atomically)."""
    path = Path(path)
    arrays = {"site_id": np.asarray(site_ids, dtype=str), **embeddings}
    if path.suffix == ".npz":
        save_npz_atomic(path, **arrays)
        return path
    path.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        def write(tmp, array=array):
            with open(tmp, "wb") as f:
                np.save(f, array)

        write_atomic(path / f"{name}.npy", write)
    return path


def load_site_embeddings(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read what :func:`save_site_embeddings` wrote: ``(site_ids, {modality: array})``. From a
    folder, each array is a read-only memory map: training reads a batch's rows at a time, so a
    hundred thousand photos' views need not fit in memory."""
    path = Path(path)
    if path.is_dir():
        arrays = {f.stem: np.load(f, mmap_mode="r") for f in sorted(path.glob("*.npy"))}
        if "site_id" not in arrays:
            raise FileNotFoundError(f"{path} holds no site_id.npy: not a folder of hh.embed.save_site_embeddings")
        return np.asarray(arrays.pop("site_id")), arrays
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays.pop("site_id"), arrays


# --- the stage: every site's embeddings for the notebooks ---------------------------------------

def site_embeddings(data, profile, seed: int, *, device: str = "cpu", image_encoder=None,
                    location_encoder=None, recompute: bool = False, progress: bool = True,
                    verbose: bool = True) -> dict[str, np.ndarray]:
    """Chapter 2's stage: the embeddings of every site of ``data`` (a
    :class:`habitat_helpers.dataspec.Data`), as :func:`embed_sites` returns them.

    They are kept in the run folder (``data.run_dir(profile, seed) / "site_embeddings.npz"``)
    with the settings that made them (:mod:`habitat_helpers.cache`). A later chapter, or a rerun,
    reads them back when the sites and the encoders match; otherwise (an empty cache, other data,
    other encoders) they are computed here, with a progress bar, after a one-line note saying why
    (printed with ``verbose``). ``recompute=True``
    always computes (the per-image shards under ``embeddings/`` are still reused). Besides the
    arrays, ``"settings"`` holds the encoders' settings as JSON text.

    ``image_encoder`` and ``location_encoder`` are encoder names or loaded encoders (default:
    the profile's).
    """

    prof = profiles.get(profile) if isinstance(profile, str) else profile
    image_encoder = image_encoder or prof.image_encoder
    location_encoder = location_encoder or prof.location_encoder
    settings = {"image_encoder": getattr(image_encoder, "name", image_encoder),
                "location_encoder": getattr(location_encoder, "name", location_encoder),
                "image_size": prof.encoder_input_size}
    run = data.run_dir(prof.name, seed)
    path = run / "site_embeddings.npz"
    site_ids = data.sites["site_id"].astype(str).tolist()
    kept = {**settings, "site_ids_sha1": hashlib.sha1("\n".join(site_ids).encode()).hexdigest()}
    if not recompute and cache.reusable(path, kept, "embeddings", verbose=verbose,
                                        missing="not in the run folder yet (chapter 2 makes them)"):
        return load_site_embeddings(path)[1]
    if isinstance(image_encoder, str):
        image_encoder = encoders.get_encoder(image_encoder, image_size=prof.encoder_input_size, device=device)
    if isinstance(location_encoder, str):
        location_encoder = encoders.get_encoder(location_encoder, device=device)
    arrays = embed_sites(data.sites, image_encoder, location_encoder, run / "embeddings",
                         batch_size=prof.batch_size, num_workers=prof.num_workers, device=device,
                         progress=progress)
    arrays["settings"] = np.array(json.dumps(settings))    # travels with the arrays to later stages
    save_site_embeddings(path, site_ids, arrays)
    cache.record(path, kept)
    return arrays


# --- command line (single process or torchrun) -----------------------------------------------

def add_arguments(parser) -> None:
    """The options of ``python -m habitat_helpers embed`` (:data:`habitat_helpers.cli.COMMANDS`)."""

    parser.add_argument("--sites", required=True, help="site table (GeoParquet, hh.datasets schema)")
    parser.add_argument("--modality", choices=["photo", "satellite"], default="photo")
    parser.add_argument("--encoder", default=encoders.OFFLINE_IMAGE_DEFAULT)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--random-weights", action="store_true", help="timm models only: no pretrained weights")
    parser.add_argument("--cache", required=True, help="cache folder for the shards")
    parser.add_argument("--dataset", default="", help="dataset name in the item keys")
    parser.add_argument("--shard-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    """``python -m habitat_helpers embed --sites sites.parquet --modality photo --cache DIR``;
    under ``torchrun`` every rank takes its share of the shards. Prints one JSON line per rank."""
    import sys
    import time

    import torch.distributed as dist


    rank, world_size, device = runtime.init_distributed(runtime.resolve_device(args.device))
    # CPU threads: OMP_NUM_THREADS when set (torchrun sets 1), else the cores shared among the ranks
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // world_size)
    torch.set_num_threads(threads)
    kwargs = {"pretrained": False} if args.random_weights else {}
    encoder = encoders.get_encoder(args.encoder, image_size=args.image_size, device=device, **kwargs)
    sites = datasets.read_sites(args.sites)
    keys, files, _ = item_keys(sites, args.modality, args.dataset)
    start = time.perf_counter()
    report = extract(keys, files, encoder, args.cache, shard_size=args.shard_size, batch_size=args.batch_size,
                     num_workers=args.num_workers, device=device, rank=rank, world_size=world_size,
                     progress=not args.no_progress)
    if world_size > 1:
        dist.barrier()  # every rank's shards are written: rank 0 writes the index
        if rank == 0:
            report["index"] = str(write_index(keys, files, encoder, args.cache, args.shard_size))
        dist.destroy_process_group()
    report.update(rank=rank, world_size=world_size, items=len(keys), wall_s=round(time.perf_counter() - start, 3))
    sys.stdout.write(json.dumps(report) + "\n")  # one write per rank, so ranks' lines do not interleave
    sys.stdout.flush()
    return 0
