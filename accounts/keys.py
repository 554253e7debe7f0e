"""API key format and hashing: ``mb_<prefix>_<secret>``.

The secret is random (256 bits), so a fast hash is enough: SHA-256, compared in
constant time. A password hasher would cost milliseconds on every call.
"""

import hashlib
import hmac
import secrets

KEY_PREFIX = "mb_"


def generate() -> tuple[str, str, str]:
    """Return (prefix, secret, full key)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return prefix, secret, f"{KEY_PREFIX}{prefix}_{secret}"


def split(full_key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    if not full_key.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = full_key[len(KEY_PREFIX):].partition("_")
    if not sep or len(prefix) != 12 or not secret:
        return None
    return prefix, secret


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)
