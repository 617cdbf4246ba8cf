"""`run --audit-queue-size`: a bad value is a usage error before anything starts."""

from __future__ import annotations

import sys

import pytest

from tests.support.processes import run_cli

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("value", "why"), [("0", "must be at least 1"), ("many", "not an integer")]
)
def test_a_bad_queue_size_is_refused_with_its_reason(value: str, why: str) -> None:
    result = run_cli(
        "run",
        "--audit-queue-size",
        value,
        "--",
        sys.executable,
        "-c",
        "print('must not run')",
        check=False,
        timeout=50,
    )
    assert result.returncode == 2
    assert why in result.stderr
    assert "must not run" not in result.stdout
