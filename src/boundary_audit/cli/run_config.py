"""Settings of ``boundary-audit run``, merged from flags, the environment and
a YAML config file, plus the session's identity.

Precedence is flag > environment variable > config file > default, one
option at a time; list options (allow rules, session-header targets) are
combined instead, in the order config file, environment, flags (exact
duplicates dropped). Which spellings exist is :mod:`.options`; where the
file is, :mod:`.config_file`; session correlation, :mod:`.correlation`.
Rules are returned as strings; parsing them is the rule engine's job
(``parse_rules``), so its errors stay in one place.

``BOUNDARY_ALLOW`` holds one rule per line (see :func:`.options.parse_lines`);
a one-line value means the same as in Coder boundary, which takes the whole
variable as a single rule.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config_file import CONFIG_ENV_VAR, MAX_CONFIG_BYTES, find_config_file, load_config_file
from .correlation import SessionCorrelation, resolve_correlation
from .options import (
    LIST_OPTIONS,
    MAX_PROCESS_NAME_CHARS,
    ConfigError,
    Layer,
    env_layer,
    extend,
    flag_layer,
    parse_process_name,
)

#: Environment variable with extra allow rules, one per line.
ALLOW_ENV_VAR = "BOUNDARY_ALLOW"
#: Coder boundary's default: warnings and errors only, so the terminal the
#: confined program draws on (claude, codex...) stays its own.
DEFAULT_LOG_LEVEL = "warning"


@dataclass(frozen=True, slots=True)
class RunSettings:
    """Everything ``boundary-audit run`` needs besides COMMAND.

    ``origins`` says where each option given came from (``--jail-type``,
    ``environment variable PROXY_PORT``, ``FILE: key 'proxy_port'``), for
    messages; ``notices`` are warnings to log once logging is set up.
    """

    rules: tuple[str, ...]
    session_id: str
    process_name: str
    correlation: SessionCorrelation = field(default_factory=SessionCorrelation)
    log_level: str = DEFAULT_LOG_LEVEL
    log_dir: str | None = None
    proxy_port: int = 0
    socket_path: str | None = None
    disable_audit_socket: bool = False
    require_enforcement: bool = False
    isolate_network: bool = False
    config_path: str | None = None
    origins: Mapping[str, str] = field(default_factory=dict)
    notices: tuple[str, ...] = ()


def merge_layers(*layers: Layer) -> Layer:
    """Later layers win option by option; list options are concatenated."""
    merged: Layer = {}
    for layer in layers:
        for name, given in layer.items():
            merged[name] = extend(merged.get(name), given) if name in LIST_OPTIONS else given
    return merged


def new_session_id() -> str:
    """A fresh session id (random UUID4, canonical text form) for one run."""
    return str(uuid.uuid4())


def validate_session_id(value: str) -> str:
    """A caller-chosen session id (e.g. to correlate with a CI job) must be a UUID."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ConfigError(f"--session-id must be a UUID, got {value!r}") from None


