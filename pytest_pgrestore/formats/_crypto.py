"""Client-side decryption of backup objects: libsodium secretstream, as WAL-G writes it.

WAL-G (``internal/crypto/libsodium``) encrypts with ``crypto_secretstream_xchacha20poly1305``:
a 24-byte header, then chunks of 8192 plaintext bytes, each stored with a 17-byte MAC and tag;
the last chunk is shorter and carries ``TAG_FINAL``.  Nothing in the object says it is
encrypted, so the key must come from the configuration (``WALG_LIBSODIUM_KEY``,
``WALG_LIBSODIUM_KEY_PATH``, ``WALG_LIBSODIUM_KEY_TRANSFORM``).  Every chunk is authenticated:
a flipped byte fails the MAC of its chunk, and the error names the object.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CorruptBackup, UsageError

if TYPE_CHECKING:
    from nacl.bindings import crypto_secretstream_xchacha20poly1305_state

    from ..store._base import Readable

__all__ = ["LibsodiumKey", "SecretStreamReader", "CHUNK", "HEADER_BYTES", "ABYTES", "KEY_VARS"]

CHUNK = 8192  # plaintext bytes per chunk (WAL-G's chunkSize)
HEADER_BYTES = 24
ABYTES = 17
KEY_BYTES = 32
_MIN_RAW_KEY = 25  # WAL-G's minimalKeyLength for the "none" transform
KEY_VARS = ("WALG_LIBSODIUM_KEY", "WALG_LIBSODIUM_KEY_PATH", "WALG_LIBSODIUM_KEY_TRANSFORM")
_TRANSFORMS = ("none", "hex", "base64")


@dataclass(frozen=True)
class LibsodiumKey:
    """The 32-byte key and where it came from (never the key itself in ``repr``)."""

    key: bytes
    origin: str

    def __repr__(self) -> str:
        return f"LibsodiumKey(origin={self.origin!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LibsodiumKey | None:
        """Resolve the key as WAL-G does; None when no libsodium variable is set."""
        inline = env.get("WALG_LIBSODIUM_KEY") or ""
        path = env.get("WALG_LIBSODIUM_KEY_PATH") or ""
        transform = (env.get("WALG_LIBSODIUM_KEY_TRANSFORM") or "none").strip().lower()
        if not inline and not path:
            return None
        if transform not in _TRANSFORMS:
            raise UsageError(f"env WALG_LIBSODIUM_KEY_TRANSFORM={transform!r} is not a key transform",
                             checked=f"accepted: {', '.join(_TRANSFORMS)}",
                             fix="set it to none (raw text, WAL-G's default), hex or base64")
        if inline:
            text, origin = inline, "env WALG_LIBSODIUM_KEY"
        else:
            try:
                text = Path(path).read_text().strip()
            except OSError as exc:
                raise UsageError(f"cannot read the libsodium key file {path} ({exc.strerror})",
                                 checked="env WALG_LIBSODIUM_KEY_PATH",
                                 fix="point WALG_LIBSODIUM_KEY_PATH at a readable key file") from exc
            origin = f"file {path} (env WALG_LIBSODIUM_KEY_PATH)"
        return cls(_transform(text, transform, origin), f"{origin}, transform {transform}")


def _transform(text: str, transform: str, origin: str) -> bytes:
    if transform == "none":  # older WAL-G: raw text, truncated or zero-padded to 32 bytes
        raw = text.encode()
        if len(raw) < _MIN_RAW_KEY:
            raise UsageError(f"the libsodium key from {origin} is {len(raw)} bytes; WAL-G requires at least "
                             f"{_MIN_RAW_KEY}", checked="WALG_LIBSODIUM_KEY_TRANSFORM=none (raw text)",
                             fix="use the key the backups were written with; if it is hex or base64, set "
                                 "WALG_LIBSODIUM_KEY_TRANSFORM accordingly")
        return raw[:KEY_BYTES].ljust(KEY_BYTES, b"\0")
    try:
        key = bytes.fromhex(text) if transform == "hex" else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise UsageError(f"the libsodium key from {origin} is not valid {transform} ({exc})",
                         checked=f"WALG_LIBSODIUM_KEY_TRANSFORM={transform}",
                         fix="check the key text, or the transform it is written in") from exc
    if len(key) != KEY_BYTES:
        raise UsageError(f"the libsodium key from {origin} decodes to {len(key)} bytes, not {KEY_BYTES}",
                         checked=f"WALG_LIBSODIUM_KEY_TRANSFORM={transform}",
                         fix="use the 32-byte key the backups were written with")
    return key


class SecretStreamReader(io.RawIOBase):
    """Decrypt a WAL-G libsodium stream on the fly; ``label`` (the object key) names failures."""

    def __init__(self, raw: Readable, key: LibsodiumKey, label: str) -> None:
        from nacl import bindings

        self._b = bindings
        self._raw, self._label = raw, label
        self._state: crypto_secretstream_xchacha20poly1305_state | None = None
        self._key = key
        self._buf = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def _fail(self, what: str) -> CorruptBackup:
        return CorruptBackup(f"{self._label}: {what}",
                             checked="the libsodium MAC of every 8 KiB chunk (WALG_LIBSODIUM_KEY from "
                                     f"{self._key.origin})",
                             fix="if every object fails, the key is not the one the backup was written with; "
                                 "if one object fails, it is damaged: restore from another backup")

    def _start(self) -> crypto_secretstream_xchacha20poly1305_state:
        header = read_full(self._raw, HEADER_BYTES)
        if len(header) != HEADER_BYTES:
            raise self._fail("too short for a libsodium stream header")
        state = self._b.crypto_secretstream_xchacha20poly1305_state()
        self._b.crypto_secretstream_xchacha20poly1305_init_pull(state, header, self._key.key)
        return state

    def readinto(self, buf) -> int:
        from nacl.exceptions import CryptoError

        if self._state is None:
            self._state = self._start()
        state = self._state
        while not self._buf and not self._done:
            chunk = read_full(self._raw, CHUNK + ABYTES)
            if len(chunk) < ABYTES:
                raise self._fail("the encrypted stream ends without its final chunk (truncated)")
            try:
                plain, tag = self._b.crypto_secretstream_xchacha20poly1305_pull(state, chunk, None)
            except CryptoError as exc:
                raise self._fail("a chunk fails its libsodium MAC (damaged, or the wrong key)") from exc
            final = tag == self._b.crypto_secretstream_xchacha20poly1305_TAG_FINAL
            if final:
                if self._raw.read(1):
                    raise self._fail("bytes follow the final libsodium chunk")
                self._done = True
            elif len(chunk) < CHUNK + ABYTES:
                raise self._fail("the encrypted stream ends without its final chunk (truncated)")
            self._buf = plain
        n = min(len(buf), len(self._buf))
        buf[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def read_full(raw: Readable, n: int) -> bytes:
    """``n`` bytes of ``raw``, however many reads that takes; fewer only where the stream ends."""
    parts, got = [], 0
    while got < n:
        data = raw.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)
