"""Static checks of the container and monitoring files.

No server is needed: these run the validators that ship with the tools
(`docker-compose config`, `promtool check/test`) and read the files as text.

A missing `docker-compose` or `promtool` binary skips the test on a developer
machine, but fails it when the CI environment variable is set, so CI cannot
go green without having validated anything (`make test` installs both:
`ensure_apt_packages` in ops/stack-lib.sh).

The first checks read the compose and rules files with a small indentation-based
helper that only understands the block-style YAML these files are written in (they
predate PyYAML among the dev dependencies); the alert checks parse them with PyYAML.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.integration.support import require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
PROM_CONFIG = REPO_ROOT / "ops" / "prometheus" / "prometheus.yml"
PROM_RULES_DIR = REPO_ROOT / "ops" / "prometheus" / "rules"
PROM_TESTS = REPO_ROOT / "ops" / "prometheus" / "tests" / "tierstream_test.yml"

RUNBOOK = REPO_ROOT / "docs" / "runbook.md"

EXPECTED_ALERTS = {
    "TierstreamTargetDown",
    "TierstreamAbsent",
    "TierstreamNoProgress",
    "TierstreamDLQActivity",
    "TierstreamEventTimeLagHigh",
    "TierstreamLagGrowing",
    "TierstreamBatchErrorRatioHigh",
    "TierstreamDLQRatioHigh",
    "TierstreamModelAUCDrop",
    "TierstreamModelDrift",
    "TierstreamModelLearningDropped",
    "TierstreamModelNotAdvancing",
    "TierstreamTierFlapping",
}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


def _content_lines(text: str) -> list[str]:
    """Lines without blank lines and full-line comments."""
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _children(lines: list[str], key: str) -> list[str]:
    """Lines nested under the first `key:` line (block YAML, any indent).

    Also returns the text of a block scalar (`key: >-`, `key: |`).
    """
    pattern = re.compile(rf"^(\s*)(?:-\s+)?{re.escape(key)}:\s*([|>][-+]?)?\s*(#.*)?$")
    for i, line in enumerate(lines):
        m = pattern.match(line)
        if m:
            base = _indent(line)
            out = []
            for nxt in lines[i + 1 :]:
                if _indent(nxt) <= base:
                    break
                out.append(nxt)
            return out
    return []


def _mapping(lines: list[str]) -> dict[str, list[str]]:
    """Split block lines into {key: nested lines} at their shallowest indent."""
    if not lines:
        return {}
    base = min(_indent(ln) for ln in lines)
    result: dict[str, list[str]] = {}
    current: str | None = None
    for line in lines:
        if _indent(line) == base:
            m = re.match(r"^\s*([^\s:#][^:#]*?):(?:\s|$)", line)
            current = m.group(1).strip().strip("'\"") if m else None
            if current is not None:
                result[current] = [line]
        elif current is not None:
            result[current].append(line)
    return result


def _scalar(lines: list[str], key: str) -> str | None:
    """Value of `key: value` on a line of `lines` (first match), unquoted."""
    pattern = re.compile(rf"^\s*(?:-\s+)?{re.escape(key)}:\s*(.+?)\s*$")
    for line in lines:
        m = pattern.match(line)
        if m:
            value = re.sub(r"\s+#.*$", "", m.group(1))
            return value.strip("'\"")
    return None


def _compose_services() -> dict[str, list[str]]:
    services = _mapping(_children(_content_lines(COMPOSE_FILE.read_text()), "services"))
    assert services, f"no services found in {COMPOSE_FILE}"
    return services


def _env_names(service_lines: list[str]) -> list[str]:
    """Variable names of a service's `environment:` (mapping or list form)."""
    names = []
    for line in _children(service_lines, "environment"):
        item = line.strip()
        if item.startswith("- "):
            names.append(re.split(r"[=\s]", item[2:].strip().strip("'\""), maxsplit=1)[0])
        else:
            names.append(item.split(":", 1)[0].strip().strip("'\""))
    return names


def _image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]  # a registry host may carry a ":port"
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


# --------------------------------------------------------------------------
# tool validators
# --------------------------------------------------------------------------


def test_compose_config_is_valid() -> None:
    docker_compose = require_tool("docker-compose")
    _assert_ok(_run(docker_compose, "-f", str(COMPOSE_FILE), "config", "-q"))


def test_prometheus_config_is_valid() -> None:
    promtool = require_tool("promtool")
    _assert_ok(_run(promtool, "check", "config", str(PROM_CONFIG)))


def test_prometheus_rules_are_valid() -> None:
    promtool = require_tool("promtool")
    rule_files = sorted(str(p) for p in PROM_RULES_DIR.glob("*.yml"))
    assert rule_files, f"no rule files in {PROM_RULES_DIR}"
    _assert_ok(_run(promtool, "check", "rules", *rule_files))


def test_prometheus_rule_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    _assert_ok(_run(promtool, "test", "rules", str(PROM_TESTS)))


