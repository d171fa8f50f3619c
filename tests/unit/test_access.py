"""Roles and what requests ask of them (batchai.access): pure."""

from __future__ import annotations

import pytest

from batchai import access
from batchai.access import Assignment, Principal

WS = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/ws"
OTHER = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/ws2"
JOB = WS + "/experiments/e/jobs/j"


def principal(*assignments: tuple[str, str]) -> Principal:
    return Principal("p", "p", "token", tuple(Assignment(scope, role) for scope, role in assignments))


@pytest.mark.parametrize(
    ("role", "read", "write", "manage"),
    [("Reader", True, False, False), ("Contributor", True, True, False), ("Owner", True, True, True)],
)
def test_each_role_allows_its_actions_and_those_below(role, read, write, manage):
    who = principal(("/", role))
    assert [access.allowed(who, a, JOB) for a in ("read", "write", "manage")] == [read, write, manage]


def test_a_workspace_assignment_covers_that_workspace_only_in_any_case():
    who = principal((WS, "Contributor"))
    assert access.allowed(who, "write", JOB) and access.allowed(who, "write", JOB.upper().replace("SUBSCRIPTIONS", "subscriptions"))
    assert access.allowed(who, "read", WS)
    assert not access.allowed(who, "read", OTHER) and not access.allowed(who, "read", OTHER + "/clusters/c")
    assert not access.allowed(who, "read", access.SERVICE)


def test_the_best_of_several_assignments_counts_and_none_allows_nothing():
    who = principal(("/", "Reader"), (WS, "Owner"))
    assert access.allowed(who, "manage", JOB) and not access.allowed(who, "write", OTHER)
    assert not access.allowed(principal(), "read", JOB)


def test_requests_map_to_actions_on_their_workspace():
    assert access.request_action("GET", JOB) == ("read", WS.lower())
    assert access.request_action("POST", JOB + "/listOutputFiles") == ("read", WS.lower())
    assert access.request_action("POST", JOB + "/terminate") == ("write", WS.lower())
    assert access.request_action("PUT", WS) == ("write", WS.lower())
    assert access.request_action("DELETE", WS + "/clusters/c") == ("write", WS.lower())
    assert access.request_action("GET", "/subscriptions/s/providers/Microsoft.BatchAI/workspaces") is None


def test_audit_actions_read_as_the_activity_log():
    assert access.audit_action("PUT", WS + "/clusters/c") == "Microsoft.BatchAI/workspaces/clusters/write"
    assert access.audit_action("DELETE", JOB) == "Microsoft.BatchAI/workspaces/experiments/jobs/delete"
    assert access.audit_action("POST", JOB + "/terminate") == "Microsoft.BatchAI/workspaces/experiments/jobs/terminate/action"
    assert access.audit_action("PATCH", WS) == "Microsoft.BatchAI/workspaces/write"


def test_tokens_name_their_id_and_match_only_themselves():
    token_id, token, digest = access.new_token()
    assert access.token_id_of(token) == token_id
    record = {"id": token_id, "hash": digest, "revoked": False, "expires": None}
    assert access.token_matches(record, token) and not access.token_matches(record, token + "x")
    assert access.token_id_of("bai.nothex.x") is None and access.token_id_of("Bearer") is None
    assert access.token_usable(record, 0) is None
    assert "revoked" in access.token_usable({**record, "revoked": True}, 0)
    assert "expired" in access.token_usable({**record, "expires": 5.0}, 5.0)


def test_durations_and_roles_parse_within_their_bounds():
    assert access.parse_duration("30d") == 30 * 86400 and access.parse_duration("90m") == 5400
    for bad in ("0d", "30", "3651d", "-1d", "1y"):
        with pytest.raises(ValueError):
            access.parse_duration(bad)
    assert access.normalize_role("reader") == "Reader"
    with pytest.raises(ValueError):
        access.normalize_role("admin")
