"""``tierstream config --show``: the settings in force and where each comes from (the
environment, a TOML settings file, or the default), secrets masked. Where settings are
read from is :mod:`consumer.service.settings_file`.

>>> from consumer.service.settings_file import environ_with_file
>>> env = environ_with_file({"TIERSTREAM_GROUP_ID": "g-env"},
...                         {"group_id": "g-file", "max_poll_records": 1000})
>>> rows = {r.name: r for r in effective_settings(env, file_keys={"max_poll_records"})}
>>> rows["group_id"].value, rows["group_id"].source, rows["max_poll_records"].source
('g-env', 'env', 'file')
>>> rows["redis_url"].value, rows["redis_url"].source
('redis://127.0.0.1:6379/0', 'default')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Final

from consumer.service.settings import PREFIX, Settings, mask_url

__all__ = ["SettingRow", "effective_settings"]

_SECRET_URLS: Final = ("redis_url",)
_SECRETS: Final = ("kafka_sasl_password", "kafka_ssl_key_password")


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
        if f.name in _SECRETS and text:
            text = "***"
        if f.name == "tiers_file" and not value:
            text = f"{settings.tiers_path} (packaged default)"
        source = (
            "file"
            if f.name in from_file
            else "env"
            if variable in environ or variable + "_FILE" in environ
            else "default"
        )
        rows.append(SettingRow(f.name, variable, text, source))
    return rows
