"""The Node.js rows of the client matrix (issue 13 item 3), on what Node 20
(Debian's ``nodejs``) and npm 11 offer: ``npm install`` from a local HTTPS
registry, ``ws`` through ``https-proxy-agent``, and ``fetch`` through
undici's ``EnvHttpProxyAgent`` / ``ProxyAgent``; the built-in ``fetch``
with ``NODE_USE_ENV_PROXY`` alone on Node >= 22.21, and on older Node the
same fetch refused by Landlock (its attempt audited, nothing sent).

The npm packages come from ``scripts/node-deps.sh`` (run once at set-up
time, into :func:`node_deps_dir`); the tests never reach the network. Each
is allowed, denied, and audited with its method and URL. ``ws`` and npm
reach the servers by the name ``localhost`` (see ``servers.LOCALHOST``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.confine.helpers import requires_landlock
from tests.proxy.helpers import Upstream
from tests.proxy.ws_echo import EchoServer

from .helpers import run_client
from .servers import LOCALHOST, NPM_PACKAGE, NPM_VERSION, Served

pytestmark = pytest.mark.timeout(120)

#: Node.js gained NODE_USE_ENV_PROXY (fetch through the proxy variables) in 22.21 and 24.
NODE_ENV_PROXY_SINCE = (22, 21)
#: Where scripts/node-deps.sh installs (the same default and variable).
NODE_DEPS_ENV = "BOUNDARY_AUDIT_NODE_DEPS"
NODE_DEPS_DEFAULT = "boundary-audit-node"
#: The packages the script pins; a test needs all of them.
NODE_DEPS = ("ws", "https-proxy-agent", "undici")
#: npm's flags for a test: no audit, fund or update-check requests (they
#: would be audited requests of their own), and no retries, so a 403 fails
#: at once instead of after npm's back-off of about a minute.
NPM_FLAGS = ("--no-audit", "--no-fund", "--no-update-notifier", "--fetch-retries=0")

#: A proxy nothing listens on (the discard port), in the user's npmrc.
DEAD_PROXY = "http://127.0.0.1:9/"


def node_deps_dir() -> Path:
    if os.environ.get(NODE_DEPS_ENV):
        return Path(os.environ[NODE_DEPS_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / NODE_DEPS_DEFAULT


def _node_version() -> tuple[int, ...] | None:
    node = shutil.which("node")
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return tuple(int(p) for p in out.stdout.strip().lstrip("v").split(".")[:2])


@pytest.fixture(scope="module")
def node_path() -> str:
    """NODE_PATH holding the pinned packages; skips only without Node.js."""
    if shutil.which("node") is None:
        pytest.skip("Node.js absent (Debian's nodejs package is not installed)")
    modules = node_deps_dir() / "node_modules"
    missing = [name for name in NODE_DEPS if not (modules / name / "package.json").is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing in {modules}: run scripts/node-deps.sh first")
    return str(modules)


def node(script: str) -> list[str]:
    """A CommonJS script (``require`` resolves through NODE_PATH) in an async
    function; a rejection prints the error and exits 1."""
    body = textwrap.dedent(script)
    return [
        "node",
        "-e",
        f"(async () => {{{body}}})().catch((e) => {{ console.error(e); process.exit(1) }})",
    ]


def _npm_install(
    tmp: Path, registry: Served, rules: Sequence[str], upstream_ca_file: str
) -> tuple[subprocess.CompletedProcess[str], list[tuple[str, str, str]], Path]:
    """``npm install ba-probe`` into a fresh project under ``tmp`` (npm's
    cache is under the run's own HOME there, so nothing is cached across runs)."""
    tmp.mkdir()
    # A user's npmrc naming another proxy: the run's settings outrank it.
    (tmp / "home").mkdir()
    (tmp / "home" / ".npmrc").write_text(f"proxy={DEAD_PROXY}\nhttps-proxy={DEAD_PROXY}\n")
    project = tmp / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "p", "version": "1.0.0"}))
    npm = ["npm", "install", NPM_PACKAGE, "--registry", registry.url("/"), *NPM_FLAGS]
    script = f"cd {project} && {' '.join(npm)} && echo installed || echo refused"
    result, audited = run_client(tmp, rules, ["sh", "-c", script], upstream_ca_file)
    return result, audited, project / "node_modules" / NPM_PACKAGE / "index.js"


def test_npm_install_from_a_local_registry(
    tmp_path: Path, npm_registry: Served, upstream_ca_file: str
) -> None:
    document = npm_registry.url(f"/{NPM_PACKAGE}")
    tarball = npm_registry.url(f"/{NPM_PACKAGE}/-/{NPM_PACKAGE}-{NPM_VERSION}.tgz")
    rules = [f"domain={LOCALHOST} path=/{NPM_PACKAGE},/{NPM_PACKAGE}/-/*"]
    result, audited, installed = _npm_install(
        tmp_path / "allowed", npm_registry, rules, upstream_ca_file
    )
    assert result.stdout.endswith("installed\n"), result.stdout + result.stderr
    assert "installed through the proxy" in installed.read_text()
    assert audited == [("allow", "GET", document), ("allow", "GET", tarball)]

    # The document is allowed, the tarball is not: npm gets the 403 and installs nothing.
    rules = [f"domain={LOCALHOST} path=/{NPM_PACKAGE}"]
    result, audited, installed = _npm_install(
        tmp_path / "denied", npm_registry, rules, upstream_ca_file
    )
    assert result.stdout.endswith("refused\n"), result.stdout + result.stderr
    assert f"403 Forbidden - GET {tarball}" in result.stderr
    assert not installed.exists()
    assert audited == [("allow", "GET", document), ("deny", "GET", tarball)]


