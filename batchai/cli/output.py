"""What the CLI prints: `-o table|json|jsonc|tsv|yaml` and `--query` (JMESPath), as `az` prints them.

`table` is for people (each command's own columns; with `--query`, the columns of what the query
made); the others are for scripts: `json` (indented), `jsonc` (coloured on a terminal), `tsv`
(one line per item, its scalar values tab-separated: `-o tsv --query name` prints bare names),
`yaml`; `none` prints nothing (the exit code says it all).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from typing import Any

FORMATS = ("table", "json", "jsonc", "tsv", "yaml", "none")
Columns = list[tuple[str, Callable[[Any], Any]]]


class BadQuery(ValueError):
    """The --query is not a JMESPath expression."""


def query(expression: str | None, data: Any) -> Any:
    if not expression:
        return data
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.search(expression, data)
    except JMESPathError as exc:
        raise BadQuery(f"--query {expression!r} is not valid JMESPath: {exc}") from None


def render(data: Any, fmt: str, columns: Columns | None, *, color: bool = False) -> str:
    """`data` as `fmt`; a table uses `columns` when given (the command's own view), else the data's keys."""
    if fmt == "none":
        return ""
    if fmt in ("json", "jsonc"):
        text = json.dumps(data, indent=2)
        return _colour_json(text) if fmt == "jsonc" and color else text
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")
    if fmt == "tsv":
        return "\n".join(_tsv_row(row) for row in (data if isinstance(data, list) else [data]))
    return _table(data, columns)


def _scalar(value: Any) -> str:
    if value is None or isinstance(value, dict):
        return ""  # kept as an empty field, so columns line up across rows
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tsv_row(row: Any) -> str:
    if isinstance(row, dict):
        return "\t".join(_scalar(v) for v in row.values())
    if isinstance(row, list):
        return "\t".join(_scalar(v) for v in row)
    return _scalar(row)


def _table(data: Any, columns: Columns | None) -> str:
    from rich.console import Console
    from rich.table import Table

    rows = data if isinstance(data, list) else [data]
    if columns is None:
        keys = list(dict.fromkeys(k for r in rows if isinstance(r, dict) for k in r)) or ["value"]
        columns = [(k, (lambda key: lambda r: r.get(key) if isinstance(r, dict) else r)(k)) for k in keys]
    table = Table(*[name for name, _ in columns])
    for row in rows:
        values = []
        for _, get in columns:
            value = get(row)
            values.append(
                ""
                if value is None
                else value
                if isinstance(value, str)
                else json.dumps(value)
                if isinstance(value, (dict, list))
                else str(value)
            )
        table.add_row(*values)
    console = Console(width=200 if not sys.stdout.isatty() else None, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text().rstrip("\n")


def _colour_json(text: str) -> str:
    from rich.console import Console
    from rich.json import JSON

    console = Console(force_terminal=True, record=True, file=io.StringIO())
    console.print(JSON(text))
    return console.export_text(styles=True).rstrip("\n")
