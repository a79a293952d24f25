"""Settings from ``TIERSTREAM_*`` environment variables, checked up front.

>>> s = Settings.from_env({"TIERSTREAM_GROUP_ID": "g1", "TIERSTREAM_MAX_POLL_RECORDS": "500"})
>>> s.group_id, s.max_poll_records, s.input_topic
('g1', 500, 'user-events')
>>> Settings.from_env({"TIERSTREAM_MAX_POLL_RECORDS": "many"})
Traceback (most recent call last):
...
consumer.service.errors.SettingsError: TIERSTREAM_MAX_POLL_RECORDS='many' is not an integer
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from consumer.service.errors import SettingsError
from consumer.service.kafka_connection import KafkaConnection, parse_client_options
from consumer.service.redis_connection import parse_redis_url
from schemas.decode import Limits, parse_rfc3339_ms

PREFIX = "TIERSTREAM_"
DEFAULT_TIERS_FILE = Path(__file__).with_name("default_tiers.toml")
_MASK = "***"


@dataclass(frozen=True)
class Settings:
    """Every setting of the service; the env var is ``TIERSTREAM_`` + the upper-case name."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    #: How every client reaches the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    kafka_security_protocol: str = "PLAINTEXT"
    #: With SASL_*: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    #: A secret: better given as ``TIERSTREAM_KAFKA_SASL_PASSWORD_FILE`` (a mounted file).
    kafka_sasl_password: str = ""
    #: OAUTHBEARER: a file holding the current access token, read at each authentication
    #: (whatever refreshes the token rewrites the file).
    kafka_sasl_oauth_token_file: str = ""
    #: With SSL/SASL_SSL: the CA certificates (PEM) the brokers' certificates must chain to
    #: (default: the system's).
    kafka_ssl_cafile: str = ""
    #: A client certificate and its key (PEM), for brokers that authenticate clients by TLS.
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    #: The client key's password, if it has one (a secret).
    kafka_ssl_key_password: str = ""
    kafka_ssl_check_hostname: bool = True
    #: Other kafka-python client options, a JSON object (``{"request_timeout_ms": 40000}``);
    #: each client gets those it knows; the ones tierstream sets itself are refused.
    kafka_client_options: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    group_id: str = "tierstream"
    input_topic: str = "user-events"
    output_topic: str = "user-tier-changes"
    dlq_topic: str = "user-events-dlq"
    #: Erasure requests (``tierstream forget``, an erasure pipeline), forwarded by the
    #: service into the input topic so each lands after its user's earlier events.
    forget_topic: str = "user-forget-requests"
    #: Compacted: each user's current tier; a forgotten user's key gets a tombstone.
    tiers_topic: str = "user-tiers"
    #: Tier policy and score weights (TOML); the packaged e-commerce default if empty.
    tiers_file: str = ""
    #: Records larger than this are dead-lettered unparsed.
    max_record_bytes: int = 64 * 1024
    #: Largest original value copied into a DLQ record (at most 512 KiB, so the DLQ
    #: record fits the broker's 1 MiB limit); the source offset locates the rest.
    dlq_max_copy_bytes: int = 256 * 1024
    #: Events dated more than this many seconds after the wall clock are dead-lettered
    #: (``future_timestamp``): one bad clock must not move event time years ahead.
    max_event_future_s: float = 86400.0
    #: Events before this time (RFC 3339 or epoch ms) are dead-lettered
    #: (``ancient_timestamp``): epoch 0 is a producer's missing timestamp, not an event.
    min_event_time: str = "2000-01-01T00:00:00Z"
    #: Larger amounts are dead-lettered (``amount_out_of_range``).
    max_amount: float = 1e9
    #: Upper bound of records per batch (one Redis round trip each way per batch).
    max_poll_records: int = 2000
    poll_timeout_ms: int = 500
    #: A poll that brings records, but fewer than ``max_poll_records``, is followed by
    #: more polls for up to this long, and the batch takes what they bring: fewer,
    #: fuller batches while events come steadily (a batch's own cost, its Redis round
    #: trips and its publication, is paid once for more events), at most this much
    #: added to an event's latency; 0: a batch is what one poll brings.
    batch_linger_ms: int = 0
    #: The group's offsets are committed at most this often (and whenever the instance
    #: is idle or stops); 0: after every batch. No guarantee rests on them (a partition
    #: is read from the store's applied offset): they are what monitoring reads as lag.
    commit_interval_ms: int = 1000
    #: Prometheus /metrics, /healthz and /readyz; 0 disables the HTTP server.
    metrics_port: int = 9108
    metrics_host: str = "0.0.0.0"
    #: Prefix of every Redis key this deployment writes.
    key_prefix: str = "ts"
    #: A user silent this many days of event time ends: the engine's last timer deletes
    #: their state (a later event starts a new lifetime).
    state_ttl_days: float = 550.0
    #: Partitions given to output topics the service creates (0: as many as the input).
    topic_partitions: int = 0
    #: Replication factor of the topics the service creates (0: the brokers'
    #: ``default.replication.factor``).
    topic_replication: int = 0
    #: Seconds to wait for the first answer of the Kafka bootstrap servers.
    kafka_connect_timeout_s: float = 15.0
    #: How long the group waits for a silent member before moving its partitions: the
    #: longest a killed instance's partitions wait. With static membership, make it longer
    #: than a restart (stop + start), so a restart moves nothing.
    kafka_session_timeout_s: float = 10.0
    #: How long a Kafka client call (a poll, a commit, an offsets lookup) may outlast
    #: its own timeout before the client counts as wedged and is replaced (kafka-python
    #: can wait forever for an answer lost after a broker died).
    kafka_call_timeout_s: float = 30.0
    #: How long a partition the consumer holds may go unread while the broker has records
    #: past the consumer's position before the consumer counts as wedged and is replaced
    #: (kafka-python 3.0 can stop fetching one partition after its leader moved); 0: not
    #: watched.
    kafka_stall_s: float = 60.0
    #: This instance's name in the group's model contributions; keep it stable across
    #: restarts (a StatefulSet pod name) so learning resumes where it stopped.
    instance_id: str = ""
    #: Join the consumer group as a static member named after the instance id (Kafka's
    #: ``group.instance.id``): a restart within the session timeout moves no partition. A
    #: static member leaving for good keeps its partitions until the session times out.
    static_membership: bool = False
    #: Score with a fixed model version and learn nothing (what-if replays).
    freeze_model: bool = False
    #: A model file (``tierstream model export``) to score with instead of the stored one.
    model_file: str = ""
    #: ``text`` for people, ``json`` for a log pipeline (one object per line, notable
    #: events with an ``event`` field: :mod:`consumer.service.logs`).
    log_format: str = "text"
    #: Seconds SIGTERM waits for the batch in flight before closing.
    shutdown_timeout_s: float = 30.0
    #: Timers loaded per batch, shared evenly by its partitions: a batch whose event time
    #: passes more due timers than its slice stops there and goes on in the next slice.
    #: With ``max_poll_records`` it bounds the users one batch holds parsed.
    max_timers_per_batch: int = 10_000
    #: What to do when the state store holds nothing for a partition the group has
    #: consumed (the state was lost, or the key prefix is another deployment's):
    #: ``refuse`` to go on, ``rebuild`` from the first retained record, or ``continue``
    #: from the committed offset with every user afresh.
    on_state_loss: str = "refuse"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); raise SettingsError."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw_or_none = _value(env, name)
            if raw_or_none is None:
                continue
            raw = raw_or_none
            default = f.default
            try:
                if isinstance(default, bool):
                    values[f.name] = _yes_no(name, raw)
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                kind = "an integer" if isinstance(default, int) else "a number"
                raise SettingsError(f"{name}={raw!r} is not {kind}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise SettingsError on a value the service cannot use."""
        self.kafka.check()
        try:
            parse_redis_url(self.redis_url)
        except ValueError as exc:
            raise SettingsError(
                f"TIERSTREAM_REDIS_URL={mask_url(self.redis_url)!r}: {exc}"
            ) from None
        topics = ("input_topic", "output_topic", "dlq_topic", "forget_topic", "tiers_topic")
        for name in ("group_id", *topics, "key_prefix"):
            if not getattr(self, name):
                raise SettingsError(f"{PREFIX}{name.upper()} must not be empty")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"{PREFIX}LOG_FORMAT={self.log_format!r}: expected text or json")
        _check_key_prefix(self.key_prefix)
        if self.on_state_loss not in ("refuse", "rebuild", "continue"):
            raise SettingsError(
                f"{PREFIX}ON_STATE_LOSS={self.on_state_loss!r}: "
                "expected refuse, rebuild or continue"
            )
        positive = (
            "max_record_bytes",
            "dlq_max_copy_bytes",
            "max_poll_records",
            "poll_timeout_ms",
            "max_timers_per_batch",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{PREFIX}{name.upper()} must be > 0")
        if self.dlq_max_copy_bytes > 512 * 1024:
            raise SettingsError(
                f"{PREFIX}DLQ_MAX_COPY_BYTES={self.dlq_max_copy_bytes}: at most 524288 (512 KiB), "
                "so a DLQ record stays under the broker's 1 MiB message limit"
            )
        self.limits  # noqa: B018  (parses and checks the event limits)
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"{PREFIX}METRICS_PORT={self.metrics_port} is not a port")
        if (
            self.state_ttl_days <= 0
            or self.kafka_connect_timeout_s <= 0
            or self.kafka_session_timeout_s <= 0
            or self.kafka_call_timeout_s <= 0
            or self.kafka_stall_s < 0
            or self.commit_interval_ms < 0
            or self.batch_linger_ms < 0
            or self.topic_partitions < 0
            or self.topic_replication < 0
            or self.shutdown_timeout_s <= 0
        ):
            raise SettingsError(
                "TIERSTREAM_STATE_TTL_DAYS, KAFKA_CONNECT_TIMEOUT_S, KAFKA_SESSION_TIMEOUT_S, "
                "KAFKA_CALL_TIMEOUT_S and SHUTDOWN_TIMEOUT_S "
                "must be > 0, KAFKA_STALL_S, COMMIT_INTERVAL_MS, BATCH_LINGER_MS, "
                "TOPIC_PARTITIONS and TOPIC_REPLICATION >= 0"
            )
        if self.model_file and not Path(self.model_file).is_file():
            raise SettingsError(f"TIERSTREAM_MODEL_FILE={self.model_file!r}: no such file")
        if self.tiers_file and not Path(self.tiers_file).is_file():
            raise SettingsError(f"TIERSTREAM_TIERS_FILE={self.tiers_file!r}: no such file")

    @property
    def kafka(self) -> KafkaConnection:
        """How every Kafka client reaches the brokers."""
        return KafkaConnection(
            self.kafka_bootstrap,
            security_protocol=self.kafka_security_protocol.upper(),
            sasl_mechanism=self.kafka_sasl_mechanism.upper(),
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            sasl_oauth_token_file=self.kafka_sasl_oauth_token_file,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_key_password=self.kafka_ssl_key_password,
            ssl_check_hostname=self.kafka_ssl_check_hostname,
            options=parse_client_options(self.kafka_client_options),
            connect_timeout_s=self.kafka_connect_timeout_s,
        )

    @property
    def instance(self) -> str:
        """The instance id in force (the host name when not set)."""
        return self.instance_id or socket.gethostname()

    @property
    def limits(self) -> Limits:
        """What the decoder accepts beyond the schema (event-time window, amounts)."""
        try:
            floor = _instant_ms(self.min_event_time)
        except ValueError:
            raise SettingsError(
                f"{PREFIX}MIN_EVENT_TIME={self.min_event_time!r}: expected RFC 3339 "
                "(2000-01-01T00:00:00Z) or epoch milliseconds"
            ) from None
        if not (math.isfinite(self.max_amount) and self.max_amount > 0):
            raise SettingsError(f"{PREFIX}MAX_AMOUNT={self.max_amount!r} must be > 0 and finite")
        if not (math.isfinite(self.max_event_future_s) and self.max_event_future_s >= 0):
            raise SettingsError(
                f"{PREFIX}MAX_EVENT_FUTURE_S={self.max_event_future_s!r} must be >= 0 and finite"
            )
        return Limits(
            max_bytes=self.max_record_bytes,
            max_amount=self.max_amount,
            min_time_ms=floor,
            max_future_ms=round(self.max_event_future_s * 1000),
        )

    @property
    def tiers_path(self) -> Path:
        """The tier config file in force."""
        return Path(self.tiers_file) if self.tiers_file else DEFAULT_TIERS_FILE


