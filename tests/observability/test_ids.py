from __future__ import annotations

from app.observability.ids import new_request_id


def test_request_ids_are_unique_and_time_ordered() -> None:
    ids = [new_request_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids[:100])
    # The first 12 hex digits are the millisecond clock: never decreasing.
    stamps = [i[:12] for i in ids]
    assert stamps == sorted(stamps)
