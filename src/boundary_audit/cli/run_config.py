"""Settings of ``boundary-audit run``: allow rules and options from the command
line, the environment and a YAML file, plus the session's identity.

Rules are returned as strings in a stable order (config file, then
``BOUNDARY_ALLOW``, then ``--allow``; exact duplicates dropped); parsing them
is the rule engine's job (``parse_rules``), so its errors stay in one place.

``BOUNDARY_ALLOW`` holds one rule per line. Newline and not ``;`` or ``,``:
rules contain spaces and commas, and URL paths may contain ``;``, so any of
those as a separator could silently split ``domain=x path=/a;method=GET`` into
a much broader rule. Blank lines are ignored.

The YAML file is a mapping::

    allow:                      # list of rule strings (or a single string)
      - domain=github.com
      - method=GET domain=*.pythonhosted.org
    session_header_domains: [api.example.com]
    log_level: info             # debug | info | warning | error
    socket_path: /run/boundary/audit.sock
    disable_audit_socket: false
    require_enforcement: true
    isolate_network: false      # private network namespace, proxy only
    process_name: claude-code

Unknown keys are errors (a typo such as ``alow`` must not silently drop every
rule). Command-line flags override the file's scalar settings.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..logs import LOG_LEVELS

#: Environment variable with extra allow rules, one per line.
ALLOW_ENV_VAR = "BOUNDARY_ALLOW"
#: Refuse config files larger than this: a rules file is a few KiB, and a
#: huge file is a mistake (wrong path) better reported than parsed.
MAX_CONFIG_BYTES = 1 << 20
#: Longest accepted confined process name; it travels in every batch to the
#: collector and is shown in tables, so it should stay a short label.
MAX_PROCESS_NAME_CHARS = 128


class ConfigError(ValueError):
    """A configuration source is invalid; the message names the file and key."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.key = key
        where = ": ".join(part for part in (source, f"key {key!r}" if key else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True, slots=True)
class FileConfig:
    """What a YAML config file says; ``None`` means "not set there"."""

    allow: tuple[str, ...] = ()
    session_header_domains: tuple[str, ...] = ()
    log_level: str | None = None
    socket_path: str | None = None
    disable_audit_socket: bool | None = None
    require_enforcement: bool | None = None
    isolate_network: bool | None = None
    process_name: str | None = None


_KNOWN_KEYS = frozenset(FileConfig.__dataclass_fields__)


def _string_list(value: object, source: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(
            f"expected a list of strings, got {type(value).__name__}", source=source, key=key
        )
    items: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(
                f"expected a string, got {type(item).__name__} ({item!r})",
                source=source,
                key=f"{key}[{index}]",
            )
        if not item.strip():
            raise ConfigError("empty string", source=source, key=f"{key}[{index}]")
        items.append(item.strip())
    return tuple(items)


def _optional_str(value: object, source: str, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"expected a non-empty string, got {value!r}", source=source, key=key)
    return value.strip()


def _optional_bool(value: object, source: str, key: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ConfigError(f"expected true or false, got {value!r}", source=source, key=key)


def parse_config_text(text: str, source: str = "<config>") -> FileConfig:
    """Validate the YAML document ``text``; errors name ``source`` and the key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {at}{problem}", source=source) from exc
    if data is None:
        return FileConfig()
    if not isinstance(data, dict):
        raise ConfigError(
            f"top level must be a mapping of settings, got {type(data).__name__}", source=source
        )
    for key in data:
        if key not in _KNOWN_KEYS:
            known = ", ".join(sorted(_KNOWN_KEYS))
            raise ConfigError(f"unknown setting (known: {known})", source=source, key=str(key))
    log_level = _optional_str(data.get("log_level"), source, "log_level")
    if log_level is not None:
        log_level = log_level.lower()
        if log_level not in LOG_LEVELS:
            raise ConfigError(
                f"expected one of {', '.join(LOG_LEVELS)}, got {data['log_level']!r}",
                source=source,
                key="log_level",
            )
    process_name = _optional_str(data.get("process_name"), source, "process_name")
    if process_name is not None:
        try:
            process_name = validate_process_name(process_name)
        except ConfigError as exc:
            raise ConfigError(str(exc), source=source, key="process_name") from exc
    return FileConfig(
        allow=_string_list(data.get("allow", []), source, "allow"),
        session_header_domains=_string_list(
            data.get("session_header_domains", []), source, "session_header_domains"
        ),
        log_level=log_level,
        socket_path=_optional_str(data.get("socket_path"), source, "socket_path"),
        disable_audit_socket=_optional_bool(
            data.get("disable_audit_socket"), source, "disable_audit_socket"
        ),
        require_enforcement=_optional_bool(
            data.get("require_enforcement"), source, "require_enforcement"
        ),
        isolate_network=_optional_bool(data.get("isolate_network"), source, "isolate_network"),
        process_name=process_name,
    )


def load_config_file(path: str | os.PathLike[str]) -> FileConfig:
    """Read and validate a YAML config file (``--config FILE``)."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", source=source) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file is larger than {MAX_CONFIG_BYTES} bytes", source=source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text: {exc.reason} at byte {exc.start}", source=source
        ) from exc
    return parse_config_text(text, source)


def rules_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """Allow rules from ``BOUNDARY_ALLOW`` (one per line, blank lines ignored)."""
    env = os.environ if environ is None else environ
    value = env.get(ALLOW_ENV_VAR, "")
    return [line.strip() for line in value.splitlines() if line.strip()]


def collect_rules(
    cli_allow: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    file_config: FileConfig | None = None,
) -> list[str]:
    """All rule strings: config file, then ``BOUNDARY_ALLOW``, then ``--allow``.

    Exact duplicates are dropped (first kept) so the same rule given twice does
    not show up twice in logs; an empty ``--allow ""`` is an error rather than
    being ignored, since it most likely is an unset shell variable.
    """
    rules: list[str] = []
    if file_config is not None:
        rules.extend(file_config.allow)
    rules.extend(rules_from_env(environ))
    for rule in cli_allow:
        if not rule.strip():
            raise ConfigError("empty rule", source="--allow")
        rules.append(rule.strip())
    return list(dict.fromkeys(rules))


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
    name = name.strip()
    if not name:
        raise ConfigError("process name is empty")
    if len(name) > MAX_PROCESS_NAME_CHARS:
        raise ConfigError(f"process name is longer than {MAX_PROCESS_NAME_CHARS} characters")
    if not name.isprintable():
        raise ConfigError(f"process name {name!r} contains control characters")
    return name


def process_name_from_command(command: Sequence[str], override: str | None = None) -> str:
    """The confined process name: ``override`` if given, else the basename of
    ``COMMAND``'s argv[0] (``/usr/bin/git`` -> ``git``)."""
    if override is not None:
        return validate_process_name(override)
    if not command or not command[0]:
        raise ConfigError("no command given to derive the process name from")
    return validate_process_name(Path(command[0]).name or command[0])


@dataclass(frozen=True, slots=True)
class RunSettings:
    """Everything ``boundary-audit run`` needs besides COMMAND, resolved from
    flags, environment and config file. ``log_level`` is ``None`` when only
    the root ``--log-level`` applies."""

    rules: tuple[str, ...]
    session_id: str
    process_name: str
    session_header_domains: tuple[str, ...] = ()
    log_level: str | None = None
    socket_path: str | None = None
    disable_audit_socket: bool = False
    require_enforcement: bool = False
    isolate_network: bool = False


def resolve_run_settings(
    command: Sequence[str],
    *,
    cli_allow: Iterable[str] = (),
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    session_header_domains: Iterable[str] = (),
    socket_path: str | None = None,
    disable_audit_socket: bool | None = None,
    require_enforcement: bool | None = None,
    isolate_network: bool | None = None,
    process_name: str | None = None,
    session_id: str | None = None,
) -> RunSettings:
    """Merge the sources: flags (``None``/empty = not given) win over the
    config file's scalars; rules and session-header domains are combined."""
    file_config = load_config_file(config_path) if config_path is not None else FileConfig()
    domains = (*file_config.session_header_domains, *session_header_domains)
    return RunSettings(
        rules=tuple(collect_rules(cli_allow, environ, file_config)),
        session_id=validate_session_id(session_id) if session_id else new_session_id(),
        process_name=process_name_from_command(
            command, process_name if process_name is not None else file_config.process_name
        ),
        session_header_domains=tuple(dict.fromkeys(d.strip() for d in domains if d.strip())),
        log_level=file_config.log_level,
        socket_path=socket_path if socket_path is not None else file_config.socket_path,
        disable_audit_socket=bool(
            disable_audit_socket
            if disable_audit_socket is not None
            else file_config.disable_audit_socket
        ),
        require_enforcement=bool(
            require_enforcement
            if require_enforcement is not None
            else file_config.require_enforcement
        ),
        isolate_network=bool(
            isolate_network if isolate_network is not None else file_config.isolate_network
        ),
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``boundary-audit run`` that this module resolves, plus
    ``COMMAND [ARGS...]`` (after ``--``)."""
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="RULE",
        help="allow rule, e.g. 'domain=github.com' (repeatable; also env "
        f"{ALLOW_ENV_VAR}, one rule per line)",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config file (allow: [...], ...)")
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
        metavar="DOMAIN",
        help="inject the session id and sequence number into allowed requests to DOMAIN",
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
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")


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
    return resolve_run_settings(
        command_from_args(args),
        cli_allow=args.allow,
        config_path=args.config,
        environ=environ,
        session_header_domains=args.session_header,
        socket_path=args.socket_path,
        disable_audit_socket=args.disable_audit_socket,
        require_enforcement=args.require_enforcement,
        isolate_network=args.isolate_network,
        process_name=args.process_name,
        session_id=args.session_id,
    )
