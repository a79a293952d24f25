"""`tierstream demo`: no server, prints changes and a summary, writes a well-formed report."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from consumer.cli import main
from consumer.demo.pipeline import DemoConfig, run_demo
from tests.integration.support import REPO

#: Elements that have no end tag in HTML.
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}


class Checker(HTMLParser):
    """Checks that every element is closed in order, and keeps what the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.counts: dict[str, int] = {}
        self.svg_shapes: list[int] = []
        self.text: list[str] = []
        self.has_doctype = False
        self.external: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.has_doctype = self.has_doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.counts[tag] = self.counts.get(tag, 0) + 1
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)
        if tag == "svg":
            self.svg_shapes.append(0)
        elif tag in ("polygon", "rect", "line", "path") and "svg" in self.stack:
            self.svg_shapes[-1] += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag in ("polygon", "rect", "line", "path") and "svg" in self.stack:
            self.svg_shapes[-1] += 1

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out_dir = tmp_path_factory.mktemp("demo")
    stream = io.StringIO()
    run_demo(DemoConfig(users=150, events=8000, seed=3, days=90, out_dir=out_dir), stream=stream)
    return out_dir, stream.getvalue()


def test_the_report_is_well_formed_html_with_its_charts(demo: tuple[Path, str]) -> None:
    out_dir, _ = demo
    page = (out_dir / "demo-report.html").read_text(encoding="utf-8")
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.has_doctype
    assert checker.problems == [] and checker.stack == []
    assert checker.external == [], "the report must not load anything from elsewhere"
    assert "<script" not in page
    # populations over time, the transition matrix, type vs tier (+ centroids once learned)
    assert len(checker.svg_shapes) >= 3 and all(n > 0 for n in checker.svg_shapes)
    assert checker.counts.get("polygon", 0) >= 4  # one stacked area per tier
    assert checker.counts.get("table", 0) >= 2  # features per tier, sample of changes
    text = " ".join(checker.text)
    for heading in ("Tier populations over event time", "Transition matrix", "Mean features"):
        assert heading in text


def test_the_demo_prints_changes_and_a_summary(demo: tuple[Path, str]) -> None:
    out_dir, printed = demo
    assert "A sample of tier changes" in printed
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d  u\d{6}  \S+ -> \S+  ", printed)
    for part in ("Tier populations at", "from (rows) -> to", "latent customer type"):
        assert part in printed
    assert "adjusted Rand index, type vs tier: " in printed
    assert re.search(r"[\d,]+ records/s through the pipeline", printed)
    snapshot = (out_dir / "demo-snapshot.jsonl").read_bytes().splitlines()
    assert len(snapshot) == 150
    changes = [orjson.loads(line) for line in (out_dir / "demo-changes.jsonl").read_bytes().split()]
    last = {c["user_id"]: c["tier"] for c in changes}
    assert {orjson.loads(s)["user_id"]: orjson.loads(s)["tier"] for s in snapshot} == last


def test_the_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "--users", "30", "--events", "900", "--out-dir", str(tmp_path / "o")]
    assert main(argv) == 0
    assert (tmp_path / "o" / "demo-report.html").is_file()
    captured = capsys.readouterr()
    assert "Tier populations at" in captured.out and "900/900 records" in captured.err
    assert main(["demo", "--users", "0"]) == 2


def test_the_command_line_defaults_are_the_demo_config() -> None:
    from dataclasses import asdict

    from consumer.cli import build_parser

    parsed = vars(build_parser().parse_args(["demo"]))
    config = asdict(DemoConfig())
    shown = {k: parsed[k] for k in ("users", "events", "seed", "days", "out_dir")}
    assert shown == {k: config[k] for k in shown}


def test_make_demo_needs_only_the_venv() -> None:
    makefile = (REPO / "Makefile").read_text()
    rule = re.search(r"^demo: (.*)$\n\t(.*)$", makefile, re.M)
    assert rule, "the Makefile has no demo target"
    assert "$(STAMP)" in rule.group(1) and "tierstream demo" in rule.group(2)
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^make (\w+)", readme, re.M)
    assert commands[:2] == ["demo", "test"], "the README opens with make demo, then make test"