def _value(env: Mapping[str, str], name: str) -> str | None:
    """The setting ``name`` from ``env``, or from the file ``env[name + "_FILE"]`` names
    (how Kubernetes and Docker hand over secrets); None when neither is set.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
    ...     _ = f.write("s3cret" + chr(10)); f.flush()
    ...     _value({"X_FILE": f.name}, "X")
    's3cret'
    >>> _value({"X_FILE": "/nonexistent"}, "X")
    Traceback (most recent call last):
    ...
    consumer.service.errors.SettingsError: X_FILE='/nonexistent': cannot read it (No such file ...)
    """
    path = env.get(name + "_FILE")
    if path is None:
        return env[name].strip() if name in env else None
    if name in env:
        raise SettingsError(f"{name} and {name}_FILE are both set: keep one")
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"{name}_FILE={path!r}: cannot read it ({exc.strerror})") from None


def _check_key_prefix(prefix: str) -> None:
    """A prefix with ``{`` or ``}`` would change the Redis Cluster hash tag of the keys
    (:mod:`consumer.service.keys`).

    >>> _check_key_prefix("ts:{x}")
    Traceback (most recent call last):
    ...
    consumer.service.errors.SettingsError: TIERSTREAM_KEY_PREFIX='ts:{x}': must not contain ...
    """
    if "{" in prefix or "}" in prefix:
        raise SettingsError(
            f"{PREFIX}KEY_PREFIX={prefix!r}: must not contain {{ or }} (they mark the Redis "
            "Cluster hash tags of the keys)"
        )


