"""Decompression-bomb material for the bounded-extraction tests: zeros that cost no memory."""

from __future__ import annotations

import io

MiB = 1 << 20


class Zeros(io.RawIOBase):
    """``n`` zero bytes as a readable file, made as they are read."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n
