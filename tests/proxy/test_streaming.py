"""Large bodies stream through in both directions without being buffered."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psutil
import pytest

from boundary_audit.proxy import CertificateAuthority

from .helpers import LARGE_BODY, ProxyFactory, Upstream, curl

pytestmark = pytest.mark.timeout(60)

#: Allowed RSS growth while LARGE_BODY streams: a fraction of the body size.
RSS_GROWTH_LIMIT = 20 * 1024 * 1024
#: How often RSS is sampled: often enough to catch a peak of a body passing
#: at hundreds of MB/s, rarely enough not to slow it down.
RSS_SAMPLE_INTERVAL = 0.02


class _PeakRss:
    """Samples this process's RSS in a thread; the proxy runs in this process."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_INTERVAL):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


@pytest.mark.timeout(120)
def test_large_download_streams_without_buffering(
    make_proxy: ProxyFactory, https_upstream: Upstream, ca: CertificateAuthority
) -> None:
    proxy = make_proxy("domain=localhost")
    url = https_upstream.url(f"/stream/{LARGE_BODY}?sized=1", host="localhost")
    with _PeakRss() as rss:
        result = curl(proxy, ca, "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url)
    assert result.stdout == f"200 {LARGE_BODY}", result.stderr
    assert rss.growth < RSS_GROWTH_LIMIT, f"RSS grew by {rss.growth / 2**20:.1f} MiB"


@pytest.mark.timeout(120)
def test_large_upload_streams_without_buffering(
    make_proxy: ProxyFactory, http_upstream: Upstream, ca: CertificateAuthority, tmp_path: Path
) -> None:
    import hashlib

    proxy = make_proxy("domain=127.0.0.1")
    blob = tmp_path / "blob"
    chunk = bytes(range(256)) * 4096
    digest = hashlib.sha256()
    with blob.open("wb") as handle:
        for _ in range(LARGE_BODY // len(chunk)):
            handle.write(chunk)
            digest.update(chunk)
    with _PeakRss() as rss:
        result = curl(proxy, ca, "--data-binary", f"@{blob}", http_upstream.url("/upload"))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["body_length"] == LARGE_BODY
    assert record["body_sha256"] == digest.hexdigest()
    assert rss.growth < RSS_GROWTH_LIMIT, f"RSS grew by {rss.growth / 2**20:.1f} MiB"
