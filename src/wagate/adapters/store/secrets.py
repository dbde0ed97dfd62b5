"""Secrets at rest: Meta access tokens, sandbox tokens and the installation's webhook secret.

Stored values are `enc:v1:` followed by a Fernet token (AES-128-CBC with an
HMAC-SHA256, from `cryptography`) under a key derived from WAGATE_SECRET_KEY.
A value without the prefix is a plaintext row written before encryption
existed: it is still read, and `SqlStore.seal_secrets` (run when a process
starts) rewrites it encrypted. Sealing at start rather than on the next write,
because a number's token is written once and may never be written again.

Without WAGATE_SECRET_KEY, a SQLite installation keeps a generated key in a
file beside its database (`wagate.db.key`, mode 0600); PostgreSQL serves several
machines, which must share one key, so it refuses to work without one.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from collections import OrderedDict
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import URL, make_url

from wagate.adapters.store.engine import is_sqlite

PREFIX = "enc:v1:"
ENV_KEY = "WAGATE_SECRET_KEY"
MIN_KEY_LENGTH = 32
KEY_FILE_SUFFIX = ".key"
_CACHE_SIZE = 4096
HOW_TO_MAKE_A_KEY = (
    "make one with `wagate secret-key` (or `openssl rand -base64 32`) and give the same"
    f" {ENV_KEY} to every process and machine of the installation"
)


class SecretKeyError(Exception):
    """The secret key is missing, malformed or not the one the stored secrets were sealed with."""


def _fernet_for(key: str) -> Fernet:
    if len(key.strip()) < MIN_KEY_LENGTH:
        raise SecretKeyError(
            f"{ENV_KEY} must be at least {MIN_KEY_LENGTH} characters; {HOW_TO_MAKE_A_KEY}"
        )
    # Any long random string will do (hex, base64, a Fernet key): HKDF turns it into 32 bytes.
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"wagate secrets v1"
    ).derive(key.strip().encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def new_secret_key() -> str:
    """A fresh random key for WAGATE_SECRET_KEY."""
    return secrets.token_urlsafe(32)


def key_file_for(url: URL) -> Path | None:
    """Where a SQLite database keeps its generated key; None for PostgreSQL or in-memory SQLite."""
    if not is_sqlite(url):
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return None
    return Path(database + KEY_FILE_SUFFIX)


def _read_or_create_key_file(path: Path) -> str:
    """The key in `path`, made once (mode 0600) if there is none yet."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: a second
    # process racing this one either wins the link or reads a complete file.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(new_secret_key() + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process linked its key first
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text().strip()


class SecretBox:
    """Seals and opens stored secrets with the installation's key, found on first use."""

    def __init__(self, url: URL | str, key: str | None = None) -> None:
        """A box for the database at `url`; `key` None reads WAGATE_SECRET_KEY."""
        self.url = make_url(url) if isinstance(url, str) else url
        self._key = os.environ.get(ENV_KEY, "") if key is None else key
        self._fernet: Fernet | None = None
        self._opened: OrderedDict[str, str] = OrderedDict()

    def _cipher(self) -> Fernet:
        if self._fernet is None:
            key = self._key
            if not key:
                path = key_file_for(self.url)
                if path is not None:
                    key = _read_or_create_key_file(path)
                elif is_sqlite(self.url):
                    key = new_secret_key()  # in-memory database: the secrets die with it
                else:
                    raise SecretKeyError(
                        f"{ENV_KEY} is not set: PostgreSQL installations need it to encrypt"
                        f" access tokens; {HOW_TO_MAKE_A_KEY}"
                    )
            self._fernet = _fernet_for(key)
        return self._fernet

    def check(self) -> None:
        """Raise SecretKeyError now if there is no usable key."""
        self._cipher()

    def seal(self, plaintext: str) -> str:
        """The stored form of a secret ('' stays '': nothing to hide)."""
        if not plaintext:
            return ""
        return PREFIX + self._cipher().encrypt(plaintext.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret a stored value holds; plaintext rows from before are returned as they are."""
        if not stored.startswith(PREFIX):
            return stored
        known = self._opened.get(stored)
        if known is not None:
            return known
        try:
            plaintext = self._cipher().decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            where = key_file_for(self.url)
            source = f"{ENV_KEY} (or {where})" if where and not self._key else ENV_KEY
            raise SecretKeyError(
                f"the stored secrets were encrypted with another key than {source}:"
                f" set {ENV_KEY} to the key the installation was set up with"
            ) from None
        self._opened[stored] = plaintext
        if len(self._opened) > _CACHE_SIZE:
            self._opened.popitem(last=False)
        return plaintext

    @staticmethod
    def is_sealed(stored: str) -> bool:
        """Whether a stored value is encrypted (or empty)."""
        return not stored or stored.startswith(PREFIX)
