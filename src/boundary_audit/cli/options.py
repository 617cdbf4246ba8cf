"""Every setting of ``boundary-audit run`` and each way to spell it.

A setting (an *option*, e.g. ``isolate_network``) can be given by a config
file key (ours, or Coder boundary's: ``jail_type: nsjail``), an environment
variable (``BOUNDARY_JAIL_TYPE``) or a flag (``--jail-type``); each spelling
is a :class:`Spelling`: the option it sets and the parser that turns what was
written into the option's value, or refuses it with a message saying what to
use instead. Sources are read into a :class:`Layer` each (option -> value
and where it came from); :mod:`.run_config` merges the layers. Pure: no I/O.

Within one layer two spellings of one option must agree (``socket_path`` and
``log_proxy_socket_path`` naming different sockets is an error, not a coin
toss); list options (rules, session-header targets) are combined instead.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..auditor import DISABLE_ENV
from ..logs import normalize_level
from ..proxy import RuleParseError, parse_rule
from ..wire import SOCKET_PATH_ENV

#: Longest accepted confined process name; it travels in every batch to the
#: collector and is shown in tables, so it should stay a short label.
MAX_PROCESS_NAME_CHARS = 128
#: Highest TCP port number.
MAX_PORT = 65535
#: An HTTP field name is a token (RFC 9110 5.1, 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TRUE = frozenset({"1", "t", "true", "yes", "y", "on"})
_FALSE = frozenset({"0", "f", "false", "no", "n", "off"})


class ConfigError(ValueError):
    """A configuration source is invalid; the message names the file and key
    (or the variable, or the flag)."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.key = key
        where = ": ".join(part for part in (source, f"key {key!r}" if key else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


Parser = Callable[[object], object]


@dataclass(frozen=True, slots=True)
class Spelling:
    """One way to write an option: which option, and how to read the value."""

    option: str
    parse: Parser


@dataclass(frozen=True, slots=True)
class Given:
    """An option's value in one layer, with where it was written (for errors)."""

    value: object
    origin: str
    raw: object = None


Layer = dict[str, Given]

#: Options whose values from every spelling and source are combined, in
#: order (config file, then environment, then flags), not overridden.
LIST_OPTIONS = frozenset({"rules", "session_headers", "inject_targets"})


# -- value parsers: raise ValueError with the reason ------------------------------


def positive_int(value: str) -> int:
    """An argparse type: an integer >= 1, with an error that says so."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {raw!r}")


def parse_text(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"expected a non-empty string, got {raw!r}")
    return raw.strip()


def parse_port(raw: object) -> int:
    """0 (any free port) to 65535, from a YAML int or a decimal string."""
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_PORT:
        raise ValueError(f"expected a port number from 0 to {MAX_PORT}, got {raw!r}")
    return raw


def parse_level(raw: object) -> str:
    return normalize_level(parse_text(raw))


def parse_string_list(raw: object) -> tuple[str, ...]:
    """A YAML list of non-empty strings, or one string."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise ValueError(f"expected a list of strings, got {type(raw).__name__}")
    out: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"item {index}: expected a non-empty string, got {item!r}")
        out.append(item.strip())
    return tuple(out)


def parse_lines(raw: object) -> tuple[str, ...]:
    """One value per line (blank lines ignored): an environment variable's list.

    Newline and not ``;`` or ``,``: rules contain spaces and commas, and URL
    paths may contain ``;``, so either as a separator could silently split
    ``domain=x path=/a;b`` into a much broader rule.
    """
    text = parse_text(raw)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def parse_one(raw: object) -> tuple[str, ...]:
    """One list item (a repeatable flag's value)."""
    return (parse_text(raw),)


def parse_header_name(raw: object) -> str:
    name = parse_text(raw)
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{name!r} is not an HTTP header name (letters, digits, -, _ ...)")
    return name


def parse_process_name(raw: object) -> str:
    """A short printable label (it is shown in tables and sent in every batch)."""
    name = parse_text(raw)
    if len(name) > MAX_PROCESS_NAME_CHARS:
        raise ValueError(f"process name is longer than {MAX_PROCESS_NAME_CHARS} characters")
    if not name.isprintable():
        raise ValueError(f"process name {name!r} contains control characters")
    return name


def parse_jail_type(raw: object) -> bool:
    """Coder's jail types, as our confinement: the value of ``isolate_network``."""
    kind = parse_text(raw).lower()
    if kind == "landjail":
        return False
    if kind == "nsjail":
        return True
    raise ValueError(
        f"expected landjail (our default Landlock confinement) or nsjail "
        f"(our --isolate-network), got {raw!r}"
    )


def parse_pprof(raw: object) -> bool:
    """``false`` is honoured (there is no profiling server); ``true`` cannot be."""
    if parse_bool(raw):
        raise ValueError(
            "boundary-audit is written in Python and has no pprof server; profile it with "
            "`python -m cProfile -m boundary_audit run ...` (or py-spy) and drop this setting"
        )
    return False


def parse_inject_target(text: str) -> tuple[str, ...]:
    """One inject target in rule format, validated (ValueError with the reason)."""
    try:
        rule = parse_rule(text)
    except RuleParseError as exc:
        raise ValueError(f"inject target {text!r}: {exc}") from None
    if rule.domain is None:
        raise ValueError(f"inject target {text!r} names no domain=; a domain is required")
    return (text,)


def parse_session_header(value: str) -> tuple[str, ...]:
    """``--session-header`` / ``session_header_domains``: a DOMAIN (itself and
    its subdomains), or a target in rule format (it contains ``=``)."""
    if "=" in value:
        return parse_inject_target(value)
    domain = value.strip().rstrip(".").lower()
    exact = parse_inject_target(f"domain={domain}")
    return (
        exact if domain.startswith("*.") else (*exact, *parse_inject_target(f"domain=*.{domain}"))
    )


def _each(
    split: Callable[[object], tuple[str, ...]], item: Callable[[str], tuple[str, ...]]
) -> Parser:
    """A list parser that reads each item of ``split``'s result with ``item``."""

    def parse(raw: object) -> tuple[str, ...]:
        return tuple(out for text in split(raw) for out in item(text))

    return parse


_targets_yaml = _each(parse_string_list, parse_inject_target)
_targets_env = _each(parse_lines, parse_inject_target)
_targets_flag = _each(parse_one, parse_inject_target)
_headers_yaml = _each(parse_string_list, parse_session_header)
_headers_flag = _each(parse_one, parse_session_header)


# -- the spellings ------------------------------------------------------------------

_S = Spelling

#: Config file keys: ours, then Coder boundary's (config/config.go's yaml keys).
FILE_KEYS: dict[str, Spelling] = {
    "allow": _S("rules", parse_string_list),
    "session_header_domains": _S("session_headers", _headers_yaml),
    "session_id_header": _S("session_id_header", parse_header_name),
    "sequence_number_header": _S("sequence_number_header", parse_header_name),
    "socket_path": _S("socket_path", parse_text),
    "disable_audit_socket": _S("disable_audit_socket", parse_bool),
    "require_enforcement": _S("require_enforcement", parse_bool),
    "isolate_network": _S("isolate_network", parse_bool),
    "process_name": _S("process_name", parse_process_name),
    # Coder boundary's keys.
    "allowlist": _S("rules", parse_string_list),
    "log_level": _S("log_level", parse_level),
    "log_dir": _S("log_dir", parse_text),
    "proxy_port": _S("proxy_port", parse_port),
    "pprof_enabled": _S("pprof", parse_pprof),
    "pprof_port": _S("pprof_port", parse_port),
    "jail_type": _S("isolate_network", parse_jail_type),
    "use_real_dns": _S("use_real_dns", parse_bool),
    "no_user_namespace": _S("no_user_namespace", parse_bool),
    "disable_audit_logs": _S("disable_audit_socket", parse_bool),
    "log_proxy_socket_path": _S("socket_path", parse_text),
    "session_correlation_enabled": _S("session_correlation", parse_bool),
    "session_id_inject_targets": _S("inject_targets", _targets_yaml),
}

#: Environment variables: Coder boundary's (each serpent option's Env in its
#: cli/cli.go), plus BOUNDARY_PROXY_PORT, a clearer name for PROXY_PORT.
ENV_VARS: dict[str, Spelling] = {
    "BOUNDARY_ALLOW": _S("rules", parse_lines),
    "BOUNDARY_LOG_LEVEL": _S("log_level", parse_level),
    "BOUNDARY_LOG_DIR": _S("log_dir", parse_text),
    "PROXY_PORT": _S("proxy_port", parse_port),
    "BOUNDARY_PROXY_PORT": _S("proxy_port", parse_port),
    "BOUNDARY_PPROF": _S("pprof", parse_pprof),
    "BOUNDARY_PPROF_PORT": _S("pprof_port", parse_port),
    "BOUNDARY_JAIL_TYPE": _S("isolate_network", parse_jail_type),
    "BOUNDARY_USE_REAL_DNS": _S("use_real_dns", parse_bool),
    "BOUNDARY_NO_USER_NAMESPACE": _S("no_user_namespace", parse_bool),
    DISABLE_ENV: _S("disable_audit_socket", parse_bool),
    SOCKET_PATH_ENV: _S("socket_path", parse_text),
    "BOUNDARY_SESSION_CORRELATION_ENABLED": _S("session_correlation", parse_bool),
    "BOUNDARY_SESSION_ID_INJECT_TARGET": _S("inject_targets", _targets_env),
}


@dataclass(frozen=True, slots=True)
class Flag:
    """A command-line spelling: the flag as typed and the namespace attribute."""

    flag: str
    dest: str
    spelling: Spelling


#: Flags whose values go through the layers (argparse only collects them).
FLAGS: tuple[Flag, ...] = (
    Flag("--allow", "allow", _S("rules", parse_one)),
    Flag("--session-header", "session_header", _S("session_headers", _headers_flag)),
    Flag("--session-id-header", "session_id_header", _S("session_id_header", parse_header_name)),
    Flag(
        "--sequence-number-header",
        "sequence_number_header",
        _S("sequence_number_header", parse_header_name),
    ),
    Flag("--audit-socket", "socket_path", _S("socket_path", parse_text)),
    Flag("--no-audit-socket", "disable_audit_socket", _S("disable_audit_socket", parse_bool)),
    Flag("--require-enforcement", "require_enforcement", _S("require_enforcement", parse_bool)),
    Flag("--isolate-network", "isolate_network", _S("isolate_network", parse_bool)),
    Flag("--process-name", "process_name", _S("process_name", parse_process_name)),
    # Coder boundary's flags.
    Flag("--log-level", "log_level", _S("log_level", parse_level)),
    Flag("--log-dir", "log_dir", _S("log_dir", parse_text)),
    Flag("--proxy-port", "proxy_port", _S("proxy_port", parse_port)),
    Flag("--pprof", "pprof", _S("pprof", parse_pprof)),
    Flag("--pprof-port", "pprof_port", _S("pprof_port", parse_port)),
    Flag("--jail-type", "jail_type", _S("isolate_network", parse_jail_type)),
    Flag("--use-real-dns", "use_real_dns", _S("use_real_dns", parse_bool)),
    Flag("--no-user-namespace", "no_user_namespace", _S("no_user_namespace", parse_bool)),
    Flag("--disable-audit-logs", "disable_audit_logs", _S("disable_audit_socket", parse_bool)),
    Flag("--log-proxy-socket-path", "log_proxy_socket_path", _S("socket_path", parse_text)),
    Flag(
        "--enable-session-correlation",
        "session_correlation",
        _S("session_correlation", parse_bool),
    ),
    Flag("--session-id-inject-target", "inject_target", _S("inject_targets", _targets_flag)),
)


#: (spelling, raw value, origin, error source, error key)
_Entry = tuple[Spelling, object, str, str | None, str | None]


def extend(before: Given | None, given: Given) -> Given:
    """A list option's values so far followed by ``given``'s (its origin kept)."""
    if before is None:
        return given
    if not isinstance(before.value, tuple) or not isinstance(given.value, tuple):
        raise TypeError("list options hold tuples")
    return Given((*before.value, *given.value), given.origin, given.raw)


def build_layer(entries: Iterable[_Entry]) -> Layer:
    """A layer from ``(spelling, raw value, origin, error source, error key)``.

    Parse errors and disagreeing spellings raise :class:`ConfigError` naming
    where the value was written.
    """
    layer: Layer = {}
    for spelling, raw, origin, source, key in entries:
        try:
            value = spelling.parse(raw)
        except ValueError as exc:
            raise ConfigError(str(exc), source=source, key=key) from None
        seen = layer.get(spelling.option)
        if spelling.option in LIST_OPTIONS:
            layer[spelling.option] = extend(seen, Given(value, origin, raw))
        elif seen is not None and seen.value != value:
            raise ConfigError(
                f"{raw!r} contradicts {seen.origin} ({seen.raw!r}); keep one of them",
                source=source,
                key=key,
            )
        else:
            layer[spelling.option] = Given(value, origin, raw)
    return layer


def file_layer(data: Mapping[Any, object], source: str) -> Layer:
    """A config file's mapping as a layer; unknown keys are errors (a typo such
    as ``alow`` must not silently drop every rule)."""
    entries: list[_Entry] = []
    for key, raw in data.items():
        spelling = FILE_KEYS.get(str(key))
        if spelling is None:
            known = ", ".join(sorted(FILE_KEYS))
            raise ConfigError(f"unknown setting (known: {known})", source=source, key=str(key))
        if raw is None:  # ``key:`` with nothing after it: not set
            continue
        entries.append((spelling, raw, f"{source}: key {key!r}", source, str(key)))
    return build_layer(entries)


def env_layer(environ: Mapping[str, str]) -> Layer:
    """The ``BOUNDARY_*`` (and Coder's other) variables that are set and non-empty."""
    entries: list[_Entry] = []
    for name, spelling in ENV_VARS.items():
        raw = environ.get(name, "")
        if raw.strip():
            where = f"environment variable {name}"
            entries.append((spelling, raw, where, where, None))
    return build_layer(entries)


def flag_layer(values: Mapping[str, object]) -> Layer:
    """Flags from an argparse namespace's ``vars()``: ``None``/``[]`` = not given."""
    entries: list[_Entry] = []
    for flag in FLAGS:
        raw = values.get(flag.dest)
        items = raw if isinstance(raw, list) else [] if raw is None else [raw]
        entries.extend((flag.spelling, item, flag.flag, flag.flag, None) for item in items)
    return build_layer(entries)


__all__ = [
    "ENV_VARS",
    "FILE_KEYS",
    "FLAGS",
    "LIST_OPTIONS",
    "MAX_PROCESS_NAME_CHARS",
    "ConfigError",
    "Flag",
    "Given",
    "Layer",
    "Spelling",
    "build_layer",
    "env_layer",
    "extend",
    "file_layer",
    "flag_layer",
    "parse_bool",
    "parse_header_name",
    "parse_inject_target",
    "parse_jail_type",
    "parse_level",
    "parse_lines",
    "parse_port",
    "parse_process_name",
    "parse_session_header",
    "parse_string_list",
    "positive_int",
]
