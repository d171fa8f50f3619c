"""The CLI's output formats, --query, options written after the command, and -L specs (pure parts)."""

from __future__ import annotations

import json

import pytest
import yaml

from batchai.cli.client import CliError
from batchai.cli.common import hoist_globals
from batchai.cli.output import BadQuery, query, render
from batchai.cli.remote import Forward

ROWS = [
    {"name": "a", "properties": {"n": 1}, "tags": ["x", "y"], "ok": True, "none": None},
    {"name": "b", "properties": {"n": 2}, "tags": [], "ok": False, "none": None},
]


def test_tsv_is_one_line_per_item_with_scalar_fields():
    assert render(ROWS, "tsv", None) == "a\t\t2\ttrue\t\nb\t\t0\tfalse\t"
    assert render(query("[].[name, properties.n]", ROWS), "tsv", None) == "a\t1\nb\t2"
    assert render(query("[].name", ROWS), "tsv", None) == "a\nb"
    assert render(query("[0].properties.n", ROWS), "tsv", None) == "1"


def test_json_yaml_none_and_table():
    assert json.loads(render(ROWS, "json", None)) == ROWS
    assert json.loads(render(ROWS, "jsonc", None, color=False)) == ROWS
    assert "\x1b[" in render(ROWS, "jsonc", None, color=True)
    assert yaml.safe_load(render(ROWS, "yaml", None)) == ROWS
    assert render(ROWS, "none", None) == ""
    table = render(ROWS, "table", [("name", lambda r: r["name"]), ("n", lambda r: r["properties"]["n"])])
    assert "name" in table and "a" in table and "2" in table
    generic = render(query("[].{who: name, size: properties.n}", ROWS), "table", None)
    assert "who" in generic and "size" in generic


def test_a_bad_query_says_so():
    with pytest.raises(BadQuery, match="JMESPath"):
        query("[?", ROWS)


def test_global_options_move_before_the_command_but_not_past_a_double_dash():
    assert hoist_globals(["job", "list", "-w", "ws", "-o", "tsv", "--query", "[].name", "--json"]) == [
        "-o",
        "tsv",
        "--query",
        "[].name",
        "--json",
        "job",
        "list",
        "-w",
        "ws",
    ]
    assert hoist_globals(["job", "show", "--output=yaml", "--output-dir", "d"]) == ["--output=yaml", "job", "show", "--output-dir", "d"]
    assert hoist_globals(["x", "--", "-o", "tsv"]) == ["x", "--", "-o", "tsv"]


def test_forward_specs():
    assert Forward.parse("8888:localhost:8889") == Forward(8888, "localhost", 8889)
    assert Forward.parse("127.0.0.1:0:10.0.0.4:22") == Forward(0, "10.0.0.4", 22)
    for bad in ("8888", "a:b:c", "0.0.0.0:1:h:2", "1:h:0", "70000:h:1"):
        with pytest.raises(CliError):
            Forward.parse(bad)
