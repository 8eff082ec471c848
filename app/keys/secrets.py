"""API key material: generation, HMAC hashing, and the public prefix.

A key is ``tg_`` + 32 base62 characters (~190 random bits). Only
HMAC-SHA256(server secret, key) is stored; the key itself is shown once and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

KEY_PREFIX = "tg_"
_ALPHABET = string.ascii_letters + string.digits
_BODY_LEN = 32  # log2(62) * 32 ≈ 190 bits
PREFIX_LEN = len(KEY_PREFIX) + 8


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))


def hash_key(secret_key: str, key: str) -> str:
    return hmac.new(secret_key.encode(), key.encode(), hashlib.sha256).hexdigest()


def public_prefix(key: str) -> str:
    return key[:PREFIX_LEN]


def looks_like_key(value: str) -> bool:
    return (
        len(value) == len(KEY_PREFIX) + _BODY_LEN
        and value.startswith(KEY_PREFIX)
        and all(c in _ALPHABET for c in value[len(KEY_PREFIX) :])
    )