def test_ws_through_https_proxy_agent(
    tmp_path: Path, wss_echo: EchoServer, upstream_ca_file: str, node_path: str
) -> None:
    ok = f"wss://{LOCALHOST}:{wss_echo.port}/echo"
    denied = f"wss://{LOCALHOST}:{wss_echo.port}/secret"
    script = f"""
        const WebSocket = require("ws");
        const {{ HttpsProxyAgent }} = require("https-proxy-agent");
        const agent = new HttpsProxyAgent(process.env.HTTPS_PROXY);
        const open = (url) => new Promise((resolve, reject) => {{
            const ws = new WebSocket(url, {{ agent }});
            ws.once("open", () => resolve(ws));
            ws.once("error", reject);
        }});
        const ws = await open({json.dumps(ok)});
        ws.send("through the proxy");
        const echoed = await new Promise((resolve) => ws.once("message", resolve));
        console.log(echoed.toString());
        ws.close();
        try {{
            await open({json.dumps(denied)});
        }} catch (e) {{
            console.log(e.message);
        }}
    """
    result, audited = run_client(
        tmp_path,
        [f"domain={LOCALHOST} path=/echo"],
        node(script),
        upstream_ca_file,
        {"NODE_PATH": node_path},
    )
    assert result.stdout == "through the proxy\nUnexpected server response: 403\n", result.stderr
    assert audited == [("allow", "GET", ok), ("deny", "GET", denied)]


#: Two ways undici (the npm package) sends fetch through the proxy on Node 20:
#: the built-in fetch after setGlobalDispatcher (Node's bundled undici reads
#: the same global), and undici's own fetch with a ProxyAgent per request.
UNDICI_FETCH = {
    "global-EnvHttpProxyAgent": (
        'const { EnvHttpProxyAgent, setGlobalDispatcher } = require("undici");\n'
        "setGlobalDispatcher(new EnvHttpProxyAgent());\n"
        "const get = (url, init) => fetch(url, init);\n"
    ),
    "undici-ProxyAgent": (
        'const { fetch: undiciFetch, ProxyAgent } = require("undici");\n'
        "const dispatcher = new ProxyAgent(process.env.HTTPS_PROXY);\n"
        "const get = (url, init) => undiciFetch(url, { ...init, dispatcher });\n"
    ),
}


@pytest.mark.parametrize("way", sorted(UNDICI_FETCH))
def test_fetch_through_undici(
    way: str, tmp_path: Path, https_upstream: Upstream, upstream_ca_file: str, node_path: str
) -> None:
    ok, denied = https_upstream.url("/allowed"), https_upstream.url("/denied")
    post = "{ method: 'POST', body: 'x'.repeat(1000) }"
    script = UNDICI_FETCH[way] + (
        f"const posted = await get({json.dumps(ok)}, {post});\n"
        "console.log((await posted.json()).body_length);\n"
        f"console.log((await get({json.dumps(denied)})).status);\n"
    )
    result, audited = run_client(
        tmp_path,
        ["domain=127.0.0.1 path=/allowed"],
        node(script),
        upstream_ca_file,
        {"NODE_PATH": node_path},
    )
    assert result.stdout == "1000\n403\n", result.stderr
    assert audited == [("allow", "POST", ok), ("deny", "GET", denied)]


def test_builtin_fetch_with_node_use_env_proxy(
    tmp_path: Path, https_upstream: Upstream, upstream_ca_file: str
) -> None:
    version = _node_version()
    if version is None or version < NODE_ENV_PROXY_SINCE:
        pytest.skip(
            f"Node.js {version or 'absent'}: the built-in fetch honours the proxy variables "
            "alone only from 22.21 (NODE_USE_ENV_PROXY); on older Node see "
            "test_fetch_through_undici"
        )
    ok, denied = https_upstream.url("/allowed"), https_upstream.url("/denied")
    script = f"for (const u of [{ok!r}, {denied!r}]) console.log((await fetch(u)).status)"
    result, audited = run_client(
        tmp_path,
        ["domain=127.0.0.1 path=/allowed"],
        ["node", "--input-type=module", "-e", script],
        upstream_ca_file,
    )
    assert result.stdout == "200\n403\n", result.stderr
    assert audited == [("allow", "GET", ok), ("deny", "GET", denied)]


@requires_landlock
def test_builtin_fetch_without_a_dispatcher_goes_nowhere(
    tmp_path: Path, https_upstream: Upstream, upstream_ca_file: str
) -> None:
    """Node 20's fetch ignores the proxy variables: under Landlock its direct
    connect is refused, nothing reaches the server, and the attempt is
    audited as a denied ``CONNECT`` (docs/security.md)."""
    version = _node_version()
    if version is None or version >= NODE_ENV_PROXY_SINCE:
        pytest.skip(
            f"Node.js {version or 'absent'}: with NODE_USE_ENV_PROXY the built-in fetch "
            "goes through the proxy (test_builtin_fetch_with_node_use_env_proxy)"
        )
    ok = https_upstream.url("/allowed")
    script = f"""
        try {{
            console.log((await fetch({json.dumps(ok)})).status);
        }} catch (e) {{
            console.log(e.cause?.code);
        }}
    """
    hits = len(https_upstream.hits)
    result, audited = run_client(
        tmp_path, ["domain=127.0.0.1 path=/allowed"], node(script), upstream_ca_file
    )
    assert result.stdout.strip() in {"EACCES", "EPERM"}, result.stdout + result.stderr
    assert len(https_upstream.hits) == hits
    assert audited == [("deny", "CONNECT", f"tcp://127.0.0.1:{https_upstream.port}")]
