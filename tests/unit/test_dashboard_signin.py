"""The dashboard's one-time sign-in codes (batchai.dashboard): sealed, expiring, bound to their key."""

from __future__ import annotations

import os

import pytest

from batchai.dashboard import CODE_SECONDS, make_code, open_code
from batchai.errors import ApiError

KEY = os.urandom(32)


def test_a_code_carries_the_token_sealed_and_opens_until_it_expires():
    code = make_code(KEY, "bai.0123456789abcdef.secret", now=1000.0)
    assert "secret" not in code and "bai." not in code
    nonce, token = open_code(KEY, code, now=1000.0 + CODE_SECONDS - 1)
    assert token == "bai.0123456789abcdef.secret" and len(nonce) == 24
    assert open_code(KEY, make_code(KEY, "t", now=1000.0), now=1000.0)[0] != nonce  # each code its own nonce (its one use)
    with pytest.raises(ApiError, match="expired"):
        open_code(KEY, code, now=1000.0 + CODE_SECONDS + 1)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c[:-2] + ("AA" if c[-2:] != "AA" else "BB"),
        lambda c: c[:20],
        lambda c: c[:10] + ("A" if c[10] != "A" else "B") + c[11:],
        lambda c: "",
    ],
)
def test_a_changed_or_foreign_code_is_refused(change):
    code = make_code(KEY, "token", now=0.0)
    with pytest.raises(ApiError) as refused:
        open_code(KEY, change(code), now=0.0)
    assert refused.value.status == 403
    with pytest.raises(ApiError):
        open_code(os.urandom(32), code, now=0.0)  # another server's key
