"""Running a client through ``boundary-audit run`` and reading what it audited."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.cli.helpers import run_boundary


def run_client(
    tmp: Path,
    rules: Sequence[str],
    command: Sequence[str],
    upstream_ca_file: str,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], list[tuple[str, str, str]]]:
    """``boundary-audit run`` COMMAND with ``rules``; its output and the
    audited (decision, method, url) of every request, in order."""
    logs = tmp / "logs"
    args = ["run", "--no-audit-socket", "--log-dir", str(logs)]
    args += ["--upstream-ca-file", upstream_ca_file]
    for rule in rules:
        args += ["--allow", rule]
    result = run_boundary([*args, "--", *command], tmp, env)
    records: list[dict[str, Any]] = [
        json.loads(line) for path in logs.glob("*.jsonl") for line in path.read_text().splitlines()
    ]
    audited = [
        (r["decision"], r["method"], r["url"]) for r in records if r.get("event") == "http_request"
    ]
    return result, audited


def python(script: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script)]
