"""Secrets at rest: Fernet with key rotation (MultiFernet), and model fields that use it.

The first key in SMSGATE_ENCRYPTION_KEYS encrypts; every key decrypts. Rotate by putting a new key
first, then run `manage.py rotate_encryption_keys`, then drop the old key.
"""

import base64
import hashlib
import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


class DecryptionError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _multi_fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured("SMSGATE_ENCRYPTION_KEYS holds a key that is not a Fernet key.") from exc


def _keys() -> tuple[str, ...]:
    keys = tuple(k for k in settings.SMSGATE_ENCRYPTION_KEYS if k)
    if keys:
        return keys
    # Development and tests only (settings refuse to start without keys when DEBUG is off).
    digest = hashlib.sha256(b"smsgate-dev-encryption:" + settings.SECRET_KEY.encode()).digest()
    return (base64.urlsafe_b64encode(digest).decode(),)


def encrypt(plaintext: str) -> str:
    return _multi_fernet(_keys()).encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(ciphertext: str) -> str:
    try:
        return _multi_fernet(_keys()).decrypt(ciphertext.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as exc:
        raise DecryptionError("stored secret cannot be decrypted with the configured keys") from exc


def rotate(ciphertext: str) -> str:
    """Re-encrypt with the first (current) key."""
    try:
        return _multi_fernet(_keys()).rotate(ciphertext.encode("ascii")).decode("ascii")
    except InvalidToken as exc:
        raise DecryptionError("stored secret cannot be decrypted with the configured keys") from exc


class EncryptedTextField(models.TextField):
    """A text value stored encrypted; Python code only ever sees the plaintext."""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return self._decode(decrypt(value))

    def get_prep_value(self, value):
        if value is None:
            return None
        plaintext = self._encode(value)
        return encrypt(plaintext) if plaintext != "" else ""

    def to_python(self, value):
        return value

    def _encode(self, value) -> str:
        return str(value)

    def _decode(self, plaintext: str):
        return plaintext


class EncryptedJSONField(EncryptedTextField):
    """A JSON object (e.g. provider credentials) stored encrypted as one blob."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("default", dict)
        super().__init__(*args, **kwargs)

    def _encode(self, value) -> str:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)

    def _decode(self, plaintext: str):
        return json.loads(plaintext)

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return {}
        return self._decode(decrypt(value))
