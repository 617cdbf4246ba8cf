"""Every spelling of every ``run`` setting: config keys, env variables, flags."""

from __future__ import annotations

import argparse

import pytest

from boundary_audit.cli import build_parser
from boundary_audit.cli.options import (
    ENV_VARS,
    FILE_KEYS,
    FLAGS,
    ConfigError,
    env_layer,
    file_layer,
    flag_layer,
)

#: Coder boundary's yaml keys (config/config.go, CliConfig's yaml tags).
CODER_KEYS = {
    "allowlist",
    "log_level",
    "log_dir",
    "proxy_port",
    "pprof_enabled",
    "pprof_port",
    "jail_type",
    "use_real_dns",
    "no_user_namespace",
    "disable_audit_logs",
    "log_proxy_socket_path",
    "session_correlation_enabled",
    "session_id_inject_targets",
}
#: Coder boundary's variables (each serpent option's Env in cli/cli.go), but
#: BOUNDARY_CONFIG, which chooses the file (tests/cli/test_config_file.py).
CODER_ENV = {
    "BOUNDARY_ALLOW",
    "BOUNDARY_LOG_LEVEL",
    "BOUNDARY_LOG_DIR",
    "PROXY_PORT",
    "BOUNDARY_PPROF",
    "BOUNDARY_PPROF_PORT",
    "BOUNDARY_JAIL_TYPE",
    "BOUNDARY_USE_REAL_DNS",
    "BOUNDARY_NO_USER_NAMESPACE",
    "DISABLE_AUDIT_LOGS",
    "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH",
    "BOUNDARY_SESSION_CORRELATION_ENABLED",
    "BOUNDARY_SESSION_ID_INJECT_TARGET",
}
#: Coder boundary's flags (cli/cli.go), but --version (top level here too).
CODER_FLAGS = {
    "--config",
    "--allow",
    "--log-level",
    "--log-dir",
    "--proxy-port",
    "--pprof",
    "--pprof-port",
    "--jail-type",
    "--use-real-dns",
    "--no-user-namespace",
    "--disable-audit-logs",
    "--log-proxy-socket-path",
    "--enable-session-correlation",
    "--session-id-inject-target",
}

TARGET = "domain=dev.coder.com path=/api/v2/aibridge/*"

#: key -> (YAML value, option, value)
FILE_CASES: dict[str, tuple[object, str, object]] = {
    "allow": (
        ["domain=a.com", "method=GET domain=b.com"],
        "rules",
        ("domain=a.com", "method=GET domain=b.com"),
    ),
    "allowlist": ("domain=a.com", "rules", ("domain=a.com",)),
    "session_header_domains": (
        ["api.x.com"],
        "session_headers",
        ("domain=api.x.com", "domain=*.api.x.com"),
    ),
    "session_id_header": ("X-Session", "session_id_header", "X-Session"),
    "sequence_number_header": ("X-Seq", "sequence_number_header", "X-Seq"),
    "socket_path": ("/run/a.sock", "socket_path", "/run/a.sock"),
    "log_proxy_socket_path": ("/run/a.sock", "socket_path", "/run/a.sock"),
    "disable_audit_socket": (True, "disable_audit_socket", True),
    "disable_audit_logs": (True, "disable_audit_socket", True),
    "require_enforcement": (True, "require_enforcement", True),
    "isolate_network": (True, "isolate_network", True),
    "jail_type": ("nsjail", "isolate_network", True),
    "process_name": ("claude", "process_name", "claude"),
    "log_level": ("warn", "log_level", "warning"),
    "log_dir": ("/tmp/boundary_logs", "log_dir", "/tmp/boundary_logs"),
    "proxy_port": (8087, "proxy_port", 8087),
    "pprof_enabled": (False, "pprof", False),
    "pprof_port": (6060, "pprof_port", 6060),
    "use_real_dns": (True, "use_real_dns", True),
    "no_user_namespace": (True, "no_user_namespace", True),
    "session_correlation_enabled": (True, "session_correlation", True),
    "session_id_inject_targets": ([TARGET], "inject_targets", (TARGET,)),
}

#: variable -> (value, option, value)
ENV_CASES: dict[str, tuple[str, str, object]] = {
    "BOUNDARY_ALLOW": (
        "domain=a.com\n\ndomain=b.com path=/x;y,/z\r\n",
        "rules",
        ("domain=a.com", "domain=b.com path=/x;y,/z"),
    ),
    "BOUNDARY_LOG_LEVEL": ("DEBUG", "log_level", "debug"),
    "BOUNDARY_LOG_DIR": ("/var/log/b", "log_dir", "/var/log/b"),
    "PROXY_PORT": ("8087", "proxy_port", 8087),
    "BOUNDARY_PROXY_PORT": ("8088", "proxy_port", 8088),
    "BOUNDARY_PPROF": ("false", "pprof", False),
    "BOUNDARY_PPROF_PORT": ("6060", "pprof_port", 6060),
    "BOUNDARY_JAIL_TYPE": ("landjail", "isolate_network", False),
    "BOUNDARY_USE_REAL_DNS": ("1", "use_real_dns", True),
    "BOUNDARY_NO_USER_NAMESPACE": ("TRUE", "no_user_namespace", True),
    "DISABLE_AUDIT_LOGS": ("yes", "disable_audit_socket", True),
    "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH": ("/tmp/x.sock", "socket_path", "/tmp/x.sock"),
    "BOUNDARY_SESSION_CORRELATION_ENABLED": ("t", "session_correlation", True),
    "BOUNDARY_SESSION_ID_INJECT_TARGET": (
        f"{TARGET}\ndomain=b.com",
        "inject_targets",
        (TARGET, "domain=b.com"),
    ),
}

