"""The settings in force and where each comes from: the environment, a TOML settings
file, or the default; secrets masked.

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
>>> rows = {r.name: r for r in effective_settings(env, file_keys={"max_poll_records"})}
>>> rows["group_id"].value, rows["group_id"].source, rows["max_poll_records"].source
('g-env', 'env', 'file')
>>> rows["redis_url"].value, rows["redis_url"].source
('redis://127.0.0.1:6379/0', 'default')
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from consumer.errors import SettingsError
from consumer.settings import PREFIX, Settings

__all__ = [
    "CONFIG_ENV",
    "SettingRow",
    "effective_settings",
    "environ_with_file",
    "load_settings_file",
    "mask_url",
    "resolve_environ",
]

#: The environment variable naming a settings file.
CONFIG_ENV: Final = PREFIX + "CONFIG"
_SECRET_URLS: Final = ("redis_url",)
_MASK: Final = "***"


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``.

    >>> mask_url("redis://:s3cret@host:6379/0"), mask_url("rediss://app:pw@h/1")
    ('redis://:***@host:6379/0', 'rediss://app:***@h/1')
    >>> mask_url("redis://127.0.0.1:6379/0"), mask_url("redis://h/0?password=pw")
    ('redis://127.0.0.1:6379/0', 'redis://h/0?password=***')
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{_MASK}@{host}" if colon else f"{_MASK}@{host}"
    query = "&".join(
        f"{k}={_MASK}" if k.lower() == "password" else f"{k}{eq}{v}"
        for k, eq, v in (p.partition("=") for p in parts.query.split("&") if p)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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


@dataclass(frozen=True)
class SettingRow:
    """One setting as shown by ``tierstream config --show``."""

    name: str
    variable: str
    value: str
    source: str  #: "env", "file" or "default"


def effective_settings(
    environ: Mapping[str, str], *, file_keys: Iterable[str] = ()
) -> list[SettingRow]:
    """Every setting's value in force (checked like the service checks it) and source."""
    settings = Settings.from_env(environ)
    from_file = set(file_keys)
    rows = []
    for f in fields(Settings):
        variable = PREFIX + f.name.upper()
        value = getattr(settings, f.name)
        text = str(value)
        if f.name in _SECRET_URLS:
            text = mask_url(text)
        if f.name == "tiers_file" and not value:
            text = f"{settings.tiers_path} (packaged default)"
        source = "file" if f.name in from_file else "env" if variable in environ else "default"
        rows.append(SettingRow(f.name, variable, text, source))
    return rows
