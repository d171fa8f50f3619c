"""Shared pieces of the resource model: the wire base class, ids, variables, durations, `parse`.

Wire names are camelCase and attributes snake_case; every field name is chosen so that
`to_camel` yields the wire name, and the few exceptions carry an explicit alias.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from batchai.errors import ApiError


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown (e.g. read-only) keys are ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class FieldError(ValueError):
    """A ValueError raised by a model validator that points at fields of that model.

    `loc` is the path (wire names, list indexes) below the model being validated; `targets`,
    when given, are several such paths the error is about (e.g. two toolkit settings at once).
    `parse` turns them into the ARM error `target`.
    """

    def __init__(self, message: str, loc: tuple = (), targets: list[tuple] | None = None, missing: bool = False):
        super().__init__(message)
        self.message = message
        self.loc = tuple(loc)
        self.targets = targets
        self.missing = missing  # report as a missing required field


# -- field types --------------------------------------------------------------------------


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("Input should be a valid integer, not a boolean")
    return value


def _ci_enum(*values: str):
    """Accept an enum value in any letter case and normalise it to its canonical spelling."""
    canonical = {v.lower(): v for v in values}

    def normalise(value: Any) -> Any:
        if isinstance(value, str):
            return canonical.get(value.lower(), value)
        return value

    return BeforeValidator(normalise)


Int = Annotated[int, BeforeValidator(_no_bool)]
NonNegativeInt = Annotated[int, BeforeValidator(_no_bool), Field(ge=0)]
PositiveInt = Annotated[int, BeforeValidator(_no_bool), Field(ge=1)]
# Upper bounds (README "Limits"): one cluster or job of at most MAX_NODES nodes (a local node is an OS
# process); at most MAX_PROCESSES processes of a job (each is planned and started).
MAX_NODES = 1000
MAX_PROCESSES = 10_000
NodeCount = Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=MAX_NODES)]
JobNodeCount = Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=MAX_NODES)]
ProcessCount = Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=MAX_PROCESSES)]
ServerCount = Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=MAX_PROCESSES)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


def matching(pattern: str, description: str, max_length: int | None = None):
    """An AfterValidator: the whole string must match `pattern` (readable message otherwise)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value) or (max_length is not None and len(value) > max_length):
            raise ValueError(f"'{value}' is not allowed: {description}")
        return value

    return AfterValidator(check)


class ResourceId(WireModel):
    id: NonEmptyStr


class KeyVaultSecretReference(WireModel):
    source_vault: ResourceId
    secret_url: NonEmptyStr


class EnvironmentVariable(WireModel):
    name: NonEmptyStr
    value: str


class EnvironmentVariableWithSecretValue(WireModel):
    name: NonEmptyStr
    value: str | None = None
    value_secret_reference: KeyVaultSecretReference | None = None

    @model_validator(mode="after")
    def _one_value(self):
        if (self.value is None) == (self.value_secret_reference is None):
            raise FieldError(
                "exactly one of 'value' or 'valueSecretReference' must be given", targets=[("value",), ("valueSecretReference",)]
            )
        return self


def check_unique_names(items, what: str, loc_name: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items or []):
        if item.name in seen:
            raise FieldError(f"the {what} '{item.name}' is defined more than once", loc=(loc_name, i, "name"))
        seen.add(item.name)


# -- durations ------------------------------------------------------------------------------

