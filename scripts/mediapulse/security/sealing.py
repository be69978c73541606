"""Sealed files: AES-256-GCM with a secret key, for raw data that travels as a CI artifact.

On GitHub a DuckDB production's raw data (the loader's `raw.duckdb`, e-mail addresses, names
and dates of birth in clear) goes from one production job to the next as an artifact, which
anyone who can read the repository's Actions can download. It travels sealed: encrypted and
authenticated with the key in MEDIAPULSE_RAW_ARTIFACT_KEY (64 hex characters, a secret of the
`production` environment), so the artifact alone reveals nothing and a changed, truncated or
reordered file does not open.

The format streams (a production raw file can be bigger than memory): a header (magic and a
random 7-byte nonce prefix), then the file in chunks of CHUNK bytes, each sealed with the
nonce prefix, its index and whether it is the last (the STREAM construction), the header as
associated data. Nothing here imports `cryptography` until a file is sealed or opened, so the
key check runs anywhere (`mediapulse.security.guard` uses it before the install).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mediapulse.core.errors import MediaPulseError

KEY_ENV = "MEDIAPULSE_RAW_ARTIFACT_KEY"
WHERE = "Settings → Environments → production"
MAGIC = b"MPSEAL01"
PREFIX = 7  # random bytes of each file's nonces; then a 4-byte chunk index and a last flag
HEADER = len(MAGIC) + PREFIX
CHUNK = 4 * 1024 * 1024
TAG = 16
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def key_problem(value: str | None) -> str | None:
    """Why ``value`` is not a usable key (never quoting it), or None."""
    if not value:
        return f"the secret {KEY_ENV} is not set"
    if not _HEX_KEY.fullmatch(value.strip()):
        return (
            f"the secret {KEY_ENV} is {len(value.strip())} characters, not the 64 hex "
            "characters of a 256-bit key"
        )
    return None


def artifact_key(environ: dict[str, str] | None = None) -> bytes:
    """The 32-byte key from MEDIAPULSE_RAW_ARTIFACT_KEY, or a one-line error with the fix."""
    value = (os.environ if environ is None else environ).get(KEY_ENV)
    problem = key_problem(value)
    if problem:
        raise MediaPulseError(
            f"{problem}: production's raw data is sealed with it between jobs; set it as a "
            f"secret of the production environment ({WHERE}), e.g. from `openssl rand -hex 32`"
        )
    return bytes.fromhex(str(value).strip())


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def seal(source: Path, sealed: Path, key: bytes) -> None:
    """Encrypt ``source`` into ``sealed``, which appears whole or not at all."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    header = MAGIC + secrets.token_bytes(PREFIX)
    with _replacing(sealed) as out, source.open("rb") as plain:
        out.write(header)
        block, index = plain.read(CHUNK), 0
        while True:
            following = plain.read(CHUNK)
            last = not following
            out.write(aead.encrypt(_nonce(header[len(MAGIC) :], index, last), block, header))
            if last:
                return
            block, index = following, index + 1


def opened(sealed: Path, key: bytes, what: str) -> Iterator[bytes]:
    """The plain chunks of ``sealed``, each checked; a one-line error if it does not open."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    with sealed.open("rb") as handle:
        header = handle.read(HEADER)
        if len(header) < HEADER or not header.startswith(MAGIC):
            raise MediaPulseError(f"{sealed} is not a sealed file ({what}): seal it first")
        index = 0
        while True:
            block = handle.read(CHUNK + TAG)
            last = not handle.peek(1)  # type: ignore[attr-defined]
            try:
                yield aead.decrypt(_nonce(header[len(MAGIC) :], index, last), block, header)
            except InvalidTag:
                raise MediaPulseError(
                    f"{sealed} ({what}) does not open with {KEY_ENV}: the key is not the one "
                    f"it was sealed with ({WHERE}), or the file was changed or cut short"
                ) from None
            if last:
                return
            index += 1


def unseal(sealed: Path, plain: Path, key: bytes, what: str) -> None:
    """Decrypt ``sealed`` into ``plain`` (readable by this user only), whole or not at all."""
    with _replacing(plain) as out:
        for chunk in opened(sealed, key, what):
            out.write(chunk)


def digest_of_sealed(sealed: Path, key: bytes, what: str) -> str:
    """sha256 of what ``sealed`` holds, without writing it anywhere."""
    digest = hashlib.sha256()
    for chunk in opened(sealed, key, what):
        digest.update(chunk)
    return digest.hexdigest()


def digest_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


class _replacing:
    """A private temporary file beside ``path`` that replaces it when the block succeeds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")

    def __enter__(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.handle = os.fdopen(descriptor, "wb")
        return self.handle

    def __exit__(self, kind: object, *rest: object) -> None:
        self.handle.close()
        if kind is None:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)