def validate_process_name(name: str) -> str:
    """Check a confined process name is a short printable label."""
    try:
        return parse_process_name(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def process_name_from_command(command: Sequence[str], override: str | None = None) -> str:
    """The confined process name: ``override`` if given, else the basename of
    ``COMMAND``'s argv[0] (``/usr/bin/git`` -> ``git``)."""
    if override is not None:
        return validate_process_name(override)
    if not command or not command[0]:
        raise ConfigError("no command given to derive the process name from")
    return validate_process_name(Path(command[0]).name or command[0])


#: Settings network isolation cannot honour, with what to do instead.
_ISOLATION_CONFLICTS = {
    "use_real_dns": (
        "the command's private network namespace has no DNS (the proxy resolves names). "
        "Drop use_real_dns (proxy-aware clients need no DNS), or drop the isolation: "
        "under the default Landlock confinement (jail_type: landjail) DNS is the host's"
    ),
    "no_user_namespace": (
        "network isolation runs the command in a user namespace and cannot do without one; "
        "use the default Landlock confinement (jail_type: landjail), which needs none"
    ),
}


def _check_isolation(merged: Layer) -> None:
    isolate = merged.get("isolate_network")
    if isolate is None or isolate.value is not True:
        return
    for name, why in _ISOLATION_CONFLICTS.items():
        given = merged.get(name)
        if given is not None and given.value is True:
            raise ConfigError(
                f"{given.origin} ({given.raw!r}) conflicts with {isolate.origin} "
                f"({isolate.raw!r}, network isolation): {why}"
            )


def _value(merged: Layer, name: str, default: object) -> object:
    given = merged.get(name)
    return default if given is None else given.value


def resolve_run_settings(
    command: Sequence[str],
    *,
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunSettings:
    """Merge the sources for ``command``. ``flags`` is an argparse namespace's
    ``vars()`` (``None``/``[]`` = not given), ``environ`` defaults to the
    process environment; ``ConfigError`` names the source of a bad value."""
    given_flags = dict(flags or {})
    env = os.environ if environ is None else environ
    config_arg = given_flags.get("config")
    path, how = find_config_file(str(config_arg) if config_arg else None, env)
    file = load_config_file(path) if path is not None else {}
    merged = merge_layers(file, env_layer(env), flag_layer(given_flags))
    _check_isolation(merged)
    correlation, notices = resolve_correlation(
        enabled=merged.get("session_correlation"),
        session_headers=merged.get("session_headers"),
        inject_targets=merged.get("inject_targets"),
        session_id_header=merged.get("session_id_header"),
        sequence_number_header=merged.get("sequence_number_header"),
        environ=env,
    )
    session_id = given_flags.get("session_id")
    rules = _value(merged, "rules", ())
    assert isinstance(rules, tuple)
    name = _value(merged, "process_name", None)
    return RunSettings(
        rules=tuple(dict.fromkeys(str(rule) for rule in rules)),
        session_id=validate_session_id(str(session_id)) if session_id else new_session_id(),
        process_name=process_name_from_command(command, None if name is None else str(name)),
        correlation=correlation,
        log_level=str(_value(merged, "log_level", DEFAULT_LOG_LEVEL)),
        log_dir=_optional_str(_value(merged, "log_dir", None)),
        proxy_port=int(str(_value(merged, "proxy_port", 0))),
        socket_path=_optional_str(_value(merged, "socket_path", None)),
        disable_audit_socket=_value(merged, "disable_audit_socket", False) is True,
        require_enforcement=_value(merged, "require_enforcement", False) is True,
        isolate_network=_value(merged, "isolate_network", False) is True,
        config_path=None if path is None else os.fspath(path),
        origins={
            **({"config": how} if path is not None else {}),
            **{option: given.origin for option, given in merged.items()},
        },
        notices=notices,
    )


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``boundary-audit run`` that this module resolves, plus
    ``COMMAND [ARGS...]`` (after ``--``). Values are parsed by the layers, so
    a bad one is reported like a bad config key (exit 2, naming the flag)."""
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="RULE",
        help="allow rule, e.g. 'domain=github.com' (repeatable; also env "
        f"{ALLOW_ENV_VAR}, one rule per line)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML config file (default: ${CONFIG_ENV_VAR}, else "
        "~/.config/coder_boundary/config.yaml when it exists)",
    )
    parser.add_argument(
        "--require-enforcement",
        action="store_true",
        default=None,
        help="refuse to run when Landlock cannot confine the command's network access",
    )
    parser.add_argument(
        "--isolate-network",
        action="store_true",
        default=None,
        help="also run the command in a private network namespace where only the proxy "
        "is reachable (no other host on its port, no UDP/DNS); needs user namespaces",
    )
    parser.add_argument(
        "--process-name", metavar="NAME", help="confined process name (default: COMMAND's name)"
    )
    parser.add_argument(
        "--session-id",
        metavar="UUID",
        help="session id for this run's events (default: a new random UUID)",
    )
    parser.add_argument(
        "--session-header",
        action="append",
        default=[],
        metavar="TARGET",
        help="inject the session id and sequence number into allowed requests to TARGET: "
        "a DOMAIN (and its subdomains) or a rule such as 'domain=api.example.com path=/v1/*'",
    )
    parser.add_argument(
        "--session-id-header", metavar="NAME", help="name of the injected session id header"
    )
    parser.add_argument(
        "--sequence-number-header",
        metavar="NAME",
        help="name of the injected sequence number header",
    )
    parser.add_argument(
        "--audit-socket", dest="socket_path", metavar="PATH", help="agent Unix socket path"
    )
    parser.add_argument(
        "--no-audit-socket",
        dest="disable_audit_socket",
        action="store_true",
        default=None,
        help="log audit events only; do not send them to the agent",
    )
    parser.add_argument(
        "--log-dir", metavar="DIR", help="also write the full log, JSON lines, to a file per run"
    )
    parser.add_argument(
        "--proxy-port", metavar="PORT", help="listen on this port (default: a random free one)"
    )
    _add_coder_arguments(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")


def _add_coder_arguments(parser: argparse.ArgumentParser) -> None:
    """Coder boundary's flags that have no name of ours (docs/run.md says how
    each maps, or why it is refused)."""
    coder = parser.add_argument_group("Coder boundary's flags")
    coder.add_argument("--log-proxy-socket-path", metavar="PATH", help="the same as --audit-socket")
    coder.add_argument(
        "--disable-audit-logs",
        action="store_true",
        default=None,
        help="the same as --no-audit-socket",
    )
    coder.add_argument(
        "--jail-type",
        metavar="TYPE",
        help="landjail: the default Landlock confinement; nsjail: --isolate-network",
    )
    coder.add_argument(
        "--enable-session-correlation",
        dest="session_correlation",
        action="store_true",
        default=None,
        help="inject session headers into requests to the inject targets "
        "(default target from CODER_AGENT_URL)",
    )
    coder.add_argument(
        "--session-id-inject-target",
        dest="inject_target",
        action="append",
        default=[],
        metavar="RULE",
        help="inject target, e.g. 'domain=dev.coder.com path=/api/v2/aibridge/*' (repeatable)",
    )
    coder.add_argument(
        "--use-real-dns",
        action="store_true",
        default=None,
        help="accepted without isolation (DNS is the host's); refused with it",
    )
    coder.add_argument(
        "--no-user-namespace",
        action="store_true",
        default=None,
        help="accepted without isolation (none is made); refused with it",
    )
    coder.add_argument(
        "--pprof", action="store_true", default=None, help="refused: there is no pprof server"
    )
    coder.add_argument("--pprof-port", metavar="PORT", help="accepted; unused without --pprof")


def command_from_args(args: argparse.Namespace) -> list[str]:
    """COMMAND and its arguments, without the ``--`` that introduces them."""
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ConfigError("no command given: boundary-audit run [OPTIONS] -- COMMAND [ARGS...]")
    return command


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> RunSettings:
    """Resolve :class:`RunSettings` from a namespace built by
    :func:`add_run_arguments`."""
    return resolve_run_settings(command_from_args(args), flags=vars(args), environ=environ)


__all__ = [
    "ALLOW_ENV_VAR",
    "DEFAULT_LOG_LEVEL",
    "MAX_CONFIG_BYTES",
    "MAX_PROCESS_NAME_CHARS",
    "ConfigError",
    "RunSettings",
    "add_run_arguments",
    "command_from_args",
    "load_config_file",
    "merge_layers",
    "new_session_id",
    "process_name_from_command",
    "resolve_run_settings",
    "settings_from_args",
    "validate_process_name",
    "validate_session_id",
]
