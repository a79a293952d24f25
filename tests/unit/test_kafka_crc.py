"""kafka-python checksums every record batch it reads or writes (CRC32C). It uses the
``crc32c`` C extension when it can import it and silently falls back to pure Python
otherwise, which makes the consumer about 5x slower and costs the producer a tenth of
the service's time (issue 12). The extension is a runtime dependency; these tests fail
if kafka-python would not use it."""

from __future__ import annotations

import tomllib

from tests.integration.support import REPO

#: CRC-32C of b"123456789", the check value of the Castagnoli polynomial (RFC 3720, B.4).
CHECK_VALUE = 0xE3069283


def test_kafka_python_checksums_with_the_c_extension() -> None:
    import crc32c
    from kafka.record import default_records, util

    assert util.crc32c_c is crc32c.crc32c, "kafka-python did not import the crc32c extension"
    # calc_crc32c binds its implementation as a default argument when kafka-python is
    # imported: that binding is what the record batches use.
    assert util.calc_crc32c.__defaults__ == (crc32c.crc32c,)
    assert default_records.calc_crc32c is util.calc_crc32c
    assert util.calc_crc32c(memoryview(b"123456789")) == CHECK_VALUE


def test_the_extension_is_a_runtime_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(d.split(">")[0].split("=")[0] == "crc32c" for d in project["dependencies"])
    pins = (REPO / "constraints.txt").read_text().splitlines()
    assert any(line.startswith("crc32c==") for line in pins)
