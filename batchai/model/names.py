"""Name rules for path segments (reference §2.1); the SDK checks none of them."""

from __future__ import annotations

import re

from batchai.errors import ApiError

_NAME = re.compile(r"[-\w_]+", re.ASCII)
_RESOURCE_GROUP = re.compile(r"[-\w._]+", re.ASCII)


def validate_name(kind: str, value: str, target: str) -> str:
    """Workspace, cluster, file server, experiment and job names: `^[-\\w_]+$`, 1-64 characters."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > 64:
        raise ApiError.bad_request(
            f"The {kind} name '{value}' is invalid: it must be 1 to 64 characters long and contain only letters, digits, '-' and '_'.",
            target=target,
            code="InvalidResourceName",
        )
    return value


def validate_resource_group(value: str) -> str:
    """Resource group names: `^[-\\w\\._]+$`, 1-90 characters."""
    if not isinstance(value, str) or not _RESOURCE_GROUP.fullmatch(value) or len(value) > 90 or value.endswith("."):
        raise ApiError.bad_request(
            f"The resource group name '{value}' is invalid: it must be 1 to 90 characters long and contain only "
            "letters, digits, '-', '_' and '.', and not end with '.'.",
            target="resourceGroupName",
            code="InvalidResourceName",
        )
    return value


def validate_subscription(value: str) -> str:
    """Subscription ids (GUIDs on Azure): letters, digits, '-' and '_', 1-64 characters; never a path step."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > 64:
        raise ApiError.bad_request(f"The subscription id '{value}' is invalid.", target="subscriptionId", code="InvalidSubscriptionId")
    return value
