"""Banks larger than memory: an array, a ``.npy``/``.npz`` file, or a folder of shards, read in chunks.

Files become data by the rule of ``inputs.as_data``: uint8 images are divided by 255
(MNIST's scale, in float32 as MNIST is stored); other dtypes must already be on the data's scale.
Rows are read as float32, or as float64 where a shard holds float64 values or integers wider
than float32's 24-bit significand, so that no value is rounded on its way to the scorer (whose
float64 reference then scores the data as given).

Chunks are read with plain file reads (no memory map, no file left open), so resident memory stays at
one chunk whatever the bank's size, and a folder of thousands of shards holds no file descriptors; the
scorer merges per-chunk partial sums exactly (``ganbench.scoring.partials``), keeping the nearest index
global. A file that changes while it is read (its size or modification time) is an error, never a bank
of two versions. An ``.npz`` written by ``numpy.savez`` stores its array uncompressed inside the zip
archive, so it is read in place the same way, once its CRC-32 is checked (one read of the member: NumPy's
load checks it too, and a flipped bit scored silently without it); one written by
``numpy.savez_compressed`` must be inflated, and is loaded whole.
"""
from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ganbench.defaults import CHUNK_ROWS
from ganbench.errors import GanbenchError
from ganbench.scoring.inputs import (
    MNIST_RANGE,
    as_data,
    as_real_array,
    check_range,
    data_scale,
    magnitude,
    narrowest_float_dtype,
)

__all__ = ["MNIST_RANGE", "Bank", "open_bank"]


@dataclass(frozen=True)
class _Shard:
    """Rows held in memory (``array``: arrays, compressed .npz members), or read in place from ``path``: values of
    ``stored`` dtype from byte ``offset`` on, in C order, or in Fortran order of ``fortran_shape``."""
    path: Path | None
    rows: int
    offset: int                            # byte offset of the values in the file
    array: np.ndarray | None = None
    stored: np.dtype = np.dtype("<f4")     # the file's dtype (read in place)
    fortran_shape: tuple[int, ...] | None = None
    stamp: tuple[int, int] | None = None   # the file's size and modification time when opened

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype if self.array is not None else self.stored


def _is_byte_shard(shard: _Shard) -> bool:
    """Whether a shard is 8-bit (uint8 images, divided by 255 as they are read; float shards are not)."""
    return data_scale(shard.dtype) != 1.0


def _stamp(status: os.stat_result) -> tuple[int, int]:
    return status.st_size, status.st_mtime_ns


def exact_dtype(dtype) -> np.dtype:
    """float64 for values float32 would round (float64, integers of 32 bits or more), else float32."""
    dtype = np.dtype(dtype)
    wide = dtype.kind == "f" and dtype.itemsize > 4 or dtype.kind in "iu" and dtype.itemsize >= 4
    return np.dtype(np.float64) if wide else np.dtype(np.float32)


