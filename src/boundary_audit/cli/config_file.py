"""The YAML config file of ``boundary-audit run``: where it is and what it says.

Found as Coder boundary finds its own, so a Coder ``config.yaml`` is picked
up unchanged: ``--config FILE``, else ``$BOUNDARY_CONFIG``, else
``~/.config/coder_boundary/config.yaml`` when that file exists (``~`` is
``$HOME``, as Go's ``os.UserHomeDir``). The first two must exist; the default
is skipped when absent. The keys are :data:`.options.FILE_KEYS` (ours and
Coder's); what each means is in docs/run.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from .options import ConfigError, Layer, file_layer

#: Environment variable naming the config file (Coder boundary's).
CONFIG_ENV_VAR = "BOUNDARY_CONFIG"
#: Where Coder boundary looks when neither the flag nor the variable is set.
DEFAULT_CONFIG_RELATIVE = Path(".config") / "coder_boundary" / "config.yaml"
#: Refuse config files larger than this: a rules file is a few KiB, and a
#: huge file is a mistake (wrong path) better reported than parsed.
MAX_CONFIG_BYTES = 1 << 20


def default_config_path(environ: Mapping[str, str]) -> Path | None:
    """``$HOME/.config/coder_boundary/config.yaml``, or None without ``$HOME``."""
    home = environ.get("HOME", "")
    return Path(home) / DEFAULT_CONFIG_RELATIVE if home else None


def find_config_file(
    flag_path: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> tuple[Path | None, str]:
    """The config file to read (None: none) and how it was chosen, for messages."""
    if flag_path is not None:
        return Path(flag_path), "--config"
    if environ.get(CONFIG_ENV_VAR, "").strip():
        return Path(environ[CONFIG_ENV_VAR].strip()), f"environment variable {CONFIG_ENV_VAR}"
    default = default_config_path(environ)
    if default is not None and default.is_file():
        return default, "the default location"
    return None, "none"


def parse_config_text(text: str, source: str = "<config>") -> Layer:
    """Validate the YAML document ``text``; errors name ``source`` and the key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {at}{problem}", source=source) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"top level must be a mapping of settings, got {type(data).__name__}", source=source
        )
    return file_layer(data, source)


def load_config_file(path: str | os.PathLike[str]) -> Layer:
    """Read and validate a YAML config file."""
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


__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_RELATIVE",
    "MAX_CONFIG_BYTES",
    "default_config_path",
    "find_config_file",
    "load_config_file",
    "parse_config_text",
]
