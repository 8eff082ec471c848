"""Request ids: time-ordered, 128-bit, unique without a system call per request.

Layout like UUIDv7: 48 bits of Unix milliseconds, then 80 bits from a PRNG seeded once per
process from the OS. The unique index on ``usage_events.request_id`` is the final guard.
``uuid4()`` was measured here at ~200 µs per call under load: ``os.urandom`` releases the GIL
and the event loop then waits behind the torch worker thread to get it back.
"""

from __future__ import annotations

import os
import random
import time

_rng = random.Random(os.urandom(32))
_pid = os.getpid()


def new_request_id() -> str:
    global _rng, _pid
    if os.getpid() != _pid:  # forked worker: never share the parent's sequence
        _rng, _pid = random.Random(os.urandom(32)), os.getpid()
    return f"{time.time_ns() // 1_000_000:012x}{_rng.getrandbits(80):020x}"