class Bank:
    """A read-only (count, dimension) bank that yields ``(first_row, chunk)`` pairs: float32 chunks, or
    float64 where a shard holds values float32 would round (``exact_dtype``)."""

    def __init__(self, shards: list[_Shard], dimension: int, source: str,
                 value_range: tuple[float, float] | None = None, role: str = "bank", layout: tuple[int, ...] | None = None):
        self.shards, self.dimension, self.source = shards, dimension, source
        self.layout = layout  # the image shape of its files, length-1 axes dropped; None for vectors
        self.value_range, self.role = value_range, role  # role names the data in errors: "held-out data"
        self.dtype = max((exact_dtype(shard.dtype) for shard in shards), key=lambda dtype: dtype.itemsize)
        self.count = sum(shard.rows for shard in shards)
        self.rows_read = 0  # rows read from the shards so far (each rank of several reads its share only)
        if self.count == 0:
            raise GanbenchError(f"{role} {source} is empty; pass at least one sample")

    def __len__(self) -> int:
        return self.count

    def chunks(self, rows: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, chunk)`` for the bank rows [start, stop), ``rows`` at a time.

        Chunks follow the global row order and may span two shards, so they are the same
        whatever the shard sizes: a chunk scored by one rank of several is the chunk a single
        process scores. Only the rows asked for are read and checked (``rows_read`` counts them).
        """
        stop = self.count if stop is None else min(stop, self.count)
        for first in range(start, stop, rows):
            chunk = self._read_rows(first, min(first + rows, stop))
            finite_rows = np.isfinite(chunk).all(axis=1)
            if not finite_rows.all():
                row = first + int(np.argmin(finite_rows))
                raise GanbenchError(f"{self.role} {self.where(row)} contains NaN or inf at row {row}; fix those rows")
            if self.value_range is not None:
                check_range(f"{self.role} {self.source}", chunk, self.value_range, first,
                            where=lambda row: f"{self.role} {self.where(row)}")
            yield first, chunk

    def _read_rows(self, first: int, last: int, counted: bool = True) -> np.ndarray:
        """Bank rows [first, last) as one array of the bank's dtype, read from every shard they lie in;
        ``counted`` adds them to ``rows_read``."""
        pieces, shard_first = [], 0
        for shard in self.shards:
            low, high = max(first, shard_first), min(last, shard_first + shard.rows)
            if low < high:
                pieces.append(self._shard_rows(shard, low - shard_first, high - low))
            shard_first += shard.rows
        self.rows_read += (last - first) if counted else 0
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _shard_rows(self, shard: _Shard, start: int, count: int) -> np.ndarray:
        """Rows [start, start + count) of one shard, on the data's scale, in the bank's dtype."""
        if shard.array is not None:
            return np.asarray(as_data(self.source, shard.array[start:start + count]), dtype=self.dtype)
        with open(shard.path, "rb") as handle:
            if _stamp(os.fstat(handle.fileno())) != shard.stamp:
                raise GanbenchError(f"{shard.path} changed while it was being read (its size or time); score it "
                                    "again once it is written")
            if shard.fortran_shape is not None:  # its rows are strided: a map of the file for this read alone
                mapped = np.memmap(handle, dtype=shard.stored, mode="r", offset=shard.offset,
                                   shape=shard.fortran_shape, order="F")
                values = np.array(mapped[start:start + count], order="C").reshape(count, self.dimension)  # a copy
                del mapped
            else:
                handle.seek(shard.offset + start * self.dimension * shard.stored.itemsize)
                values = np.fromfile(handle, dtype=shard.stored, count=count * self.dimension)
                if values.size != count * self.dimension:
                    raise GanbenchError(f"{shard.path} is shorter than its header says (truncated?); write it again")
                values = values.reshape(count, self.dimension)
        return np.asarray(as_data(self.source, values), dtype=self.dtype)

    def where(self, row: int) -> str:
        """The source of bank row ``row``, with the shard and its own row when the bank has several."""
        if len(self.shards) == 1:
            return self.source
        shard_first = 0
        for shard in self.shards:
            if row < shard_first + shard.rows:
                return f"{self.source} (shard {shard.path}, its row {row - shard_first})"
            shard_first += shard.rows
        return self.source

    def stored_float_dtype(self) -> np.dtype | None:
        """The narrowest float dtype its shards store (raw float32 shards: float32), None when every shard holds
        integers: the precision its values carry, which reading them as float32 or float64 only widens."""
        return narrowest_float_dtype(shard.dtype for shard in self.shards)

    def mixed_shard_magnitudes(self, rows: int) -> dict[str, float | None]:
        """``inputs.magnitude`` of the first ``rows`` rows of every shard, by name, when some shards are 8-bit and
        others not (uint8 shards are divided by 255 as read, float ones are not: such a bank may mix two scales);
        else nothing. One shard's rows are held at a time (every shard's at once, 120 shards of 1,000 rows held
        358 MB, the whole bank)."""
        bytes_ = [_is_byte_shard(shard) for shard in self.shards]
        if all(bytes_) or not any(bytes_):
            return {}
        return {f"the bank's shard {shard.path}": magnitude(self._shard_rows(shard, 0, min(rows, shard.rows)))
                for shard in self.shards}

    def holds_bytes(self) -> bool:
        """Whether any shard is 8-bit (uint8 images, divided by 255 as they are read)."""
        return any(_is_byte_shard(shard) for shard in self.shards)

    def holds(self, values: np.ndarray, rows: int = CHUNK_ROWS) -> bool:
        """Whether the bank is exactly ``values`` (on the data's scale): read a piece at a time, not counted in
        ``rows_read``, stopping at the first piece that differs (for other data, the first row's)."""
        if values.shape != (self.count, self.dimension):
            return False
        return all(np.array_equal(self._read_rows(first, min(first + size, self.count), counted=False),
                                  values[first:first + size])
                   for first, size in [(0, 1)] + [(first, rows) for first in range(0, self.count, rows)])

    def head(self, rows: int) -> np.ndarray:
        """The first ``rows`` rows, unchecked and not counted in ``rows_read`` (a look at the data's scale)."""
        return self.rows_unchecked(0, min(rows, self.count))

    def rows_unchecked(self, first: int, last: int) -> np.ndarray:
        """Rows [first, last), unchecked and not counted in ``rows_read`` (a look, not a read to score)."""
        return self._read_rows(first, last, counted=False)

    def read_all(self, rows: int = CHUNK_ROWS) -> np.ndarray:
        """The whole bank as one (count, dimension) array, checked as ``chunks`` checks it."""
        return np.concatenate([chunk for _, chunk in self.chunks(rows)])

    def with_range(self, value_range: tuple[float, float] | None) -> "Bank":
        """The same bank, its chunks checked against ``value_range`` (kept if it already has one)."""
        if value_range is None or self.value_range is not None:
            return self
        return Bank(self.shards, self.dimension, self.source, value_range, self.role, self.layout)


def _npz_shard(path: Path) -> tuple[_Shard, int, tuple[int, ...] | None]:
    """An ``.npz`` holding one array (or one named ``samples``): read in place when stored uncompressed
    (``numpy.savez``), else loaded whole."""
    if not zipfile.is_zipfile(path):
        raise GanbenchError(f"{path} is not an .npz file (a zip archive of .npy arrays); save it with numpy.savez")
    stored = _stored_npz_array(path)
    if stored is not None:
        return stored
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy with a zip archive after it
            raise ValueError("not a zip archive of .npy arrays")
        with loaded as archive:
            names = list(archive.keys())
            name = "samples" if "samples" in names else (names[0] if len(names) == 1 else None)
            array = None if name is None else archive[name]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as error:
        # NumPy's own text can advise loading with allow_pickle, which runs code from the file: never relay it.
        # RuntimeError: an encrypted member; NotImplementedError: a compression zipfile cannot inflate.
        raise GanbenchError(f"{path} is not a readable .npz file of numbers ({type(error).__name__}); "
                            "save a numeric array with numpy.savez") from None
    if array is None:
        raise GanbenchError(f"{path} holds {len(names)} arrays ({', '.join(names)}); save one, or name the one "
                            "to read 'samples' (whatever the file holds)")
    if not isinstance(array, np.ndarray):  # NumPy hands back the raw bytes of a member that is not an .npy
        raise GanbenchError(f"{path}: its member {name!r} is not an .npy array; save a numeric array with numpy.savez")
    return _array_shard(path, array)


# A zip member's local header: its signature, then fixed fields up to the lengths of its name and extra field.
LOCAL_HEADER = struct.Struct("<4s22xHH")
LOCAL_SIGNATURE = b"PK\x03\x04"
CRC_BLOCK_BYTES = 2**24  # read at a time to check a member's CRC-32


def _stored_npz_array(path: Path) -> tuple[_Shard, int, tuple[int, ...] | None] | None:
    """The array ``_npz_shard`` reads, in place, when its member is an .npy stored uncompressed and unencrypted:
    its bytes are then an .npy file's inside the archive, from the member's local header on. None for anything
    else (a compressed member, several arrays, an archive after other bytes, which NumPy refuses, a local header
    that is not the directory's, a header that does not parse or a size that does not add up), which
    ``_npz_shard`` loads whole through NumPy and refuses as it always has. A bank of 10^6 MNIST-size rows saved
    with numpy.savez held all of its 3.1 GB in memory before scoring began; read in place it holds one chunk.

    The member's bytes are checked against its CRC-32 first, as NumPy's load checks them: one read of the
    member, a chunk at a time (a flipped bit was otherwise scored, silently)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
        keys = [member.filename.removesuffix(".npy") for member in members]  # NumPy's names for them
        key = "samples" if "samples" in keys else (keys[0] if len(keys) == 1 else None)
        if key is None or keys.count(key) != 1:
            return None
        member = members[keys.index(key)]
        if (member.compress_type != zipfile.ZIP_STORED or member.flag_bits & 0x1  # encrypted
                or not member.filename.endswith(".npy")):
            return None
        with open(path, "rb") as handle:
            status = os.fstat(handle.fileno())
            if handle.read(len(LOCAL_SIGNATURE)) != LOCAL_SIGNATURE:  # NumPy reads archives that start the file
                return None
            handle.seek(member.header_offset)
            signature, name_length, extra_length = LOCAL_HEADER.unpack(handle.read(LOCAL_HEADER.size))
            if signature != LOCAL_SIGNATURE or handle.read(name_length) != member.filename.encode(
                    "utf-8" if member.flag_bits & 0x800 else "cp437"):
                return None
            start = member.header_offset + LOCAL_HEADER.size + name_length + extra_length
            handle.seek(start)
            shape, fortran_order, dtype, offset = _npy_header(handle)
            if (dtype.hasobject or dtype.kind not in "uif" or len(shape) < 2
                    or member.file_size != offset - start + _value_bytes(shape, dtype)
                    or status.st_size < start + member.file_size or not _crc_matches(handle, start, member)):
                return None  # NumPy's load gives the one-line refusal, or reads what it can
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, struct.error, UnicodeError):
        return None
    return (_in_place_shard(path, shape, fortran_order, dtype, offset, status), *_points_shape(path, shape))


def _crc_matches(handle, start: int, member: zipfile.ZipInfo) -> bool:
    handle.seek(start)
    crc, left = 0, member.file_size
    while left:
        block = handle.read(min(CRC_BLOCK_BYTES, left))
        if not block:
            return False
        crc, left = zlib.crc32(block, crc), left - len(block)
    return crc == member.CRC


def _npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """An .npy header read from ``handle``'s position: shape, Fortran order, dtype, and where the values start.
    NumPy's reader takes negative sizes; they are refused here (ValueError, as for any header it refuses)."""
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(handle)
    if any(size < 0 for size in shape):
        raise ValueError(f"its header gives the shape {tuple(shape)}, with a negative size")
    return shape, fortran_order, dtype, handle.tell()


def _value_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """The bytes of an array's values, in Python's integers (NumPy's int64 product of large sizes wraps)."""
    count = 1
    for size in shape:
        count *= int(size)
    return count * dtype.itemsize


def _in_place_shard(path: Path, shape: tuple[int, ...], fortran_order: bool, dtype: np.dtype, offset: int,
                    status: os.stat_result) -> _Shard:
    """A shard read from the file as it is scored (no copy held, no file left open)."""
    return _Shard(path, shape[0], offset, stored=dtype, fortran_shape=tuple(shape) if fortran_order else None,
                  stamp=_stamp(status))


def _points_shape(path: Path | None, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...] | None]:
    """A file's or array's point dimension and its image layout: (count, dimension), or (count, ...) images
    flattened in C order, such as (count, height, width) or (count, 1, height, width); the layout is the image
    shape without its length-1 axes (None for vectors), so that the same images stored with or without a
    channel axis compare equal (``check_same_layout``)."""
    name = path or "bank"
    if len(shape) < 2:
        raise GanbenchError(f"{name} has shape {tuple(shape)}; pass (count, dimension) or (count, height, width)")
    dimension = int(np.prod(shape[1:]))
    if dimension == 0:
        raise GanbenchError(f"{name} has shape {tuple(shape)}: no values per point; pass (count, dimension) with "
                            "dimension >= 1")
    layout = tuple(size for size in shape[1:] if size != 1)
    return dimension, (layout if len(layout) > 1 else None)  # (count, 1, 784) holds vectors, as (count, 784)


def _array_shard(path: Path | None, array: np.ndarray) -> tuple[_Shard, int, tuple[int, ...] | None]:
    dimension, layout = _points_shape(path, array.shape)
    if array.dtype.kind not in "uif":
        raise GanbenchError(f"{path or 'bank'} has dtype {array.dtype}; pass numbers")
    return _Shard(path, len(array), 0, array.reshape(len(array), dimension)), dimension, layout


def _npy_shard(path: Path) -> tuple[_Shard, int, tuple[int, ...] | None]:
    if not path.is_file():  # opened, a FIFO waits for a writer that may never come
        raise GanbenchError(f"{path} is not a regular file (a pipe, a device or a folder); save the array to a "
                            ".npy file and pass that")
    if path.suffix == ".npz":
        return _npz_shard(path)
    try:
        with open(path, "rb") as handle:
            status = os.fstat(handle.fileno())
            shape, fortran_order, dtype, offset = _npy_header(handle)
    except (ValueError, OSError, EOFError) as error:
        raise GanbenchError(f"{path} is not a readable .npy file ({error})") from None
    dimension, layout = _points_shape(path, shape)
    if dtype.hasobject or dtype.kind not in "uif":
        raise GanbenchError(f"{path} has dtype {dtype}; save a numeric array (float32, or uint8 images)")
    if status.st_size < offset + _value_bytes(shape, dtype):
        raise GanbenchError(f"{path} is shorter than its header says (truncated?); write it again")
    # Every dtype and order is read in place (uint8 images are divided by 255 as they are read).
    return _in_place_shard(path, shape, fortran_order, dtype, offset, status), dimension, layout


# ``ganbench sample --shard-size`` marks its folder with this file: incomplete while it writes, then the list
# of shards it wrote. A folder with it is read as the list says (never a shard left from an earlier bank, never
# an interrupted one); a folder without it is the user's own, read whole.
SHARD_MANIFEST = "ganbench-bank.json"
MANIFEST_KIND = "ganbench sample shards"


def begin_shards(folder: Path, names: list[str]) -> None:
    """Mark ``folder`` as a bank being written, then remove the shards of any bank written there before
    that this one will not overwrite (their names are ganbench's own: ``shard-NNNNN.npy``)."""
    from ganbench import atomic

    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / SHARD_MANIFEST, json.dumps({"kind": MANIFEST_KIND, "complete": False}))
    for stale in folder.glob("shard-*.npy"):
        if stale.name not in names:
            stale.unlink()


