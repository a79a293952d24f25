"""How every Kafka client of the project reaches the brokers: addresses, TLS, SASL.

One :class:`KafkaConnection`, built from the settings, configures the service's consumer,
producer and admin clients and those of ``generate``, ``forget`` and ``dlq purge``, so a
secured cluster (TLS and SASL, as managed Kafka offerings require) is reached the same
way by all of them. Other kafka-python client options pass through
``TIERSTREAM_KAFKA_CLIENT_OPTIONS`` (a JSON object); each client gets the ones it knows.

>>> c = KafkaConnection("b1:9093,b2:9093", security_protocol="SASL_SSL",
...                     sasl_mechanism="SCRAM-SHA-512", sasl_username="app",
...                     sasl_password="s3cret", ssl_cafile="/etc/ca.pem")
>>> c.describe()
'b1:9093,b2:9093 over SASL_SSL (SCRAM-SHA-512 as app)'
>>> cfg = c.config(KafkaProducer, acks="all")
>>> cfg["bootstrap_servers"], cfg["sasl_plain_username"], cfg["ssl_cafile"], cfg["acks"]
(['b1:9093', 'b2:9093'], 'app', '/etc/ca.pem', 'all')
>>> "s3cret" in repr(c)
False
>>> KafkaConnection("b1:9092", security_protocol="TLS").check()
Traceback (most recent call last):
...
consumer.service.errors.SettingsError: TIERSTREAM_KAFKA_SECURITY_PROTOCOL='TLS': expected one of ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.net.sasl.oauth import AbstractTokenProvider

from consumer.service.errors import SettingsError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")

#: Options the service sets for its guarantees (exactly-once state, ordered outputs,
#: offsets committed by the batch) or through its own settings: never passed through.
RESERVED = frozenset(
    {
        "bootstrap_servers",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_oauth_token_provider",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_context",
        "group_id",
        "group_instance_id",
        "enable_auto_commit",
        "isolation_level",
        "auto_offset_reset",
        "acks",
        "enable_idempotence",
        "key_deserializer",
        "value_deserializer",
        "key_serializer",
        "value_serializer",
    }
)
_CLIENTS: tuple[type[Any], ...] = (KafkaConsumer, KafkaProducer, KafkaAdminClient)


class TokenFile(AbstractTokenProvider):  # type: ignore[misc]
    """An OAUTHBEARER token read from a file at each authentication: whatever refreshes
    the token (a sidecar, a CronJob) rewrites the file, and new connections use it."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def token(self) -> str:
        try:
            return Path(self.path).read_text().strip()
        except OSError as exc:
            raise SettingsError(
                f"TIERSTREAM_KAFKA_SASL_OAUTH_TOKEN_FILE={self.path!r}: {exc.strerror}"
            ) from None