def _yes_no(name: str, raw: str) -> bool:
    """A yes/no setting; anything else is refused, never read as "no".

    >>> _yes_no("X", "on"), _yes_no("X", "0")
    (True, False)
    >>> _yes_no("TIERSTREAM_FREEZE_MODEL", "maybe")
    Traceback (most recent call last):
    ...
    consumer.service.errors.SettingsError: TIERSTREAM_FREEZE_MODEL='maybe': expected one of 1, ...
    """
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={raw!r}: expected one of 1, true, yes, on or 0, false, no, off")


def _instant_ms(text: str) -> int:
    """Epoch milliseconds of RFC 3339 text or of digits (epoch ms); ValueError otherwise.

    >>> _instant_ms("2000-01-01T00:00:00Z"), _instant_ms("946684800000")
    (946684800000, 946684800000)
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    return parse_rfc3339_ms(text)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``.

    >>> mask_url("redis://:s3cret@host:6379/0"), mask_url("rediss://app:pw@h/1")
    ('redis://:***@host:6379/0', 'rediss://app:***@h/1')
    >>> mask_url("redis://127.0.0.1:6379/0"), mask_url("redis://h/0?password=pw")
    ('redis://127.0.0.1:6379/0', 'redis://h/0?password=***')
    >>> mask_url("redis+cluster://:pw@h1:7000,h2:7001")
    'redis+cluster://:***@h1:7000,h2:7001'
    >>> mask_url("redis+sentinel://u:pw@s1,s2/main/0?sentinel_password=spw")
    'redis+sentinel://u:***@s1,s2/main/0?sentinel_password=***'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{_MASK}@{host}" if colon else f"{_MASK}@{host}"
    query = "&".join(
        f"{k}={_MASK}" if k.lower().endswith("password") else f"{k}{eq}{v}"
        for k, eq, v in (p.partition("=") for p in parts.query.split("&") if p)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