def finish_shards(folder: Path, shards: list[tuple[str, int]]) -> None:
    """Mark ``folder``'s bank as complete: its shards, in order, with their rows."""
    from ganbench import atomic

    atomic.write_text(folder / SHARD_MANIFEST, json.dumps(
        {"kind": MANIFEST_KIND, "complete": True, "shards": [{"file": name, "rows": rows} for name, rows in shards]}))


def _listed_shards(folder: Path) -> list[Path] | None:
    """The shards a folder's manifest lists (None without one), or a one-line error for a bank that is not whole."""
    manifest = folder / SHARD_MANIFEST
    if not manifest.exists():
        return None
    try:
        listed = json.loads(manifest.read_text())
        complete = listed["complete"] is True
        files = [(entry["file"], entry["rows"]) for entry in listed["shards"]] if complete else []
    except (OSError, ValueError, KeyError, TypeError):
        raise GanbenchError(f"{manifest} is damaged; write the bank again with `ganbench sample --shard-size`") from None
    if not complete:
        raise GanbenchError(f"{folder} holds an incomplete bank (its `ganbench sample` was interrupted or is still "
                            "running); run the command again")
    names = [str(name) for name, _ in files]
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    outside = [name for name in names if Path(name).name != name]
    if repeated or outside:  # a shard read twice scored its samples twice; a path leaves the bank's folder
        which = f"lists {repeated[0]} twice" if repeated else f"lists {outside[0]}, which is not a file of the folder"
        raise GanbenchError(f"{manifest} {which}; write the bank again with `ganbench sample --shard-size`")
    extra = sorted({path.name for pattern in ("*.npy", "*.npz") for path in folder.glob(pattern)}
                   - {name for name, _ in files})
    if extra:
        raise GanbenchError(f"{folder} holds files its {SHARD_MANIFEST} does not list ({', '.join(extra[:3])}); "
                            "move them out, or write the bank again")
    paths = []
    for name, rows in files:
        path = folder / str(name)
        if not path.is_file() or _npy_shard(path)[0].rows != rows:
            raise GanbenchError(f"{folder}'s shard {name} is missing or not the {rows} rows its {SHARD_MANIFEST} "
                                "lists; write the bank again with `ganbench sample`")
        paths.append(path)
    return paths


