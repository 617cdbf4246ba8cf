"""`run --audit-queue-size`: a bad value is a usage error before anything starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("value", "why"), [("0", "must be at least 1"), ("many", "not an integer")]
)
def test_a_bad_queue_size_is_refused_with_its_reason(value: str, why: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "boundary_audit",
            "run",
            "--audit-queue-size",
            value,
            "--",
            sys.executable,
            "-c",
            "print('must not run')",
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 2
    assert why in result.stderr
    assert "must not run" not in result.stdout
