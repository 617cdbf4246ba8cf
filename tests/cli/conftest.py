"""Fixtures of the tests of ``boundary-audit run``: a real local upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.proxy.helpers import Upstream, serve_upstream


@pytest.fixture(scope="module")
def http_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with serve_upstream("http", None, tmp_path_factory.mktemp("http")) as upstream:
        yield upstream