def open_bank(source, value_range: tuple[float, float] | None = None, role: str = "bank") -> Bank:
    """An array, a ``.npy`` or ``.npz`` path, or a folder of shards: the shards its ``SHARD_MANIFEST`` lists
    (``ganbench sample --shard-size``), else its ``*.npy`` files in name order, then its ``*.npz`` files in
    name order (names compare as text: ``s10`` before ``s2``, so number shards with leading zeros, as
    ``ganbench sample --shard-size`` does; the order moves nearest indices, never a score).

    Arrays and files alike become data by ``inputs.as_data`` (uint8 divided by 255) as they
    are read. ``value_range``, when given, is the data's range (MNIST: (0, 1)); a chunk with a
    value outside it is an error when read.
    """
    if not isinstance(source, (str, Path)):
        array = as_real_array(role, source)
        if array.ndim != 2:
            raise GanbenchError(f"bank must be 2-D (count, dimension), got shape {array.shape}")
        return Bank([_Shard(None, len(array), 0, array)], array.shape[1], "array", value_range, role)  # used as given
    path = Path(source)
    if path.is_dir():
        files = _listed_shards(path)
        files = files if files is not None else sorted(path.glob("*.npy")) + sorted(path.glob("*.npz"))
        if not files:
            raise GanbenchError(f"{path} holds no .npy shards; write some with `ganbench sample --shard-size`")
    elif path.exists():
        files = [path]
    else:
        raise GanbenchError(f"{role} {path} does not exist; pass a .npy file or a folder of .npy shards")
    try:
        shards, dimensions, layouts = zip(*(_npy_shard(file) for file in files))
    except GanbenchError as error:
        # The readers name the file; the line also says which of the user's files it is ("held-out data x.npy
        # has shape (784,)"), where it said "a bank" of every file.
        if role == "bank" or not str(error).startswith(str(path)):
            raise
        raise GanbenchError(f"{role} {error}") from None
    if len(set(dimensions)) != 1:
        raise GanbenchError(f"shards in {path} have different dimensions {sorted(set(dimensions))}; a bank's samples "
                            "all have one dimension: move the others out")
    images = {layout for layout in layouts if layout is not None}
    if len(images) > 1:
        raise GanbenchError(f"shards in {path} hold images of different layouts {sorted(images)}; save them in one")
    return Bank(list(shards), dimensions[0], str(path), value_range, role, layout=next(iter(images), None))


MNIST_LAYOUT = (28, 28)


def check_mnist_layout(bank: Bank) -> None:
    """Samples scored against MNIST that are stored as images must be 28 x 28 ones: (count, 14, 56) has MNIST's
    784 values a row, in another order."""
    if bank.layout is not None and bank.layout != MNIST_LAYOUT:
        raise GanbenchError(f"{bank.role} {bank.source} holds images of shape {bank.layout}, but MNIST's are 28 x 28: "
                            "their pixels would be compared out of order; save them as (count, 28, 28) or (count, 784)")


def check_same_layout(named_banks: dict[str, Bank]) -> None:
    """A one-line error when two of these files hold images of different layouts (channels first in one and last
    in the other, or height and width swapped): their flattened vectors would be compared pixel by pixel
    regardless. Files of vectors carry no layout and pass."""
    images = [(name, bank) for name, bank in named_banks.items() if bank.layout is not None]
    for (name, bank), (other_name, other) in zip(images, images[1:]):
        if bank.layout != other.layout:
            raise GanbenchError(f"{name} {bank.source} holds images of shape {bank.layout} but {other_name} "
                                f"{other.source} of shape {other.layout}: their pixels would be compared out of "
                                "order; save both in one layout")
