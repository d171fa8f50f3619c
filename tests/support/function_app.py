"""The Functions app's registered functions, by name.

`FunctionApp.get_functions()` may be called once per process (a second call reports every
function as a duplicate name), so every test asks here.
"""

from __future__ import annotations

import importlib
from functools import lru_cache


@lru_cache(maxsize=1)
def registered_functions() -> dict:
    module = importlib.import_module("function_app.function_app")
    return {f.get_function_name(): f for f in module.app.get_functions()}


def user_code(fn):
    """The function as written: under the durable client wrapper or the orchestrator handle, if any."""
    code = fn.get_user_function()
    return getattr(code, "client_function", None) or getattr(code, "orchestrator_function", None) or code
