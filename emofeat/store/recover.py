"""Recover an HDF5 file left open-for-write by a killed SWMR writer (what ``h5clear -s`` does).

A SWMR writer orders its metadata writes so that the file on disk is consistent at every moment;
a writer that dies leaves only the superblock's "file is open for writing" flags set, and HDF5
then refuses to open the file for writing again. Clearing them means rewriting one byte of the
version 2/3 superblock and its Jenkins lookup3 checksum (HDF5 file format spec, section II.A).
Only numpy-free standard library here: the store reader imports this.
"""

from __future__ import annotations

import os
import struct

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_M = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, as HDF5's ``H5_checksum_lookup3``."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _M
    k = 0
    while length > 12:
        a = (a + int.from_bytes(data[k : k + 4], "little")) & _M
        b = (b + int.from_bytes(data[k + 4 : k + 8], "little")) & _M
        c = (c + int.from_bytes(data[k + 8 : k + 12], "little")) & _M
        a = (a - c) & _M; a ^= _rot(c, 4); c = (c + b) & _M  # fmt: skip
        b = (b - a) & _M; b ^= _rot(a, 6); a = (a + c) & _M  # fmt: skip
        c = (c - b) & _M; c ^= _rot(b, 8); b = (b + a) & _M  # fmt: skip
        a = (a - c) & _M; a ^= _rot(c, 16); c = (c + b) & _M  # fmt: skip
        b = (b - a) & _M; b ^= _rot(a, 19); a = (a + c) & _M  # fmt: skip
        c = (c - b) & _M; c ^= _rot(b, 4); b = (b + a) & _M  # fmt: skip
        length -= 12
        k += 12
    if length == 0:
        return c
    tail = data[k:] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & _M
    b = (b + int.from_bytes(tail[4:8], "little")) & _M
    c = (c + int.from_bytes(tail[8:12], "little")) & _M
    c ^= b; c = (c - _rot(b, 14)) & _M  # fmt: skip
    a ^= c; a = (a - _rot(c, 11)) & _M  # fmt: skip
    b ^= a; b = (b - _rot(a, 25)) & _M  # fmt: skip
    c ^= b; c = (c - _rot(b, 16)) & _M  # fmt: skip
    a ^= c; a = (a - _rot(c, 4)) & _M  # fmt: skip
    b ^= a; b = (b - _rot(a, 14)) & _M  # fmt: skip
    c ^= b; c = (c - _rot(b, 24)) & _M  # fmt: skip
    return c


def _superblock(f) -> bytes:
    """The version 2/3 superblock at offset 0, its checksum verified."""
    f.seek(0)
    head = f.read(12)
    if head[:8] != _SIGNATURE:
        raise ValueError("not an HDF5 file with its superblock at offset 0")
    version, offsets = head[8], head[9]
    if version not in (2, 3):
        raise ValueError(f"superblock version {version} has no status flags")
    f.seek(0)
    block = f.read(12 + 4 * offsets + 4)
    (stored,) = struct.unpack("<I", block[-4:])
    if lookup3(block[:-4]) != stored:
        raise ValueError("superblock checksum mismatch")
    return block


def status_flags(path: str | os.PathLike) -> int:
    """The superblock's file consistency flags (0: closed cleanly); checks the checksum."""
    with open(path, "rb") as f:
        return _superblock(f)[11]


def clear_status_flags(path: str | os.PathLike) -> bool:
    """Clear the open-for-write flags; return whether anything changed."""
    with open(path, "r+b") as f:
        block = _superblock(f)
        if block[11] == 0:
            return False
        new = bytearray(block)
        new[11] = 0
        new[-4:] = struct.pack("<I", lookup3(bytes(new[:-4])))
        f.seek(0)
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
    return True


def stored_eof(path: str | os.PathLike) -> int:
    """The end-of-file address the version 2/3 superblock records."""
    with open(path, "rb") as f:
        block = _superblock(f)
    offsets = block[9]
    start = 12 + 2 * offsets  # after base address and superblock-extension address
    return int.from_bytes(block[start : start + offsets], "little")


def extend_to_stored_eof(path: str | os.PathLike) -> bool:
    """Pad a file that a failed writer left shorter than its superblock says (a write past
    the end failed: disk full, file-size limit) with zeros up to that length, so HDF5 opens it
    again; return whether it was short. The bytes that were never written belong to space the
    failed writer was allocating; the rows they would have held were never marked done."""
    eof, size = stored_eof(path), os.path.getsize(path)
    if size >= eof:
        return False
    os.truncate(path, eof)
    return True
