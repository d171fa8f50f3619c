"""`$VAR` / `${VAR}` expansion of job fields, as the service did it.

Undefined variables expand to the empty string: the TensorFlow-GPU-Distributed recipe names
`$AZ_BATCHAI_INPUT_DATASET` without defining that input, and the service ran it anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def expand(text: str, env: Mapping[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m["braced"] or m["plain"], ""), text)
