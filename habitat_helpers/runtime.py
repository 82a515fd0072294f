"""Run-time helpers: device choice, seeding and the hub (online/offline) check."""

from __future__ import annotations

import os
import random
import socket
import threading

import numpy as np

HUB_HOST = "huggingface.co"


class HubUnavailableError(RuntimeError):
    """Raised when weights must come from a model hub that cannot be reached."""


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` gives ``"cuda"`` when a GPU is visible, else ``"cpu"``; other values pass through."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={device!r} was asked for but torch sees no GPU; use 'auto' or 'cpu'")
    return device


def fold_jobs(device: str = "cpu", most: int = 4) -> int:
    """How many cross-validation folds to run at once (``n_jobs`` of
    :func:`habitat_helpers.evaluation.cross_validate`): the CPU's cores, at most ``most`` (each
    worker holds a copy of the embeddings), or 1 on a GPU (the folds take turns on it)."""
    import os

    if device != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(most, cores))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that the same seed gives the same numbers."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def hub_offline() -> bool:
    """True when the user has not opted in to hub downloads (``HF_HUB_OFFLINE`` unset or true).

    The Makefile and the tests set ``HF_HUB_OFFLINE=1``; set ``HF_HUB_OFFLINE=0`` to allow
    downloads from the Hugging Face hub.
    """
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_reachable(timeout: float = 1.0) -> bool:
    """Whether the model hub answers a TCP connection within ``timeout`` seconds.

    The probe runs in a thread so that a slow DNS lookup cannot stall the caller, unlike
    ``huggingface_hub``'s own retries (20-50 s on a closed network).
    """
    if hub_offline():
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((HUB_HOST, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def require_hub(what: str, alternative: str) -> None:
    """Raise :class:`HubUnavailableError` at once when ``what`` needs the hub and it is unreachable."""
    if hub_reachable():
        return
    reason = "HF_HUB_OFFLINE=1 is set" if hub_offline() else f"{HUB_HOST} cannot be reached"
    raise HubUnavailableError(
        f"{what} needs weights from the Hugging Face hub, but {reason}. "
        f"Offline alternative: {alternative}. "
        "To allow downloads, set HF_HUB_OFFLINE=0 on a machine with internet access."
    )


def init_distributed(device: str) -> tuple[int, int, str]:
    """Join the process group when run under ``torchrun`` (``WORLD_SIZE`` > 1): ``nccl`` on GPUs,
    ``gloo`` on CPU, one GPU per local rank. Returns ``(rank, world_size, device)``; a single
    process gets ``(0, 1, device)`` and nothing is initialised."""
    import os

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size > 1:
        import torch
        import torch.distributed as dist

        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
    return rank, world_size, device