# --------------------------------------------------------------------------
# static checks (no tools needed)
# --------------------------------------------------------------------------


def test_compose_has_expected_services() -> None:
    services = _compose_services()
    assert {"kafka", "redis", "tierstream", "prometheus", "grafana"} <= services.keys()


def test_compose_images_are_pinned() -> None:
    problems = []
    for name, lines in _compose_services().items():
        image = _scalar(lines, "image")
        has_build = any(re.match(r"^\s*build:", ln) for ln in lines)
        if image is None:
            if not has_build:
                problems.append(f"{name}: neither image nor build")
            continue
        if not _image_is_pinned(image):
            problems.append(f"{name}: image {image!r} has no tag/digest or uses :latest")
    assert not problems, "\n".join(problems)


def test_compose_tierstream_env_names_are_prefixed() -> None:
    tierstream = _compose_services()["tierstream"]
    names = _env_names(tierstream)
    assert names, "tierstream service has no environment"
    bad = [n for n in names if not n.startswith("TIERSTREAM_")]
    assert not bad, f"environment names without the TIERSTREAM_ prefix: {bad}"
    assert {
        "TIERSTREAM_KAFKA_BOOTSTRAP",
        "TIERSTREAM_REDIS_URL",
        "TIERSTREAM_GROUP_ID",
        "TIERSTREAM_METRICS_PORT",
    } <= set(names)


def test_compose_tierstream_waits_for_healthy_dependencies() -> None:
    tierstream = _compose_services()["tierstream"]
    depends = _mapping(_children(tierstream, "depends_on"))
    for dep in ("kafka", "redis"):
        assert dep in depends, f"tierstream does not depend on {dep}"
        assert _scalar(depends[dep], "condition") == "service_healthy", dep
    assert any("/healthz" in ln for ln in _children(tierstream, "healthcheck"))


def test_dockerfile_basics() -> None:
    lines = _content_lines(DOCKERFILE.read_text())
    text = "\n".join(lines)
    assert "python:3.11-slim" in text
    for from_line in (ln for ln in lines if ln.startswith("FROM ")):
        image = from_line.split()[1]
        if image.startswith("${"):  # ARG-substituted; the ARG default is checked below
            continue
        assert image in {"builder"} or _image_is_pinned(image), from_line
    users = [ln.split(None, 1)[1] for ln in lines if ln.startswith("USER ")]
    assert users, "Dockerfile never drops root"
    assert users[-1].split(":")[0] not in {"root", "0"}, f"runs as {users[-1]}"
    assert 'ENTRYPOINT ["tierstream"]' in text
    assert 'CMD ["run"]' in text
    assert re.search(r"^EXPOSE 9108$", text, re.M)
    assert "pip install --no-cache-dir -c constraints.txt ." in text


def test_alert_rules_have_labels_and_annotations() -> None:
    found = set()
    for path in PROM_RULES_DIR.glob("*.yml"):
        rules_block = _children(_content_lines(path.read_text()), "rules")
        # each rule starts with "- alert:" / "- record:" at the block's indent
        starts = [i for i, ln in enumerate(rules_block) if re.match(r"^\s*- (alert|record):", ln)]
        for begin, end in zip(starts, [*starts[1:], len(rules_block)], strict=True):
            rule = rules_block[begin:end]
            name = _scalar(rule, "alert")
            if name is None:
                continue
            found.add(name)
            labels = _children(rule, "labels")
            annotations = _children(rule, "annotations")
            assert _scalar(labels, "severity") in {"critical", "warning", "info"}, name
            for key in ("summary", "description"):
                value = _scalar(annotations, key)
                if value in {">", ">-", "|", "|-"}:  # block scalar: text is on the next lines
                    value = " ".join(ln.strip() for ln in _children(annotations, key))
                assert value, f"{name}: no {key} annotation"
            runbook = _scalar(annotations, "runbook_url")
            assert runbook == f"docs/runbook.md#{name.lower()}", f"{name}: runbook_url {runbook!r}"
    assert found >= EXPECTED_ALERTS, f"missing alerts: {EXPECTED_ALERTS - found}"


def _alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in sorted(PROM_RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(r for r in group["rules"] if "alert" in r)
    return rules


def test_every_alert_has_a_runbook_section() -> None:
    headings = set(re.findall(r"^## (\S+)\s*$", RUNBOOK.read_text(), re.M))
    missing = [r["alert"] for r in _alert_rules() if r["alert"] not in headings]
    assert not missing, f"alerts without a `## <name>` section in docs/runbook.md: {missing}"


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    """promtool passes a test file that never mentions an alert: each alert needs a case
    where it fires and one where it must not."""
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(PROM_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {r["alert"] for r in _alert_rules()}
    assert alerts >= EXPECTED_ALERTS
    assert not alerts - fires, f"never tested firing: {sorted(alerts - fires)}"
    assert not alerts - silent, f"never tested silent: {sorted(alerts - silent)}"
