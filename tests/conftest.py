"""Shared test setup: offline hub and a throw-away cache folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _share_the_cores() -> None:
    """Under ``pytest -n N`` (pytest-xdist), give each test process its own share of the cores, before
    torch or NumPy start their thread pools: the process and what it starts (notebook kernels,
    cross-validation workers) are pinned to those cores, with as many threads. Without this, two test
    processes each running two-thread torch work on 2 cores made ``make test`` slower than one process
    (measured here: 852 s against 789 s in one process)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index, count = int(worker.removeprefix("gw")), int(count)
    share = cores[index::count] if count <= len(cores) else [cores[index % len(cores)]]
    os.sched_setaffinity(0, share)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(len(share))


_share_the_cores()


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Point HABITAT_HELPERS_CACHE at a temporary folder for the whole session (one per worker process
    under ``pytest -n``)."""
    old = os.environ.get("HABITAT_HELPERS_CACHE")
    os.environ["HABITAT_HELPERS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("HABITAT_HELPERS_CACHE", None)
    else:
        os.environ["HABITAT_HELPERS_CACHE"] = old


@pytest.fixture(scope="session")
def shared_dir():
    import habitat_helpers as hh

    path = hh.paths.shared_dir()
    if path is None:
        pytest.skip("../shared is absent (real EUNIS workbook and LUCAS sample live there)")
    return path


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server (tests/local_server.py) serving ``tmp_path / "served"``: the download tests
    write the files it serves there. Stopped after the test."""
    from local_server import LocalServer

    root = tmp_path / "served"
    root.mkdir()
    server = LocalServer(root)
    yield server
    server.stop()


@dataclass(frozen=True)
class BookRun:
    """One execution of the six notebooks (``out/notebooks``, ``out/outputs``) and the cache it used."""

    out: Path
    cache: Path
    timings: dict


@pytest.fixture(scope="session")
def tiny_book(tmp_path_factory, _isolated_cache):
    """The six notebooks executed once per test session under `tiny` (seed 0, the profile's own
    settings), in order, in the session's cache. Every test that reads an executed chapter shares this
    run. Under ``pytest -n`` each test process has its own session, and ``--dist loadfile`` (the
    Makefile's) keeps a file's tests in one process: keep such tests in tests/test_notebooks.py, or the run
    is made again in another process.
    """
    import habitat_helpers as hh

    out = tmp_path_factory.mktemp("book")
    timings = hh.notebooks.run_all("tiny", 0, out, progress=False)
    return BookRun(out, Path(os.environ["HABITAT_HELPERS_CACHE"]), timings)
