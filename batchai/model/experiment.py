"""Experiments: the create is a PUT with no body (reference §3.3), so there is no parameters model.

Anything a client sends is ignored; the name is checked with `names.validate_name`.
"""

from __future__ import annotations

__all__: list[str] = []