_NUM = r"(\d+(?:[.,]\d+)?)"
_ISO = re.compile(rf"P(?:{_NUM}W)?(?:{_NUM}D)?(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?", re.IGNORECASE)
_DOTNET = re.compile(r"(?:(\d+)[.:])?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?")
_PYTHON = re.compile(r"(\d+) days?, (\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _f(text: str | None) -> float:
    return float(text.replace(",", ".")) if text else 0.0


def _fraction(digits: str | None) -> float:
    return float("0." + digits) if digits else 0.0


def parse_duration(value: Any) -> timedelta:
    """A duration from ISO-8601 (`P7D`, `PT2H`, `P1DT2H3M4.5S`), .NET text (`7.00:00:00`,
    `01:30:00`), Python's `str(timedelta)` (`7 days, 0:00:00`), or a number of seconds.

    Raises ValueError for anything else, and for negative durations.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError("a duration must be an ISO-8601 duration such as 'P7D' or 'PT2H'")
    elif isinstance(value, (int, float)):
        result = timedelta(seconds=value)
    elif isinstance(value, str):
        text = value.strip()
        if m := _ISO.fullmatch(text):
            if text.upper() in ("P", "PT") or text.upper().endswith("T"):
                raise ValueError(f"'{value}' is not a valid ISO-8601 duration")
            w, d, h, mi, s = (_f(g) for g in m.groups())
            result = timedelta(weeks=w, days=d, hours=h, minutes=mi, seconds=s)
        elif m := _DOTNET.fullmatch(text):
            days, hours, minutes, seconds, frac = m.groups()
            if int(hours) > 23 or int(minutes) > 59 or int(seconds) > 59:
                raise ValueError(f"'{value}' is not a valid duration: hours must be below 24, minutes and seconds below 60")
            result = timedelta(days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=int(seconds) + _fraction(frac))
        elif m := _PYTHON.fullmatch(text):
            days, hours, minutes, seconds, frac = m.groups()
            result = timedelta(days=int(days), hours=int(hours), minutes=int(minutes), seconds=int(seconds) + _fraction(frac))
        elif _NUMBER.fullmatch(text):
            result = timedelta(seconds=float(text))
        else:
            raise ValueError(f"'{value}' is not a valid duration; use ISO-8601, e.g. 'P7D' or 'PT2H30M'")
    else:
        raise ValueError("a duration must be an ISO-8601 duration string such as 'P7D' or 'PT2H'")
    if result < timedelta(0):
        raise ValueError("a duration cannot be negative")
    return result


def format_duration(value: timedelta) -> str:
    """ISO-8601, the only form the SDK reads: `P7D`, `PT2H`, `P1DT2H3M4.5S`, `PT0.5S`, `PT0S`."""
    micros = value // timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    days, rest = divmod(micros, 86_400_000_000)
    hours, rest = divmod(rest, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, frac = divmod(rest, 1_000_000)
    out = f"{sign}P" + (f"{days}D" if days else "")
    time = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if frac:
        time += f"{seconds}.{frac:06d}".rstrip("0") + "S"
    elif seconds:
        time += f"{seconds}S"
    if time:
        out += "T" + time
    elif not days:
        out += "T0S"
    return out


def _duration(value: Any) -> timedelta:
    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, when_used="json")]


# -- parse: request bodies -> models, pydantic errors -> ApiError ----------------------------

M = TypeVar("M", bound=BaseModel)


def format_loc(loc: tuple) -> str:
    """('properties', 'inputDirectories', 0, 'id') -> 'properties.inputDirectories[0].id'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _join(prefix: str, loc: tuple) -> str:
    path = format_loc(loc)
    if not prefix or not path:
        return prefix or path
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


_TYPE_MESSAGES = {
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "list_type": "must be a JSON array",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


def describe_error(err: ErrorDetails, prefix: str = "") -> tuple[str | None, str]:
    """(target, message) for one pydantic error dict."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    exc = (err.get("ctx") or {}).get("error")
    if isinstance(exc, FieldError):
        if exc.targets:
            targets = [_join(prefix, loc + t) for t in exc.targets]
            where = _join(prefix, loc)
            return ",".join(targets), (f"The value of '{where}' is invalid: " if where else "") + f"{exc.message}."
        target = _join(prefix, loc + exc.loc) or None
        if exc.missing:
            return target, f"The field '{target}' is required but was not given."
        return target, f"The value of '{target}' is invalid: {exc.message}." if target else exc.message + "."
    target = _join(prefix, loc) or None
    where = f"'{target}'" if target else "The request body"
    if kind == "missing":
        return target, f"The field {where} is required but was not given."
    if kind in _TYPE_MESSAGES:
        return target, f"The value of {where} is invalid: it {_TYPE_MESSAGES[kind]}."
    if kind == "value_error" and exc is not None:
        detail = str(exc)
    else:
        detail = err.get("msg", "invalid value")
    detail = detail[0].lower() + detail[1:] if detail[:1].isupper() and not detail[1:2].isupper() else detail
    return target, f"The value of {where} is invalid: {detail.rstrip('.')}."


def api_error_from(exc: ValidationError, target_prefix: str = "") -> ApiError:
    errors = exc.errors(include_url=False)
    if not errors:
        return ApiError.bad_request("The request content is invalid.", target=target_prefix or None)
    target, message = describe_error(errors[0], target_prefix)
    if len(errors) > 1:
        message += f" ({len(errors) - 1} more error{'s' if len(errors) > 2 else ''} not shown.)"
    return ApiError.bad_request(message, target=target)


def parse(model_cls: type[M], body: Any, target_prefix: str = "", *, context: dict | None = None) -> M:
    """Validate a request body into `model_cls`, or raise a 400 `ApiError`.

    The error's target is the dotted camelCase path of the first problem (prefixed with
    `target_prefix`), e.g. `properties.mountVolumes.azureFileShares[0].relativeMountPath`.
    `context` is passed to pydantic validators (see `JobProperties` for `require_cluster`).
    """
    if not isinstance(body, dict):
        raise ApiError.bad_request("The request body must be a JSON object.")
    try:
        return model_cls.model_validate(body, context=context)
    except ValidationError as exc:
        raise api_error_from(exc, target_prefix) from None
