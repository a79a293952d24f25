"""Where the settings are read from: the environment, and a TOML settings file under it.

A settings file (``--config FILE`` or ``TIERSTREAM_CONFIG``) holds the same settings as
the environment, named without the prefix, at the top level or under ``[tierstream]``;
an environment variable wins over the file::

    redis_url = "redis://:secret@redis.internal:6379/0"
    group_id = "tierstream-eu"
    max_poll_records = 1000

>>> env = environ_with_file({"TIERSTREAM_GROUP_ID": "g-env"},
...                         {"group_id": "g-file", "max_poll_records": 1000})
>>> env["TIERSTREAM_GROUP_ID"], env["TIERSTREAM_MAX_POLL_RECORDS"]
('g-env', '1000')
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Final

from consumer.service.errors import SettingsError
from consumer.service.settings import PREFIX, Settings

__all__ = ["CONFIG_ENV", "environ_with_file", "load_settings_file", "resolve_environ"]

#: The environment variable naming a settings file.
CONFIG_ENV: Final = PREFIX + "CONFIG"


def load_settings_file(path: str | Path) -> dict[str, Any]:
    """The settings in a TOML file; SettingsError naming an unknown key or a bad file."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"settings file {path}: no such file") from None
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from None
    table = data.get("tierstream", data)
    known = {f.name for f in fields(Settings)}
    unknown = sorted(k for k in table if k not in known)
    if unknown:
        raise SettingsError(
            f"settings file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    for key, value in table.items():
        if not isinstance(value, str | int | float | bool):
            raise SettingsError(f"settings file {path}: {key} must be a string or a number")
    return dict(table)


def environ_with_file(environ: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, str]:
    """``environ`` plus the file's ``values`` as ``TIERSTREAM_*`` variables it lacks."""
    merged = dict(environ)
    for key, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        merged.setdefault(PREFIX + key.upper(), text)
    return merged


def resolve_environ(
    config_file: str | None, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str], set[str]]:
    """The environment the settings are read from (with the settings file named by
    ``config_file`` or ``TIERSTREAM_CONFIG`` merged under it) and the file's keys."""
    env = dict(os.environ if environ is None else environ)
    path = config_file or env.get(CONFIG_ENV)
    if not path:
        return env, set()
    values = load_settings_file(path)
    file_keys = {k for k in values if PREFIX + k.upper() not in env}
    return environ_with_file(env, values), file_keys