#: argv -> (option, value)
FLAG_CASES: dict[str, tuple[list[str], str, object]] = {
    "--allow": (
        ["--allow", "domain=a.com", "--allow", "domain=b.com"],
        "rules",
        ("domain=a.com", "domain=b.com"),
    ),
    "--session-header": (
        ["--session-header", "*.corp.x", "--session-header", TARGET],
        "session_headers",
        ("domain=*.corp.x", TARGET),
    ),
    "--session-id-header": (["--session-id-header", "X-S"], "session_id_header", "X-S"),
    "--sequence-number-header": (
        ["--sequence-number-header", "X-N"],
        "sequence_number_header",
        "X-N",
    ),
    "--audit-socket": (["--audit-socket", "/a.sock"], "socket_path", "/a.sock"),
    "--log-proxy-socket-path": (["--log-proxy-socket-path", "/a.sock"], "socket_path", "/a.sock"),
    "--no-audit-socket": (["--no-audit-socket"], "disable_audit_socket", True),
    "--disable-audit-logs": (["--disable-audit-logs"], "disable_audit_socket", True),
    "--require-enforcement": (["--require-enforcement"], "require_enforcement", True),
    "--isolate-network": (["--isolate-network"], "isolate_network", True),
    "--jail-type": (["--jail-type", "nsjail"], "isolate_network", True),
    "--process-name": (["--process-name", "codex"], "process_name", "codex"),
    "--log-level": (["--log-level", "warning"], "log_level", "warning"),
    "--log-dir": (["--log-dir", "logs"], "log_dir", "logs"),
    "--proxy-port": (["--proxy-port", "9000"], "proxy_port", 9000),
    "--pprof-port": (["--pprof-port", "6061"], "pprof_port", 6061),
    "--use-real-dns": (["--use-real-dns"], "use_real_dns", True),
    "--no-user-namespace": (["--no-user-namespace"], "no_user_namespace", True),
    "--enable-session-correlation": (["--enable-session-correlation"], "session_correlation", True),
    "--session-id-inject-target": (
        ["--session-id-inject-target", TARGET],
        "inject_targets",
        (TARGET,),
    ),
}


def _run_args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv, "--", "true"])


def test_every_coder_spelling_exists() -> None:
    assert set(FILE_KEYS) >= CODER_KEYS
    assert set(ENV_VARS) >= CODER_ENV
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    run: argparse.ArgumentParser = commands.choices["run"]
    assert set(run._option_string_actions) >= CODER_FLAGS


def test_every_flag_of_the_table_is_a_run_flag_with_its_dest() -> None:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    actions = commands.choices["run"]._option_string_actions
    assert {f.flag: actions[f.flag].dest for f in FLAGS} == {f.flag: f.dest for f in FLAGS}


def test_every_spelling_is_tested() -> None:
    assert set(FILE_CASES) == set(FILE_KEYS)
    assert set(ENV_CASES) == set(ENV_VARS)
    assert set(FLAG_CASES) | {"--pprof"} == {f.flag for f in FLAGS}  # --pprof is refused


@pytest.mark.parametrize("key", sorted(FILE_CASES))
def test_file_key_maps_to_its_option(key: str) -> None:
    raw, option, value = FILE_CASES[key]
    layer = file_layer({key: raw}, "c.yaml")
    assert {name: given.value for name, given in layer.items()} == {option: value}
    assert layer[option].origin == f"c.yaml: key {key!r}"


@pytest.mark.parametrize("name", sorted(ENV_CASES))
def test_env_variable_maps_to_its_option(name: str) -> None:
    raw, option, value = ENV_CASES[name]
    layer = env_layer({name: raw, "UNRELATED": "x"})
    assert {k: g.value for k, g in layer.items()} == {option: value}
    assert layer[option].origin == f"environment variable {name}"


@pytest.mark.parametrize("flag", sorted(FLAG_CASES))
def test_flag_maps_to_its_option(flag: str) -> None:
    argv, option, value = FLAG_CASES[flag]
    layer = flag_layer(vars(_run_args(argv)))
    assert {k: g.value for k, g in layer.items()} == {option: value}
    assert layer[option].origin == flag


def test_no_flags_no_env_no_keys_is_an_empty_layer() -> None:
    assert flag_layer(vars(_run_args([]))) == {}
    assert env_layer({name: "  " for name in ENV_VARS}) == {}  # blank = unset
    assert file_layer({"log_level": None, "allowlist": None}, "c.yaml") == {}  # "key:" = unset


