"""Download URL signing keys rotate (batchai.signing)."""

from __future__ import annotations

from batchai.adapters.sqlite_store import SqliteStore
from batchai.signing import ROTATION_SECONDS, SigningKeys


def test_a_key_signs_for_its_period_and_is_refused_two_periods_later(tmp_path):
    now = [10 * ROTATION_SECONDS + 5.0]
    store = SqliteStore(tmp_path / "store.db")
    keys = SigningKeys(store, clock=lambda: now[0])
    period, key = keys.current()
    assert period == 10 and keys.key(10) == key
    assert SigningKeys(store, clock=lambda: now[0]).current() == (10, key)  # every process alike
    assert keys.key(11) is None  # not one from the future
    now[0] += ROTATION_SECONDS  # the next period: a new key, the old one still checks URLs it signed
    later_period, later = keys.current()
    assert later_period == 11 and later != key and keys.key(10) == key
    now[0] += ROTATION_SECONDS
    assert keys.key(10) is None and keys.current()[1] not in (key, later)
