"""The shared download core (habitat_helpers.fetch.http) against the local server."""

from __future__ import annotations

import email.utils
import hashlib
import time

import pytest

from habitat_helpers.fetch import http


def _session(**kw):
    return http.Session(**{"rate": None, "backoff": 0.0, "retries": 2, **kw})


def test_user_agent_names_the_package():
    import habitat_helpers

    with _session() as session:
        assert session.http.headers["User-Agent"].startswith(f"habitat_helpers/{habitat_helpers.__version__}")


def test_retry_delay_backoff_jitter_and_retry_after():
    session = http.Session(backoff=1.0, max_backoff=5.0, jitter=0.5, max_retry_after=30.0)
    for attempt, base in ((0, 1.0), (1, 2.0), (2, 4.0), (5, 5.0)):
        delays = [session.retry_delay(attempt) for _ in range(50)]
        assert all(base <= d <= 1.5 * base for d in delays)
    assert session.retry_delay(0, "7") == 7.0
    assert session.retry_delay(0, "9999") == 30.0                           # capped
    later = email.utils.formatdate(time.time() + 12, usegmt=True)
    assert 9.0 <= session.retry_delay(0, later) <= 12.0
    assert 1.0 <= session.retry_delay(0, "soon") <= 1.5                     # unreadable: the backoff


def test_rate_limit_spaces_requests_to_one_host(http_server):
    (http_server.root / "a.txt").write_text("a")
    slept = []
    with http.Session(rate=10.0, sleep=slept.append) as session:
        for _ in range(3):
            session.get(http_server.url("a.txt"))
    assert len(slept) == 2 and all(0.05 < s <= 0.2 for s in slept)


def test_download_statuses(tmp_path, http_server):
    (http_server.root / "f.bin").write_bytes(b"x" * 5000)
    good = hashlib.sha256(b"x" * 5000).hexdigest()
    with _session() as session:
        first = http.download(http_server.url("f.bin"), tmp_path / "f.bin", session=session, sha256=good)
        again = http.download(http_server.url("f.bin"), tmp_path / "f.bin", session=session, sha256=good)
        missing = http.download(http_server.url("nope.bin"), tmp_path / "nope.bin", session=session)
        wrong = http.download(http_server.url("f.bin"), tmp_path / "g.bin", session=session, sha256="0" * 64)
        rejected = http.download(http_server.url("f.bin"), tmp_path / "h.bin", session=session,
                                 verify=lambda path: False)
        http_server.fail("f.bin", 403)
        forbidden = http.download(http_server.url("f.bin"), tmp_path / "i.bin", session=session)
    assert (first.status, first.bytes, again.status) == ("fetched", 5000, "skipped")
    assert http_server.hits("f.bin") == 4                                  # the skip asked for nothing
    assert missing.status == "missing" and "404" in missing.reason
    assert wrong.status == "failed" and "sha256" in wrong.reason and not (tmp_path / "g.bin").exists()
    assert rejected.status == "failed" and not list(tmp_path.glob("h.bin*"))
    assert forbidden.status == "failed" and "HTTP 403" in forbidden.reason    # not retried


def test_retryable_statuses():
    assert all(http.retryable(s) for s in (408, 429, 500, 502, 503, 504))
    assert not any(http.retryable(s) for s in (400, 401, 403, 404, 501))


def test_fetch_all_report_in_job_order(tmp_path, http_server):
    for name in "abcde":
        (http_server.root / f"{name}.txt").write_text(name * 10)
    http_server.fail("c.txt", 503)
    jobs = [http.Job(http_server.url(f"{n}.txt"), tmp_path / f"{n}.txt", meta={"name": n}) for n in "abcdez"]
    report = http.fetch_all(jobs, session=_session(), workers=3, progress=False)
    assert [o.meta["name"] for o in report.outcomes] == list("abcdez")
    assert report.counts() == {"fetched": 5, "skipped": 0, "missing": 1, "failed": 0} and report.ok
    table = report.table()
    assert list(table.columns) == ["name", "url", "path", "status", "reason", "bytes"]
    assert "1 missing on the server" in str(report)
    again = http.fetch_all(jobs, session=_session(), workers=2, progress=False)
    assert again.counts()["skipped"] == 5


def test_fetch_all_refuses_two_jobs_for_one_file(tmp_path):
    jobs = [http.Job("http://127.0.0.1:9/a", tmp_path / "x"), http.Job("http://127.0.0.1:9/b", tmp_path / "x")]
    with pytest.raises(ValueError, match="two jobs write"):
        http.fetch_all(jobs, progress=False)
    with pytest.raises(ValueError, match="workers"):
        http.fetch_all([], workers=0, progress=False)


def test_connection_refused_is_failed_after_retries(tmp_path):
    slept = []
    with http.Session(rate=None, retries=2, backoff=0.01, sleep=slept.append) as session:
        outcome = http.download("http://127.0.0.1:9/none.bin", tmp_path / "n.bin", session=session)
    assert outcome.status == "failed" and "ConnectionError" in outcome.reason and "3 tries" in outcome.reason
    assert len(slept) == 2


def test_verify_jpeg_rejects_truncated(tmp_path):
    from PIL import Image

    path = tmp_path / "p.jpg"
    Image.new("RGB", (64, 48), (10, 120, 30)).save(path, "JPEG")
    assert http.verify_jpeg(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(OSError):
        http.verify_jpeg(path)


def test_fetch_modules_load_on_first_use_without_torch():
    import subprocess
    import sys

    code = ("import sys, habitat_helpers as hh; hh.fetch.lucas.fetch_lucas; hh.fetch.sentinel2.fetch_sentinel2; "
            "hh.fetch.covariates.fetch_covariates; hh.fetch.http.Session; "
            "print(sorted(m for m in ('torch', 'rasterio', 'pystac_client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