REFUSALS = [
    ("pprof_enabled", True, "no pprof server", "cProfile"),
    (
        "jail_type",
        "docker",
        "expected landjail (our default Landlock confinement)",
        "nsjail (our --isolate-network)",
    ),
    ("log_level", "loud", "expected one of error, warn, info, debug", "loud"),
    ("proxy_port", 70000, "expected a port number from 0 to 65535", "70000"),
    ("proxy_port", True, "expected a port number", "True"),
    ("use_real_dns", 1, "expected true or false", "1"),
    ("allowlist", {"domain": "x"}, "expected a list of strings, got dict", ""),
    ("allowlist", ["domain=a.com", 42], "item 1: expected a non-empty string", "42"),
    ("allow", ["  "], "item 0: expected a non-empty string", ""),
    (
        "session_id_inject_targets",
        ["path=/v1/*"],
        "names no domain=; a domain is required",
        "path=/v1/*",
    ),
    ("session_id_inject_targets", ["domian=x.com"], "inject target 'domian=x.com'", ""),
    ("session_header_domains", ["bad domain!"], "inject target", ""),
    ("session_id_header", "X Bad", "is not an HTTP header name", ""),
    ("process_name", "a\tb", "control characters", ""),
    ("process_name", "x" * 200, "longer than 128", ""),
    ("socket_path", "", "expected a non-empty string", ""),
]


@pytest.mark.parametrize(("key", "raw", "fragment", "also"), REFUSALS)
def test_refusals_name_file_key_and_what_to_do(
    key: str, raw: object, fragment: str, also: str
) -> None:
    with pytest.raises(ConfigError) as info:
        file_layer({key: raw}, "c.yaml")
    message = str(info.value)
    assert message.startswith(f"c.yaml: key {key!r}: "), message
    assert fragment in message
    assert also in message
    assert (info.value.source, info.value.key) == ("c.yaml", key)


@pytest.mark.parametrize(
    ("name", "raw", "fragment"),
    [
        ("BOUNDARY_PPROF", "true", "no pprof server"),
        ("BOUNDARY_JAIL_TYPE", "chroot", "expected landjail"),
        ("PROXY_PORT", "80a", "expected a port number"),
        ("DISABLE_AUDIT_LOGS", "maybe", "expected true or false"),
        ("BOUNDARY_SESSION_ID_INJECT_TARGET", "method=GET", "a domain is required"),
    ],
)
def test_env_refusals_name_the_variable(name: str, raw: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=f"^environment variable {name}: .*{fragment}"):
        env_layer({name: raw})


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--pprof"], "^--pprof: .*no pprof server"),
        (["--proxy-port", "x"], "^--proxy-port: expected a port number"),
        (["--allow", ""], "^--allow: expected a non-empty string"),
        (["--jail-type", "chroot"], "^--jail-type: expected landjail"),
    ],
)
def test_flag_refusals_name_the_flag(argv: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        flag_layer(vars(_run_args(argv)))


@pytest.mark.parametrize(
    "data",
    [
        {"socket_path": "/a.sock", "log_proxy_socket_path": "/b.sock"},
        {"disable_audit_socket": True, "disable_audit_logs": False},
        {"isolate_network": True, "jail_type": "landjail"},
        {"isolate_network": False, "jail_type": "nsjail"},
    ],
)
def test_a_file_may_not_mix_contradictory_spellings(data: dict[str, object]) -> None:
    first, second = data
    with pytest.raises(ConfigError) as info:
        file_layer(data, "c.yaml")
    message = str(info.value)
    assert message.startswith(f"c.yaml: key {second!r}: ")
    assert f"contradicts c.yaml: key {first!r}" in message


def test_agreeing_spellings_and_list_spellings_combine() -> None:
    layer = file_layer(
        {
            "allow": ["domain=a.com"],
            "allowlist": ["domain=b.com"],
            "isolate_network": True,
            "jail_type": "nsjail",
            "socket_path": "/a.sock",
            "log_proxy_socket_path": "/a.sock",
        },
        "c.yaml",
    )
    assert layer["rules"].value == ("domain=a.com", "domain=b.com")
    assert layer["isolate_network"].value is True
    assert layer["socket_path"].value == "/a.sock"


def test_contradicting_flags_and_variables_are_refused_too() -> None:
    with pytest.raises(
        ConfigError, match=r"^--log-proxy-socket-path: '/b' contradicts --audit-socket"
    ):
        flag_layer(vars(_run_args(["--audit-socket", "/a", "--log-proxy-socket-path", "/b"])))
    with pytest.raises(
        ConfigError, match="BOUNDARY_PROXY_PORT: '2' contradicts environment variable PROXY_PORT"
    ):
        env_layer({"PROXY_PORT": "1", "BOUNDARY_PROXY_PORT": "2"})


def test_unknown_keys_list_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        file_layer({"alow": ["domain=x"]}, "c.yaml")
    assert str(info.value).startswith(
        "c.yaml: key 'alow': unknown setting (known: allow, allowlist,"
    )
