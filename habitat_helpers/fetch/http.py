"""Polite, resumable downloads shared by the ``fetch`` commands.

The API, small and meant to stay stable (every fetch module uses only this):

=========================  ==========================================================================
name                       what it is
=========================  ==========================================================================
:class:`Session`           a polite HTTP client: a user agent naming habitat_helpers and its version,
                           a per-host rate limit, retries with exponential backoff and jitter on
                           429, 5xx and connection errors (``Retry-After`` honoured), a
                           :class:`FetchError` after the last try; :meth:`Session.get` for small
                           answers (JSON, a table)
:func:`download`           one URL to one file, atomically: written to ``<dest>.part`` (resumed with
                           a ``Range`` request when a part is left over), checked, then renamed;
                           a complete file already there is skipped; returns an :class:`Outcome`
:func:`fetch_all`          many :class:`Job` objects in a bounded pool of threads behind a tqdm
                           progress bar; returns a :class:`Report`
:class:`Outcome`           what happened to one file: ``fetched``, ``skipped`` (already complete),
                           ``missing`` (404 / 410) or ``failed``, with the reason
:class:`Report`            every outcome, in the order of the jobs (nothing is dropped): counts,
                           a table, a one-paragraph summary
:func:`verify_jpeg`,       checks to pass as ``verify=``: the JPEG decodes to its end, the zip's
:func:`verify_zip`,        directory reads, the GeoTIFF opens
:func:`verify_geotiff`
=========================  ==========================================================================

A ``verify(path)`` callback returns ``None`` or ``True`` when the file is good and returns
``False`` or raises (any exception; its message becomes the reason) when it is not. A file that
fails it is deleted: a downloaded one counts as failed, an existing one is fetched again. With
``sha256=`` the file's digest is checked too.

Missing files (HTTP 404 and 410) are not errors: they are reported as ``missing``. Other 4xx
answers fail at once (asking again would not help); 408, 425, 429 and 5xx (except 501) and
connection errors are retried ``retries`` times, waiting ``backoff * 2**k`` seconds (at most
``max_backoff``) times a random factor in ``[1, 1 + jitter]``, or the server's ``Retry-After``
(at most ``max_retry_after``). Nothing is imported from torch, and nothing happens at import.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .. import __version__
from ..errors import UsageError

#: The four things that can happen to a file, in the order reports list them.
STATUSES = ("fetched", "skipped", "missing", "failed")

#: HTTP answers that mean "this file does not exist" (reported as missing, never retried).
MISSING_STATUSES = frozenset({404, 410})


def default_user_agent() -> str:
    """``habitat_helpers/<version> (+python-requests/<version>)``: who is asking, so a server's
    operators can tell the book's traffic apart and reach its authors."""
    import requests


    return f"habitat_helpers/{__version__} (research downloads; python-requests/{requests.__version__})"


def retryable(status: int) -> bool:
    """Whether an HTTP status is worth asking again: 408, 425, 429 and 5xx except 501."""
    return status in (408, 425, 429) or (500 <= status < 600 and status != 501)


class FetchError(Exception):
    """A URL that could not be fetched; ``status`` is the last HTTP status (``None`` for a
    connection error), ``attempts`` how many requests were made."""

    def __init__(self, url: str, reason: str, status: int | None = None, attempts: int = 1):
        super().__init__(f"{url}: {reason}")
        self.url, self.reason, self.status, self.attempts = url, reason, status, attempts


class NotFound(FetchError):
    """The server says the file does not exist (404 or 410)."""


class _Incomplete(Exception):
    """The body ended before its announced length (retried like a dropped connection)."""


