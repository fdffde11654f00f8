"""Replay snapshots: a whole replay's state in one file, written atomically, read back exactly.

No pickle anywhere: a snapshot file is data, and reading one can never run code. Layout::

    b"RDQNSNAP" | u64 header length | header (msgpack) | sections ... | trailer (24 bytes)

* The header is the state tree with every numpy array and every frame blob list replaced
  by ``{"__section__": i}``, plus the section table and the format version.
* An array section holds the array's bytes byte-shuffled (byte 0 of every element, then
  byte 1, ...) and LZ4-compressed: the per-slot uid arrays are near-arithmetic sequences,
  which shuffling turns into long runs (8 MB of int64 uids -> 50 KB).
* A blob section holds the lengths of the blobs (an int64 array section, -1 for None)
  followed by the blobs themselves concatenated. Frame blobs are already compressed and
  are written as they are, streamed in chunks, never copied whole.
* The trailer is ``u32 crc32 | u32 0 | u64 file length | b"RDQNEND1"``; the CRC covers
  every byte before the trailer.

A file cut short (a crash mid-write) lacks the end marker or has the wrong length, and a
corrupted one fails the CRC, so neither is taken for a good snapshot: :func:`read_snapshot`
checks the trailer and the CRC over the whole file before it parses anything, and raises
:class:`SnapshotError` (one line naming the file and the problem) for every defect.
:func:`write_snapshot` writes ``path + ".tmp-<pid>"``, fsyncs it, then renames it over
``path``: ``path`` is the old file or the new one, never half of one.

The state tree (see ``ReplayServer.state_dict``) is made of dicts with str keys, lists,
str, bytes, bool, int, float, None, numpy arrays of plain little-endian numeric dtypes,
and :class:`BlobList` (a sequence of ``bytes | None``, e.g. the replay's frame blobs).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from typing import Any, BinaryIO

import lz4.block
import msgpack
import numpy as np

FORMAT_VERSION = 1
MAGIC = b"RDQNSNAP"
END_MAGIC = b"RDQNEND1"
_PREAMBLE = struct.Struct("<8sQ")  # magic, header length
_TRAILER = struct.Struct("<IIQ8s")  # crc32, reserved, file length, end magic
_SECTION_KEY = "__section__"
#: dtypes an array section may hold (little-endian, no objects, no structured types).
_DTYPES = frozenset(
    np.dtype(t).str
    for t in (
        np.bool_,
        np.uint8,
        np.int8,
        np.int16,
        np.uint16,
        np.int32,
        np.uint32,
        np.int64,
        np.uint64,
        np.float32,
        np.float64,
    )
)
#: Blobs per write/read call of a blob section (bounds the memory of one chunk).
_BLOB_CHUNK = 1 << 16
_READ_CHUNK = 16 << 20
_MAX_HEADER = 64 << 20


class SnapshotError(ValueError):
    """A snapshot that cannot be used: cut short, corrupted, of another format or another
    replay configuration. The one-line text names the file and the problem."""


class BlobList(list):
    """A list of ``bytes | None`` stored as one blob section (lengths + concatenated bytes)."""


# --------------------------------------------------------------------------- writing


class _HashingWriter:
    """A file object that keeps the CRC32 and the count of the bytes written through it."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.crc = 0
        self.size = 0

    def write(self, data) -> None:
        self.f.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)


def _shuffle(a: np.ndarray) -> bytes:
    """Bytes of ``a`` in byte-plane order: byte 0 of every element, then byte 1, ..."""
    a = np.ascontiguousarray(a)
    if a.dtype.itemsize == 1:
        return a.tobytes()
    return a.reshape(-1).view(np.uint8).reshape(-1, a.dtype.itemsize).T.tobytes()


