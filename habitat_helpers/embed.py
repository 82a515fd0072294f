"""Batched embedding extraction with an on-disk cache.

Images go through a ``DataLoader`` (decoding in worker processes, batching) and the
encoder under ``torch.inference_mode``; a progress bar shows images per second.
Multi-view ground photos (LUCAS N/E/S/W) are embedded per view and pooled per site
(mean of the views present), keeping the per-view embeddings.

The cache is one ``.npz`` file per (modality, encoder + preprocessing, list of inputs):
rerunning with the same inputs reads it back instead of recomputing. Files are written
to a temporary name and renamed, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from . import datasets
from .encoders import Encoder

MODALITIES = ("photo", "satellite", "gps")


class ImageFiles(Dataset):
    """Images read from ``paths`` and passed through ``transform``; yields ``(tensor, index)``.

    JPEG/PNG files are opened directly; GeoTIFF satellite patches and BigEarthNet band folders
    are rendered to true-colour RGB by :func:`habitat_helpers.datasets.open_image`."""

    def __init__(self, paths: list[str], transform):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            if Path(path).suffix.lower() in {".jpg", ".jpeg", ".png"}:
                with Image.open(path) as im:
                    return self.transform(im), i
            return self.transform(datasets.open_image(path)), i  # GeoTIFF or band folder
        except FileNotFoundError:
            raise FileNotFoundError(f"image missing: {path}") from None
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise OSError(f"image unreadable (corrupt or not an image): {path}: {err}") from None


def embed_images(paths: list[str], encoder: Encoder, *, batch_size: int = 64, num_workers: int = 0,
                 device: str = "cpu", desc: str = "images", progress: bool = True) -> np.ndarray:
    """Embed image files; returns a float32 array ``(len(paths), encoder.dim)`` in input order."""
    from tqdm.auto import tqdm

    if encoder.modality != "image":
        raise ValueError(f"{encoder.name} embeds {encoder.modality}, not images")
    out = np.empty((len(paths), encoder.dim), dtype=np.float32)
    if not paths:
        return out
    loader = DataLoader(ImageFiles(paths, encoder.transform), batch_size=batch_size,
                        num_workers=num_workers, pin_memory=device.startswith("cuda"),
                        persistent_workers=False)
    use_amp = device.startswith("cuda")
    model = encoder.model.to(device).eval()
    if use_amp:
        model = model.to(memory_format=torch.channels_last)
    with torch.inference_mode(), tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for batch, index in loader:
            batch = batch.to(device, non_blocking=True)
            if use_amp:
                batch = batch.to(memory_format=torch.channels_last)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
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
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(latlon), batch_size):
            chunks.append(model(latlon[start:start + batch_size].to(device)).float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.empty((0, encoder.dim), np.float32)


def _fingerprint(items) -> str:
    h = hashlib.sha1()
    for item in items:
        h.update(str(item).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def save_npz_atomic(path: Path, **arrays) -> None:
    """Write ``arrays`` to ``path`` via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def embed_sites(sites, image_encoder: Encoder, location_encoder: Encoder, cache_dir: str | Path, *,
                batch_size: int = 64, num_workers: int = 0, device: str = "cpu",
                progress: bool = True) -> dict[str, np.ndarray]:
    """Embed every modality of a site table (:mod:`habitat_helpers.datasets` schema), reading
    from / writing to ``cache_dir``.

    Returns, aligned to the rows of ``sites`` (NaN rows where a site lacks the modality):

    * ``photo``: ``(n, d)``, the mean over the site's ground views
    * ``satellite``: ``(n, d)``
    * ``gps``: ``(n, 512)``

    and the per-view embeddings behind ``photo``: ``photo_per_view`` ``(n_photos, d)`` with
    ``photo_site`` (row of the site) and ``photo_view`` (view name) for each photo.
    """
    cache_dir = Path(cache_dir)
    ids = list(sites["site_id"])
    n = len(ids)

    def cached(modality: str, encoder: Encoder, inputs: list, compute):
        path = cache_dir / f"{modality}-{encoder.cache_key}-{_fingerprint(inputs)}.npz"
        if path.exists():
            with np.load(path) as data:
                return data["embeddings"]
        arr = compute()
        save_npz_atomic(path, embeddings=arr)
        return arr

    # ground photos: every (site, view), embedded once, then pooled per site
    site_of, view_of, files = [], [], []
    for i, (paths, views) in enumerate(zip(sites["photos"], sites["photo_views"])):
        for path, view in zip(paths, views):
            site_of.append(i)
            view_of.append(view)
            files.append(path)
    per_view = cached("photo", image_encoder, files,
                      lambda: embed_images(files, image_encoder, batch_size=batch_size, num_workers=num_workers,
                                           device=device, desc="ground photos", progress=progress))
    site_of = np.asarray(site_of, dtype=np.int64)
    pooled = np.full((n, image_encoder.dim), np.nan, dtype=np.float32)
    if len(files):
        sums = np.zeros((n, image_encoder.dim), dtype=np.float64)
        np.add.at(sums, site_of, per_view)
        counts = np.bincount(site_of, minlength=n)
        pooled[counts > 0] = (sums[counts > 0] / counts[counts > 0, None]).astype(np.float32)

    sat_paths = [p if isinstance(p, str) else None for p in sites["satellite"]]
    present = [i for i, p in enumerate(sat_paths) if p]
    sat_flat = cached("satellite", image_encoder, [sat_paths[i] for i in present],
                      lambda: embed_images([sat_paths[i] for i in present], image_encoder, batch_size=batch_size,
                                           num_workers=num_workers, device=device, desc="satellite patches",
                                           progress=progress))
    sat = np.full((n, image_encoder.dim), np.nan, dtype=np.float32)
    sat[present] = sat_flat

    lat, lon = sites["lat"].to_numpy(float), sites["lon"].to_numpy(float)
    gps = cached("gps", location_encoder, list(zip(lat.round(6), lon.round(6))),
                 lambda: embed_locations(lat, lon, location_encoder, device=device))
    return {"photo": pooled, "satellite": sat, "gps": gps, "photo_per_view": per_view,
            "photo_site": site_of, "photo_view": np.asarray(view_of, dtype=str)}


def save_site_embeddings(path: str | Path, site_ids, embeddings: dict[str, np.ndarray]) -> Path:
    """Save the per-site embeddings of :func:`embed_sites` (one file the later notebooks read)."""
    path = Path(path)
    save_npz_atomic(path, site_id=np.asarray(site_ids, dtype=str), **embeddings)
    return path


def load_site_embeddings(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read what :func:`save_site_embeddings` wrote: ``(site_ids, {modality: array})``."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays.pop("site_id"), arrays