class Session:
    """A polite HTTP client shared by the threads of a download.

    Parameters
    ----------
    retries
        Further tries after the first, for retryable answers and connection errors.
    backoff, max_backoff, jitter
        The wait before retry ``k`` (0-based) is ``min(backoff * 2**k, max_backoff)`` seconds
        times a random factor in ``[1, 1 + jitter]``.
    max_retry_after
        The longest ``Retry-After`` honoured, in seconds (a longer one is cut to this).
    rate
        At most this many requests per second to one host (``None`` or 0: no limit).
    timeout
        ``(connect, read)`` seconds, as ``requests`` takes it.
    pool_size
        Connections kept per host (at least the number of threads using the session).
    user_agent
        The ``User-Agent`` header (default: :func:`default_user_agent`).
    headers
        More headers sent with every request.
    sleep
        The function that waits (tests may pass one that records instead of sleeping).

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, *, retries: int = 4, backoff: float = 1.0, max_backoff: float = 60.0, jitter: float = 0.5,
                 max_retry_after: float = 300.0, rate: float | None = 5.0, timeout=(10.0, 120.0),
                 pool_size: int = 16, user_agent: str | None = None, headers: Mapping[str, str] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        import requests
        from requests.adapters import HTTPAdapter

        if retries < 0 or backoff < 0 or max_backoff < 0 or jitter < 0 or max_retry_after < 0:
            raise ValueError("retries, backoff, max_backoff, jitter and max_retry_after must be >= 0")
        if rate is not None and rate < 0:
            raise ValueError("rate must be positive (requests per second per host) or None")
        self.retries, self.backoff, self.max_backoff, self.jitter = retries, backoff, max_backoff, jitter
        self.max_retry_after, self.timeout, self.sleep = max_retry_after, timeout, sleep
        self.interval = 1.0 / rate if rate else 0.0
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._random = random.Random()
        self.http = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(1, pool_size))
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self.http.headers["User-Agent"] = user_agent or default_user_agent()
        self.http.headers.update(headers or {})

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self.http.close()

    # --- politeness -----------------------------------------------------------------------------

    def _wait_turn(self, url: str) -> None:
        """Sleep until this host may be asked again (the slots are handed out under a lock)."""
        if not self.interval:
            return
        host = urlsplit(url).netloc
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + self.interval
        if start > now:
            self.sleep(start - now)

    def retry_delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): the server's ``Retry-After``
        (seconds or an HTTP date, at most ``max_retry_after``) when given, else the backoff."""
        if retry_after:
            seconds = None
            try:
                seconds = float(retry_after)
            except ValueError:
                try:                          # an HTTP date; anything unreadable falls back to the backoff
                    seconds = email.utils.parsedate_to_datetime(retry_after).timestamp() - time.time()
                except (TypeError, ValueError, IndexError):
                    seconds = None
            if seconds is not None:
                return min(max(seconds, 0.0), self.max_retry_after)
        base = min(self.backoff * 2 ** attempt, self.max_backoff)
        return base * (1.0 + self.jitter * self._random.random())

    # --- requests -------------------------------------------------------------------------------

    def request(self, url: str, handle: Callable | None = None, *,
                headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None):
        """GET ``url`` with retries and return ``handle(response)`` (the response, its body read,
        without ``handle``).

        ``headers`` may be a function, called before every try (a resumed download asks for the
        bytes it still lacks). ``handle`` reads the body; a connection error or a short body while
        it does is retried like a failed request. Raises :class:`NotFound` for 404 and 410 and
        :class:`FetchError` for other errors, after the last try for retryable ones."""
        import requests

        attempt, last = 0, ""
        while True:
            self._wait_turn(url)
            extra = headers() if callable(headers) else (headers or {})
            status, retry_after = None, None
            try:
                with self.http.get(url, headers=dict(extra), stream=True, timeout=self.timeout) as response:
                    status = response.status_code
                    if status in MISSING_STATUSES:
                        raise NotFound(url, f"HTTP {status} (not found)", status, attempt + 1)
                    if status >= 400:
                        if not retryable(status):
                            raise FetchError(url, f"HTTP {status} {response.reason or ''}".strip(), status,
                                             attempt + 1)
                        last, retry_after = f"HTTP {status} {response.reason or ''}".strip(), \
                            response.headers.get("Retry-After")
                    else:
                        if handle is None:
                            _ = response.content
                            return response
                        return handle(response)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError, _Incomplete) as err:
                last = f"{type(err).__name__}: {err}"
            if attempt >= self.retries:
                raise FetchError(url, f"{last} (gave up after {attempt + 1} tries)", status, attempt + 1)
            self.sleep(self.retry_delay(attempt, retry_after))
            attempt += 1

    def get(self, url: str, *, headers: Mapping[str, str] | None = None):
        """GET ``url`` with retries; the ``requests`` response, its body read (``.content``,
        ``.json()``). Raises :class:`NotFound` or :class:`FetchError`."""
        return self.request(url, headers=headers)


# --- one file ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What happened to one file: ``status`` is one of :data:`STATUSES`; ``reason`` says why for
    ``missing`` and ``failed`` (and why an existing file was fetched again); ``meta`` is the
    job's."""

    url: str
    path: Path
    status: str
    reason: str = ""
    bytes: int = 0
    meta: dict = field(default_factory=dict)


def _problem(path: Path, verify: Callable | None, sha256: str | None) -> str | None:
    """Why the file at ``path`` is not good, or ``None``."""
    if sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest().lower() != sha256.lower():
            return f"sha256 {digest.hexdigest()} differs from the expected {sha256}"
    if verify is not None:
        try:                 # a decoder may raise anything on a broken file: each is a reason
            good = verify(path)
        except Exception as err:  # noqa: BLE001
            return f"check failed: {type(err).__name__}: {err}"
        if good is False:
            return "check failed"
    return None


