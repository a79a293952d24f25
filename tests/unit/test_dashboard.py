"""The Grafana dashboard (ops/grafana/dashboard.py): the committed JSON is the generator's
output, every metric of the service is on it, every panel asks the chosen data source,
and Grafana's provisioning gives that data source the uid the dashboard defaults to."""

from __future__ import annotations

import doctest
import importlib.util
import json
import re
from collections.abc import Iterator
from functools import cache
from types import ModuleType
from typing import Any

import pytest
import yaml

from consumer.service.metrics import Metrics
from tests.integration.support import REPO

GENERATOR = REPO / "ops" / "grafana" / "dashboard.py"
DASHBOARD = REPO / "ops" / "grafana" / "dashboards" / "tierstream.json"
PROVISIONING = REPO / "ops" / "grafana" / "provisioning"

#: The series a metric family is queried by, per type (prometheus_client names a counter's
#: family without the ``_total`` its series carry).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


@cache
def generator() -> ModuleType:
    """ops/grafana/dashboard.py, which is a script, not part of an installed package."""
    spec = importlib.util.spec_from_file_location("tierstream_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows are only headers), nested ones included."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def expressions(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p["targets"]]


def test_committed_json_is_what_the_generator_writes() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == generator().render(), (
        "ops/grafana/dashboards/tierstream.json is not the generator's output: "
        "edit ops/grafana/dashboard.py and run `make dashboard`"
    )


def test_generator_doctests_pass() -> None:
    # ops/ is outside pytest's --doctest-modules paths (it is no package).
    failed, attempted = doctest.testmod(generator(), optionflags=doctest.ELLIPSIS)
    assert attempted and not failed


def test_every_service_metric_is_in_a_panel() -> None:
    exprs = expressions(committed())
    families = [f for f in Metrics().registry.collect() if f.name.startswith("tierstream_")]
    assert len(families) > 20  # read from the registry, not a list that could go stale
    missing = []
    for family in families:
        if family.type not in SERIES_SUFFIXES:
            pytest.fail(f"{family.name}: a {family.type}; say here which series show it")
        names = [family.name + suffix for suffix in SERIES_SUFFIXES[family.type]]
        # \b: tierstream_batch_records must not count as shown by ..._records_bucket.
        if not any(re.search(rf"\b{name}\b", e) for name in names for e in exprs):
            missing.append(f"{family.name} ({family.type})")
    assert not missing, f"metrics on no panel of the dashboard: {missing}"


def test_every_panel_queries_the_datasource_variable() -> None:
    board = committed()
    shown = list(panels(board))
    assert shown
    for panel in shown:
        wanted = {"type": "prometheus", "uid": "${datasource}"}
        assert panel.get("datasource") == wanted, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for t in panel["targets"]:
            assert t.get("datasource") == wanted, f"{panel['title']} {t['refId']}"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_panels_use_only_known_variables_and_have_unique_ids() -> None:
    board = committed()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    defined = {v["name"] for v in board["templating"]["list"]}
    builtin = {"__rate_interval", "__range", "__interval"}
    for expr in expressions(board):
        for name in re.findall(r"\$\{?(\w+)", expr):
            assert name in defined | builtin, f"unknown variable ${name} in {expr}"


def test_provisioned_datasource_is_the_variable_default() -> None:
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    prometheus = [d for d in provisioned["datasources"] if d["type"] == "prometheus"]
    assert len(prometheus) == 1
    default = next(v for v in committed()["templating"]["list"] if v["name"] == "datasource")
    assert default["current"]["value"] == prometheus[0]["uid"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "tierstream.yml").read_text())
    compose = (REPO / "docker-compose.yml").read_text()
    # The provider reads the folder docker-compose.yml mounts the dashboards into.
    path = providers["providers"][0]["options"]["path"]
    assert f"./ops/grafana/dashboards:{path}:ro" in compose
    assert "./ops/grafana/provisioning:/etc/grafana/provisioning:ro" in compose
