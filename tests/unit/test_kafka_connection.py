"""Kafka client settings (issue 9): security protocols, SASL, TLS files, secrets from
files, the pass-through of other client options, and that no secret is ever shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from consumer.service.errors import SettingsError
from consumer.service.kafka_connection import KafkaConnection, TokenFile
from consumer.service.settings import Settings
from consumer.tools.config_view import effective_settings

SECRET = "pa55-w0rd-never-shown"


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def test_the_default_is_plaintext_and_passes_nothing_else() -> None:
    cfg = Settings.from_env({}).kafka.config(KafkaConsumer)
    assert cfg["security_protocol"] == "PLAINTEXT"
    assert cfg["bootstrap_servers"] == ["127.0.0.1:9092"]
    assert not any(k.startswith(("sasl_", "ssl_")) for k in cfg)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_reaches_every_client(mechanism: str, ca: Path) -> None:
    s = Settings.from_env(
        {
            "TIERSTREAM_KAFKA_BOOTSTRAP": "b1:9093,b2:9093",
            "TIERSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "TIERSTREAM_KAFKA_SASL_MECHANISM": mechanism,
            "TIERSTREAM_KAFKA_SASL_USERNAME": "tierstream",
            "TIERSTREAM_KAFKA_SASL_PASSWORD": SECRET,
            "TIERSTREAM_KAFKA_SSL_CAFILE": str(ca),
        }
    )
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):
        cfg = s.kafka.config(client)
        assert cfg["security_protocol"] == "SASL_SSL"
        assert cfg["sasl_mechanism"] == mechanism
        assert (cfg["sasl_plain_username"], cfg["sasl_plain_password"]) == ("tierstream", SECRET)
        assert cfg["ssl_cafile"] == str(ca) and cfg["ssl_check_hostname"] is True
        assert set(cfg) <= set(client.DEFAULT_CONFIG), "every key must be one the client takes"
    assert SECRET not in s.kafka.describe() and SECRET not in repr(s.kafka)
    assert s.kafka.describe() == f"b1:9093,b2:9093 over SASL_SSL ({mechanism} as tierstream)"


def test_mutual_tls_passes_the_client_certificate(tmp_path: Path, ca: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    kafka = Settings.from_env(
        {
            "TIERSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "TIERSTREAM_KAFKA_SSL_CAFILE": str(ca),
            "TIERSTREAM_KAFKA_SSL_CERTFILE": str(cert),
            "TIERSTREAM_KAFKA_SSL_KEYFILE": str(key),
            "TIERSTREAM_KAFKA_SSL_KEY_PASSWORD": SECRET,
        }
    ).kafka
    cfg = kafka.config(KafkaProducer)
    assert (cfg["ssl_certfile"], cfg["ssl_keyfile"], cfg["ssl_password"]) == (
        str(cert),
        str(key),
        SECRET,
    )
    assert "sasl_mechanism" not in cfg


def test_oauthbearer_reads_the_token_file_at_each_authentication(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    cfg = Settings.from_env(
        {
            "TIERSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TIERSTREAM_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
            "TIERSTREAM_KAFKA_SASL_OAUTH_TOKEN_FILE": str(token),
        }
    ).kafka.config(KafkaConsumer)
    provider = cfg["sasl_oauth_token_provider"]
    assert isinstance(provider, TokenFile) and provider.token() == "first"
    token.write_text("refreshed\n")
    assert provider.token() == "refreshed"


def test_a_secret_can_come_from_a_file_but_not_from_both(tmp_path: Path, ca: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(SECRET + "\n")  # as `kubectl create secret --from-file` leaves it
    env = {
        "TIERSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TIERSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TIERSTREAM_KAFKA_SASL_USERNAME": "tierstream",
        "TIERSTREAM_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "TIERSTREAM_KAFKA_SSL_CAFILE": str(ca),
    }
    assert Settings.from_env(env).kafka_sasl_password == SECRET
    with pytest.raises(SettingsError, match="both set"):
        Settings.from_env({**env, "TIERSTREAM_KAFKA_SASL_PASSWORD": "other"})
    with pytest.raises(SettingsError, match="cannot read it") as err:
        Settings.from_env({**env, "TIERSTREAM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "no")})
    assert SECRET not in str(err.value)
    # any setting, not only secrets
    (tmp_path / "group").write_text("g-from-file")
    assert Settings.from_env({"TIERSTREAM_GROUP_ID_FILE": str(tmp_path / "group")}).group_id == (
        "g-from-file"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIERSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "expected one of PLAINTEXT"),
        (
            {"TIERSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "SASL_MECHANISM='': expected one of PLAIN",
        ),
        (
            {
                "TIERSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "TIERSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            },
            "needs TIERSTREAM_KAFKA_SASL_USERNAME and TIERSTREAM_KAFKA_SASL_PASSWORD",
        ),
        (
            {"TIERSTREAM_KAFKA_SASL_MECHANISM": "PLAIN"},
            "needs TIERSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
        (
            {"TIERSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL", "TIERSTREAM_KAFKA_SSL_CAFILE": "/no"},
            "SSL_CAFILE='/no': no such file",
        ),
        ({"TIERSTREAM_KAFKA_CLIENT_OPTIONS": '{"acks": 1}'}, "'acks' is set by tierstream"),
        ({"TIERSTREAM_KAFKA_CLIENT_OPTIONS": '{"ackz": 1}'}, "'ackz' is no kafka-python"),
        ({"TIERSTREAM_KAFKA_CLIENT_OPTIONS": "[1]"}, "expected a JSON object"),
        ({"TIERSTREAM_TOPIC_REPLICATION": "-1"}, "TOPIC_REPLICATION >= 0"),
        ({"TIERSTREAM_STATIC_MEMBERSHIP": "maybe"}, "expected one of 1, true"),
    ],
)
def test_settings_no_client_could_use_are_refused_in_one_line(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_client_options_reach_only_the_clients_that_know_them() -> None:
    kafka = Settings.from_env(
        {"TIERSTREAM_KAFKA_CLIENT_OPTIONS": '{"fetch_max_bytes": 1048576, "linger_ms": 50}'}
    ).kafka
    assert kafka.config(KafkaConsumer)["fetch_max_bytes"] == 1048576
    assert "fetch_max_bytes" not in kafka.config(KafkaProducer)
    assert kafka.config(KafkaProducer, linger_ms=5)["linger_ms"] == 50  # the operator's say
    assert "linger_ms" not in kafka.config(KafkaAdminClient)


def test_config_show_masks_the_kafka_secrets(tmp_path: Path, ca: Path) -> None:
    key_password = tmp_path / "key-password"
    key_password.write_text(SECRET)
    rows = {
        r.name: r
        for r in effective_settings(
            {
                "TIERSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "TIERSTREAM_KAFKA_SASL_MECHANISM": "PLAIN",
                "TIERSTREAM_KAFKA_SASL_USERNAME": "u",
                "TIERSTREAM_KAFKA_SASL_PASSWORD": SECRET,
                "TIERSTREAM_KAFKA_SSL_KEY_PASSWORD_FILE": str(key_password),
                "TIERSTREAM_KAFKA_SSL_CAFILE": str(ca),
            }
        )
    }
    assert rows["kafka_sasl_password"].value == "***"
    assert rows["kafka_ssl_key_password"].value == "***"
    assert rows["kafka_ssl_key_password"].source == "env"
    assert rows["kafka_sasl_username"].value == "u"


def test_a_plain_bootstrap_string_is_a_plaintext_connection() -> None:
    kafka = KafkaConnection.of("127.0.0.1:9092")
    assert kafka == KafkaConnection("127.0.0.1:9092")
    assert KafkaConnection.of(kafka) is kafka