def _range_start(response) -> int | None:
    """The first byte of a 206 answer (``Content-Range: bytes START-END/SIZE``)."""
    text = response.headers.get("Content-Range", "")
    unit, _, spec = text.partition(" ")
    start = spec.split("-", 1)[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def download(url: str, dest, *, session: Session | None = None, verify: Callable | None = None,
             sha256: str | None = None, resume: bool = True, overwrite: bool = False,
             chunk_size: int = 1 << 20, meta: dict | None = None) -> Outcome:
    """Download ``url`` to ``dest`` and say what happened (an :class:`Outcome`; never raises for
    a network or server problem).

    * A file already at ``dest`` that passes ``verify`` and ``sha256`` is kept (``skipped``)
      unless ``overwrite``; one that does not is deleted and fetched again.
    * The body goes to ``<dest>.part`` and is renamed to ``dest`` only once complete (its
      length as announced) and checked, so ``dest`` is always whole. With ``resume``, a part
      left by an interrupted run is continued with a ``Range`` request; if the server ignores
      the range, or the result fails the checks, the file is fetched again from the start.
    * 404 and 410 give ``missing``; anything else that goes wrong gives ``failed`` with the reason
      (the part is kept when the transfer broke off, for the next run to resume).

    ``session``: a :class:`Session` (a default one is made and closed when not given)."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    meta = dict(meta or {})
    note = ""
    if dest.exists() and not overwrite:
        problem = _problem(dest, verify, sha256)
        if problem is None:
            return Outcome(url, dest, "skipped", meta=meta)
        dest.unlink()
        note = f"existing file fetched again ({problem}); "
    own = session is None
    session = Session() if own else session
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # a part left over is continued first; if that goes wrong, one more try from the start
        for fresh in ((False, True) if resume and part.exists() else (True,)):
            if fresh:
                part.unlink(missing_ok=True)
            try:
                size = _fetch_part(session, url, part, chunk_size)
            except NotFound as err:
                part.unlink(missing_ok=True)
                return Outcome(url, dest, "missing", note + err.reason, meta=meta)
            except FetchError as err:
                if err.status == 416 and not fresh:      # the part is longer than the file: start again
                    continue
                return Outcome(url, dest, "failed", note + err.reason, meta=meta)
            except OSError as err:                         # the disk: full, not writable ...
                return Outcome(url, dest, "failed", f"{note}writing {part}: {err}", meta=meta)
            problem = _problem(part, verify, sha256)
            if problem is None:
                os.replace(part, dest)
                return Outcome(url, dest, "fetched", note.rstrip("; "), bytes=size, meta=meta)
            part.unlink(missing_ok=True)
        return Outcome(url, dest, "failed", f"{note}downloaded file is bad: {problem}", meta=meta)
    finally:
        if own:
            session.close()


def _fetch_part(session: Session, url: str, part: Path, chunk_size: int) -> int:
    """Fill ``part`` with the body of ``url`` (continuing what is there); its final size."""
    def headers():
        have = part.stat().st_size if part.exists() else 0
        return {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}

    def write(response) -> int:
        have = part.stat().st_size if part.exists() else 0
        start = _range_start(response) if response.status_code == 206 else 0
        if start is None or start > have:
            part.unlink(missing_ok=True)
            raise _Incomplete(f"unusable Content-Range {response.headers.get('Content-Range')!r}")
        expected = response.headers.get("Content-Length")
        encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        written = 0
        with open(part, "r+b" if start else "wb") as file:
            file.seek(start)
            file.truncate()
            for chunk in response.iter_content(chunk_size):
                file.write(chunk)
                written += len(chunk)
        if expected is not None and expected.isdigit() and not encoded and written != int(expected):
            raise _Incomplete(f"got {written} of {expected} bytes")
        return start + written

    return session.request(url, write, headers=headers)


# --- many files --------------------------------------------------------------------------------

@dataclass
class Job:
    """One file to fetch: ``url`` to ``dest``, with an optional ``verify`` callback and
    ``sha256``; ``meta`` travels to the :class:`Outcome` (e.g. the point and the view)."""

    url: str
    dest: Path
    verify: Callable | None = None
    sha256: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class Report:
    """Every :class:`Outcome` of a :func:`fetch_all`, in the order of its jobs."""

    outcomes: list[Outcome] = field(default_factory=list)

    def of(self, status: str) -> list[Outcome]:
        """The outcomes with this status (one of :data:`STATUSES`)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        return [o for o in self.outcomes if o.status == status]

    @property
    def fetched(self) -> list[Outcome]:
        return self.of("fetched")

    @property
    def skipped(self) -> list[Outcome]:
        return self.of("skipped")

    @property
    def missing(self) -> list[Outcome]:
        return self.of("missing")

    @property
    def failed(self) -> list[Outcome]:
        return self.of("failed")

    @property
    def ok(self) -> bool:
        """True when no file failed; files missing on the server (404) are allowed."""
        return not self.failed

    def counts(self) -> dict[str, int]:
        """``{status: number of files}`` for every status, zeros included."""
        return {status: len(self.of(status)) for status in STATUSES}

    def table(self):
        """A DataFrame: one row per file with ``url``, ``path``, ``status``, ``reason``, ``bytes``
        and the jobs' ``meta`` keys as columns."""
        import pandas as pd

        rows = [{**o.meta, "url": o.url, "path": str(o.path), "status": o.status, "reason": o.reason,
                 "bytes": o.bytes} for o in self.outcomes]
        return pd.DataFrame(rows, columns=list(dict.fromkeys(
            [k for o in self.outcomes for k in o.meta] + ["url", "path", "status", "reason", "bytes"])))

    def __str__(self) -> str:
        c = self.counts()
        lines = [f"{len(self.outcomes)} files: {c['fetched']} fetched, {c['skipped']} already complete, "
                 f"{c['missing']} missing on the server (404), {c['failed']} failed"]
        for outcome in self.failed[:5]:
            lines.append(f"  failed: {outcome.url}: {outcome.reason}")
        if c["failed"] > 5:
            lines.append(f"  ... and {c['failed'] - 5} more failed")
        return "\n".join(lines)


def fetch_all(jobs: Iterable[Job], *, session: Session | None = None, workers: int = 4,
              desc: str = "download", progress: bool = True, resume: bool = True) -> Report:
    """Run :func:`download` for every job in a pool of ``workers`` threads, behind a tqdm progress
    bar (``progress=False`` hides it), and return the :class:`Report` (one outcome per job, in
    order). Two jobs writing the same file raise ``ValueError`` before anything is fetched.
    ``session``: shared by the threads (a default one is made and closed when not given)."""
    from tqdm.auto import tqdm

    jobs = list(jobs)
    if workers < 1:
        raise ValueError("workers must be at least 1")
    seen: dict[Path, str] = {}
    for job in jobs:
        dest = Path(job.dest)
        if dest in seen:
            raise ValueError(f"two jobs write {dest}: {seen[dest]} and {job.url}")
        seen[dest] = job.url
    own = session is None
    session = Session(pool_size=workers) if own else session
    outcomes: list[Outcome | None] = [None] * len(jobs)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=len(jobs), desc=desc, unit="file", disable=not progress) as bar:
            futures = {pool.submit(download, job.url, job.dest, session=session, verify=job.verify,
                                   sha256=job.sha256, resume=resume, meta=job.meta): i
                       for i, job in enumerate(jobs)}
            counts = dict.fromkeys(STATUSES, 0)
            for future in as_completed(futures):
                outcome = future.result()
                outcomes[futures[future]] = outcome
                counts[outcome.status] += 1
                bar.update(1)
                bar.set_postfix(counts, refresh=False)
    finally:
        if own:
            session.close()
    return Report([o for o in outcomes if o is not None])