@dataclass(frozen=True)
class KafkaConnection:
    """The brokers and how to talk to them (``TIERSTREAM_KAFKA_*``)."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    sasl_oauth_token_file: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_key_password: str = field(default="", repr=False)
    ssl_check_hostname: bool = True
    #: Further kafka-python options (``TIERSTREAM_KAFKA_CLIENT_OPTIONS``).
    options: Mapping[str, Any] = field(default_factory=dict)
    #: How long a client waits for the bootstrap servers' first answer.
    connect_timeout_s: float = 15.0

    @classmethod
    def of(cls, target: KafkaConnection | str) -> KafkaConnection:
        """``target`` itself, or a plaintext connection to the bootstrap list ``target``."""
        return target if isinstance(target, KafkaConnection) else cls(target)

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap.split(",") if s.strip()]

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """Where and how, without any secret: for logs and error messages."""
        how = f" over {self.security_protocol}" if self.security_protocol != "PLAINTEXT" else ""
        if self.uses_sasl:
            who = f" as {self.sasl_username}" if self.sasl_username else ""
            how += f" ({self.sasl_mechanism}{who})"
        return f"{self.bootstrap}{how}"

    def check(self) -> None:
        """Raise SettingsError on settings no client could use."""
        name = "TIERSTREAM_KAFKA_"
        if not self.servers or any(":" not in hp for hp in self.servers):
            raise SettingsError(
                f"{name}BOOTSTRAP={self.bootstrap!r}: expected host:port[,host:port]"
            )
        if self.security_protocol not in PROTOCOLS:
            raise SettingsError(
                f"{name}SECURITY_PROTOCOL={self.security_protocol!r}: expected one of "
                + ", ".join(PROTOCOLS)
            )
        if self.uses_sasl:
            self._check_sasl()
        elif self.sasl_mechanism:
            raise SettingsError(
                f"{name}SASL_MECHANISM={self.sasl_mechanism!r} needs "
                f"{name}SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
            )
        for setting, path in (
            ("SSL_CAFILE", self.ssl_cafile),
            ("SSL_CERTFILE", self.ssl_certfile),
            ("SSL_KEYFILE", self.ssl_keyfile),
            ("SASL_OAUTH_TOKEN_FILE", self.sasl_oauth_token_file),
        ):
            if path and not Path(path).is_file():
                raise SettingsError(f"{name}{setting}={path!r}: no such file")
        if (self.ssl_certfile or self.ssl_keyfile) and not self.uses_tls:
            raise SettingsError(
                f"{name}SSL_CERTFILE/SSL_KEYFILE need {name}SECURITY_PROTOCOL=SSL or SASL_SSL"
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise SettingsError(
                f"{name}SSL_CERTFILE and {name}SSL_KEYFILE go together (a client certificate)"
            )
        self._check_options()

    def _check_sasl(self) -> None:
        name = "TIERSTREAM_KAFKA_"
        if self.sasl_mechanism not in MECHANISMS:
            raise SettingsError(
                f"{name}SASL_MECHANISM={self.sasl_mechanism!r}: expected one of "
                + ", ".join(MECHANISMS)
            )
        if self.sasl_mechanism == "OAUTHBEARER":
            if not self.sasl_oauth_token_file:
                raise SettingsError(f"OAUTHBEARER needs {name}SASL_OAUTH_TOKEN_FILE")
        elif not (self.sasl_username and self.sasl_password):
            raise SettingsError(
                f"{self.sasl_mechanism} needs {name}SASL_USERNAME and {name}SASL_PASSWORD "
                f"(or {name}SASL_PASSWORD_FILE)"
            )

    def _check_options(self) -> None:
        known = set().union(*(c.DEFAULT_CONFIG for c in _CLIENTS))
        for key in self.options:
            if key in RESERVED:
                raise SettingsError(
                    f"TIERSTREAM_KAFKA_CLIENT_OPTIONS: {key!r} is set by tierstream itself "
                    "(its own setting, or what its guarantees rest on)"
                )
            if key not in known:
                raise SettingsError(
                    f"TIERSTREAM_KAFKA_CLIENT_OPTIONS: {key!r} is no kafka-python client option"
                )

    def config(self, client: type[Any], **own: Any) -> dict[str, Any]:
        """Keyword arguments for a ``client`` (KafkaConsumer, KafkaProducer or
        KafkaAdminClient): the connection, then ``own`` (the caller's choices), then the
        pass-through options that client knows."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "security_protocol": self.security_protocol,
            "bootstrap_timeout_ms": round(self.connect_timeout_s * 1000),
        }
        if self.uses_sasl:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                cfg["sasl_oauth_token_provider"] = TokenFile(self.sasl_oauth_token_file)
            else:
                cfg["sasl_plain_username"] = self.sasl_username
                cfg["sasl_plain_password"] = self.sasl_password
        if self.uses_tls:
            cfg["ssl_check_hostname"] = self.ssl_check_hostname
            for key, value in (
                ("ssl_cafile", self.ssl_cafile),
                ("ssl_certfile", self.ssl_certfile),
                ("ssl_keyfile", self.ssl_keyfile),
                ("ssl_password", self.ssl_key_password),
            ):
                if value:
                    cfg[key] = value
        cfg.update(own)
        cfg.update({k: v for k, v in self.options.items() if k in client.DEFAULT_CONFIG})
        return cfg


def parse_client_options(raw: str) -> dict[str, Any]:
    """``TIERSTREAM_KAFKA_CLIENT_OPTIONS``: a JSON object of kafka-python options.

    >>> parse_client_options('{"request_timeout_ms": 40000}')
    {'request_timeout_ms': 40000}
    >>> parse_client_options("")
    {}
    >>> parse_client_options("request_timeout_ms=1")
    Traceback (most recent call last):
    ...
    consumer.service.errors.SettingsError: TIERSTREAM_KAFKA_CLIENT_OPTIONS: expected a JSON ...
    """
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise SettingsError(
            "TIERSTREAM_KAFKA_CLIENT_OPTIONS: expected a JSON object, "
            'e.g. {"request_timeout_ms": 40000}'
        )
    return value
