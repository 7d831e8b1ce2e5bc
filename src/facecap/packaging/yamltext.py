"""Write JSON values as block YAML that every YAML 1.1/1.2 reader (PyYAML, the nucleus's Jackson/SnakeYAML,
the GDK) reads back as the same values.

Strings are written plain when they are identifier-like words and otherwise as JSON strings, which are
valid double-quoted YAML scalars, so no value can turn into a different type (`"0"`, `"on"`, `"null"` stay
strings). Floats always carry a dot, because YAML 1.1 reads
`1e-05` as a string.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Words that YAML 1.1 readers turn into booleans or null when unquoted.
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


class Script(str):
    """A multi-line string written as a literal block (`|`), as shell scripts read best."""


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no JSON form")
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, str):
        if _PLAIN_KEY.match(value) and value.lower() not in _RESERVED:
            return value  # an identifier-like word reads the same unquoted
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"not a JSON scalar: {value!r}")


def key(name: str) -> str:
    return name if _PLAIN_KEY.match(name) else json.dumps(name, ensure_ascii=False)


def block(value: Any, indent: int) -> list[str]:
    """Lines for a mapping's or list's body at `indent` spaces; a scalar is not a block."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for name, item in value.items():
            lines += _entry(f"{pad}{key(str(name))}:", item, indent)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for item in value:
            if isinstance(item, Mapping) and item:
                # "- " followed by the first key, then the others aligned under it.
                body = block(item, indent + 2)
                lines.append(f"{pad}- {body[0].lstrip()}")
                lines += body[1:]
            else:
                lines += _entry(f"{pad}-", item, indent)
    else:
        raise TypeError("block() takes a mapping or a list")
    return lines


def _entry(head: str, item: Any, indent: int) -> list[str]:
    if isinstance(item, Script):
        # A literal block takes its indentation from its first line, so that line must not be indented.
        if not item.strip() or item[0] in " \t":
            raise ValueError("a script must be non-empty and start at column 0")
        pad = " " * (indent + 2)
        return [f"{head} |", *(f"{pad}{line}".rstrip() for line in item.rstrip("\n").split("\n"))]
    if isinstance(item, Mapping):
        return [f"{head} {{}}"] if not item else [head, *block(item, indent + 2)]
    if isinstance(item, Sequence) and not isinstance(item, str):
        return [f"{head} []"] if not item else [head, *block(item, indent + 2)]
    return [f"{head} {scalar(item)}"]