# --- checks to pass as verify= -----------------------------------------------------------------

def verify_jpeg(path) -> bool:
    """The file is a JPEG that decodes to its end (a truncated one raises). Decoded at reduced
    scale (libjpeg's DCT scaling), so the check is quick even for large photos."""
    from PIL import Image

    with Image.open(path) as image:
        if image.format != "JPEG":
            raise ValueError(f"not a JPEG but {image.format}")
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    return True


def verify_zip(path) -> bool:
    """The file is a zip whose directory (at its end, so a cut file fails) reads."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        if not archive.namelist():
            raise ValueError("empty zip")
    return True


def verify_geotiff(path) -> bool:
    """The file opens with rasterio and has at least one band."""
    import rasterio

    with rasterio.open(path) as src:
        if src.count < 1:
            raise ValueError("no band")
    return True


# --- the command line options every fetch command shares -------------------------------------

def add_http_arguments(group, workers: int = 4) -> None:
    """The download options every fetch command shares (workers, rate, retries, progress)."""
    group.add_argument("--workers", type=int, default=workers, help=f"downloads at once (default: {workers})")
    group.add_argument("--rate", type=float, default=5.0,
                       help="at most this many requests per second to one server (default: 5; 0: no limit)")
    group.add_argument("--retries", type=int, default=4,
                       help="tries after the first on 429, 5xx and dropped connections (default: 4)")
    group.add_argument("--backoff", type=float, default=1.0,
                       help="first wait before a retry in seconds, doubled at each retry (default: 1)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def session_from_args(args: argparse.Namespace) -> Session:
    """The :class:`Session` the shared options describe (checked)."""

    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.rate < 0 or args.retries < 0 or args.backoff < 0:
        raise UsageError("--rate, --retries and --backoff must be 0 or more")
    return Session(retries=args.retries, backoff=args.backoff, rate=args.rate or None,
                        pool_size=args.workers)
