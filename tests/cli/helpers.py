"""Running ``boundary-audit run`` as a user would, for the tests in tests/cli."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from boundary_audit.cli.config_file import CONFIG_ENV_VAR
from boundary_audit.cli.correlation import CODER_AGENT_URL_ENV
from boundary_audit.cli.options import ENV_VARS
from tests.support.processes import cli_argv

#: Bounds one ``boundary-audit run`` (a few requests); a hang fails the test.
RUN_TIMEOUT = 80
#: Variables a developer's shell may hold that would change what run does.
SETTINGS_VARS = (*ENV_VARS, CONFIG_ENV_VAR, CODER_AGENT_URL_ENV)


def clean_env(tmp: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without any boundary setting, with HOME and the CA dir
    under ``tmp`` (so no ~/.config/coder_boundary/config.yaml is picked up)."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(tmp / "config"))
    env.update(extra or {})
    return env


def run_boundary(
    args: Sequence[str], tmp: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``boundary-audit ARGS`` to completion, output captured (not a terminal)."""
    return subprocess.run(
        cli_argv(*args),
        env=clean_env(tmp, env),
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT,
    )


def client_command(urls: Sequence[str]) -> list[str]:
    """A command that GETs each URL through the proxy and prints ``STATUS URL``
    for each (a 403 from the proxy included), then ``done``."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "for url in sys.argv[1:]:\n"
        "    try:\n"
        "        status = urllib.request.urlopen(url).status\n"
        "    except urllib.error.HTTPError as e:\n"
        "        status = e.code\n"
        "    print(status, url, flush=True)\n"
        "print('done', flush=True)\n"
    )
    return [sys.executable, "-c", script, *urls]


def expected_output(urls_and_status: Sequence[tuple[str, int]]) -> str:
    """What :func:`client_command` prints for these results."""
    return "".join(f"{status} {url}\n" for url, status in urls_and_status) + "done\n"


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """The run stopped before COMMAND (an ``echo must not run``) with exit 2
    and a message holding every fragment."""
    assert result.returncode == 2, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert "must not run" not in result.stdout