def _unshuffle(raw: bytearray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The writable array that :func:`_shuffle` turned into ``raw``."""
    planes = np.frombuffer(raw, dtype=np.uint8)
    if dtype.itemsize > 1:
        planes = np.ascontiguousarray(planes.reshape(dtype.itemsize, -1).T)
    return planes.view(dtype).reshape(shape)


def _flatten(node: Any, sections: list, where: str) -> Any:
    """The header form of ``node``: arrays and blob lists appended to ``sections``."""
    if isinstance(node, BlobList):
        sections.append(node)
        return {_SECTION_KEY: len(sections) - 1}
    if isinstance(node, np.ndarray):
        if node.dtype.str not in _DTYPES:
            raise TypeError(f"snapshot: array {where} has dtype {node.dtype}, not one of {sorted(_DTYPES)}")
        sections.append(node)
        return {_SECTION_KEY: len(sections) - 1}
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if not isinstance(k, str) or k == _SECTION_KEY:
                raise TypeError(f"snapshot: bad key {k!r} in {where}")
            out[k] = _flatten(v, sections, f"{where}.{k}")
        return out
    if isinstance(node, (list, tuple)):
        return [_flatten(v, sections, f"{where}[{i}]") for i, v in enumerate(node)]
    if node is None or isinstance(node, (bool, int, float, str, bytes)):
        return node
    if isinstance(node, (np.integer, np.floating, np.bool_)):
        return node.item()
    raise TypeError(f"snapshot: cannot store {type(node).__name__} at {where}")


def _blob_lengths(blobs: Sequence[bytes | None]) -> np.ndarray:
    return np.fromiter((-1 if b is None else len(b) for b in blobs), dtype=np.int64, count=len(blobs))


def write_snapshot(path: str, state: dict) -> int:
    """Write ``state`` (see the module docstring) to ``path`` atomically; returns the file size.

    Memory: the arrays are compressed one by one up front (their compressed form is small),
    the blobs are streamed ``_BLOB_CHUNK`` at a time. On any error the temporary file is
    removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    sections: list = []
    tree = _flatten(state, sections, "state")
    table, payloads = [], []
    for sec in sections:
        if isinstance(sec, BlobList):
            lengths = _blob_lengths(sec)
            packed = lz4.block.compress(_shuffle(lengths), store_size=False)
            table.append(
                {
                    "kind": "blobs",
                    "count": len(sec),
                    "lengths_stored": len(packed),
                    "stored": int(lengths[lengths > 0].sum()),
                }
            )
            payloads.append((packed, sec))
        else:
            packed = lz4.block.compress(_shuffle(sec), store_size=False)
            table.append({"kind": "array", "dtype": sec.dtype.str, "shape": list(sec.shape), "stored": len(packed)})
            payloads.append((packed, None))
    header = msgpack.packb(
        {"format": "raydqn-replay-snapshot", "version": FORMAT_VERSION, "sections": table, "state": tree},
        use_bin_type=True,
    )

    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb", buffering=1 << 20) as f:
            w = _HashingWriter(f)
            w.write(_PREAMBLE.pack(MAGIC, len(header)))
            w.write(header)
            for packed, blobs in payloads:
                w.write(packed)
                if blobs is not None:
                    for lo in range(0, len(blobs), _BLOB_CHUNK):
                        w.write(b"".join([b for b in blobs[lo : lo + _BLOB_CHUNK] if b is not None]))
            f.write(_TRAILER.pack(w.crc, 0, w.size + _TRAILER.size, END_MAGIC))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    return w.size + _TRAILER.size


def _fsync_dir(directory: str) -> None:
    """Make the rename itself durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reading


def read_snapshot(path: str) -> dict:
    """The state tree written by :func:`write_snapshot`; SnapshotError for any defect.

    Verifies the end marker, the length and the CRC of the whole file before parsing it,
    then reads it section by section (arrays come back writable, blob lists as lists).
    Needs no Ray: a driver can check a snapshot file with it.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header_len = _check_frame(f, size, path)
            header = _read_exact(f, header_len, path, "header")
            try:
                meta = msgpack.unpackb(header, raw=False, strict_map_key=True)
            except Exception as e:  # msgpack raises several unrelated types on garbage
                raise SnapshotError(f"{path}: header is not msgpack ({type(e).__name__})") from None
            table, tree = _check_header(meta, path)
            expected = (
                _PREAMBLE.size
                + header_len
                + _TRAILER.size
                + sum(s["stored"] + s.get("lengths_stored", 0) for s in table)
            )
            if expected != size:
                raise SnapshotError(f"{path}: section sizes add up to {expected} bytes, the file has {size}")
            sections = [_read_section(f, sec, path, i) for i, sec in enumerate(table)]
            try:
                return _unflatten(tree, sections, path)
            except RecursionError:
                raise SnapshotError(f"{path}: header nests too deep") from None
    except OSError as e:
        raise SnapshotError(f"{path}: cannot read snapshot: {e.strerror or e}") from None


def _read_exact(f: BinaryIO, n: int, path: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise SnapshotError(f"{path}: file ends inside the {what}")
    return data


def _check_frame(f: BinaryIO, size: int, path: str) -> int:
    """Check magic, end marker, length and CRC; returns the header length, file at the header."""
    if size < _PREAMBLE.size + _TRAILER.size:
        raise SnapshotError(f"{path}: {size} bytes is too short for a replay snapshot (cut short?)")
    magic, header_len = _PREAMBLE.unpack(f.read(_PREAMBLE.size))
    if magic != MAGIC:
        raise SnapshotError(f"{path}: not a raydqn replay snapshot (bad magic {magic!r})")
    f.seek(size - _TRAILER.size)
    crc, reserved, length, end = _TRAILER.unpack(f.read(_TRAILER.size))
    if end != END_MAGIC or reserved != 0:
        raise SnapshotError(f"{path}: no end marker: the file was cut short or is not complete")
    if length != size:
        raise SnapshotError(f"{path}: trailer says {length} bytes but the file has {size}: cut short or damaged")
    if header_len > min(size, _MAX_HEADER):
        raise SnapshotError(f"{path}: header length {header_len} is impossible: damaged file")
    f.seek(0)
    got, left = 0, size - _TRAILER.size
    while left:
        chunk = f.read(min(left, _READ_CHUNK))
        if not chunk:
            raise SnapshotError(f"{path}: file shrank while being read")
        got = zlib.crc32(chunk, got)
        left -= len(chunk)
    if got != crc:
        raise SnapshotError(f"{path}: checksum mismatch (crc32 {got:08x}, stored {crc:08x}): the file is corrupted")
    f.seek(_PREAMBLE.size)
    return header_len


def _nonneg_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_header(meta, path: str) -> tuple[list, Any]:
    if not isinstance(meta, dict) or meta.get("format") != "raydqn-replay-snapshot":
        raise SnapshotError(f"{path}: header does not describe a raydqn replay snapshot")
    if meta.get("version") != FORMAT_VERSION:
        raise SnapshotError(
            f"{path}: snapshot format version {meta.get('version')!r}, this code reads {FORMAT_VERSION}"
        )
    table = meta.get("sections")
    if not isinstance(table, list):
        raise SnapshotError(f"{path}: header has no section table")
    for i, sec in enumerate(table):
        ok = isinstance(sec, dict) and _nonneg_int(sec.get("stored"))
        if ok and sec.get("kind") == "array":
            shape = sec.get("shape")
            ok = sec.get("dtype") in _DTYPES and isinstance(shape, list) and all(_nonneg_int(d) for d in shape)
        elif ok and sec.get("kind") == "blobs":
            ok = _nonneg_int(sec.get("count")) and _nonneg_int(sec.get("lengths_stored"))
        else:
            ok = False
        if not ok:
            raise SnapshotError(f"{path}: section {i} is badly described in the header")
    return table, meta.get("state")


def _decompress(packed: bytes, nbytes: int, path: str, what: str) -> bytearray:
    try:
        raw = lz4.block.decompress(packed, uncompressed_size=nbytes, return_bytearray=True) if nbytes else bytearray()
    except lz4.block.LZ4BlockError:
        raw = None
    if raw is None or len(raw) != nbytes:
        raise SnapshotError(f"{path}: {what} does not decompress to its {nbytes} bytes")
    return raw


def _read_section(f: BinaryIO, sec: dict, path: str, i: int):
    if sec["kind"] == "array":
        dtype = np.dtype(sec["dtype"])
        shape = tuple(sec["shape"])
        nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if nbytes > 255 * sec["stored"] + 64:  # beyond what LZ4 can expand to: damaged header
            raise SnapshotError(f"{path}: section {i} claims {nbytes} bytes from {sec['stored']} compressed")
        raw = _decompress(_read_exact(f, sec["stored"], path, f"section {i}"), nbytes, path, f"section {i}")
        return _unshuffle(raw, dtype, shape)
    count = sec["count"]
    if 8 * count > 255 * sec["lengths_stored"] + 64:
        raise SnapshotError(f"{path}: section {i} claims {count} blobs from {sec['lengths_stored']} bytes of lengths")
    packed = _read_exact(f, sec["lengths_stored"], path, f"section {i}")
    lengths = _unshuffle(_decompress(packed, 8 * count, path, f"section {i} lengths"), np.dtype(np.int64), (count,))
    if count and (lengths.min() < -1 or int(lengths[lengths > 0].sum()) != sec["stored"]):
        raise SnapshotError(f"{path}: section {i}: blob lengths do not add up to the stored bytes")
    blobs: list[bytes | None] = []
    sizes = np.maximum(lengths, 0)
    for lo in range(0, count, _BLOB_CHUNK):
        hi = min(lo + _BLOB_CHUNK, count)
        ends = np.cumsum(sizes[lo:hi])
        data = _read_exact(f, int(ends[-1]), path, f"section {i}")
        starts = (ends - sizes[lo:hi]).tolist()
        blobs.extend([None if n < 0 else data[a : a + n] for a, n in zip(starts, lengths[lo:hi].tolist())])
    return blobs


def _unflatten(node: Any, sections: list, path: str) -> Any:
    if isinstance(node, dict):
        if _SECTION_KEY in node:
            i = node[_SECTION_KEY]
            if len(node) != 1 or not _nonneg_int(i) or i >= len(sections):
                raise SnapshotError(f"{path}: header refers to a section that does not exist")
            return sections[i]
        return {k: _unflatten(v, sections, path) for k, v in node.items()}
    if isinstance(node, list):
        return [_unflatten(v, sections, path) for v in node]
    return node
