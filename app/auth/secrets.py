"""API key material: generation, HMAC hashing, and the public prefix.

A key is ``tg_`` + 32 base62 characters (~190 random bits). Only
HMAC-SHA256(server secret, key) is stored; the key itself is shown once and never logged.
"""

from __future__ import annotations

import hmac
import re
import secrets
import string

KEY_PREFIX = "tg_"
_ALPHABET = string.ascii_letters + string.digits
_BODY_LEN = 32  # log2(62) * 32 ≈ 190 bits
PREFIX_LEN = len(KEY_PREFIX) + 8
_KEY_SHAPE = re.compile(re.escape(KEY_PREFIX) + f"[A-Za-z0-9]{{{_BODY_LEN}}}", re.ASCII)


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))


def hash_key(secret_key: str, key: str) -> str:
    return hmac.digest(secret_key.encode(), key.encode(), "sha256").hex()


def public_prefix(key: str) -> str:
    return key[:PREFIX_LEN]


def looks_like_key(value: str) -> bool:
    return _KEY_SHAPE.fullmatch(value) is not None
