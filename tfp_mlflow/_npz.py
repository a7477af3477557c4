"""Safe reading and atomic writing of the ``.npz`` files tfp-mlflow exchanges (fingerprints, specs).

Nothing here unpickles: arrays are read from their checked headers into plain arrays (object dtypes refused), and
metadata is a JSON string stored as a 0-d unicode array. Archives are checked before any array is decompressed
(declared sizes, member names), so a zip bomb or a stray member is refused without reading it.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tfp_mlflow import _json
from tfp_mlflow._paths import as_ordinary_file
from tfp_mlflow.errors import BadInputError, first_line

#: Upper bound on the declared, uncompressed size of one archive (a large fingerprint with second moments of a
#: 4096-feature backbone stays far below it).
MAX_ARCHIVE_BYTES = 1 << 30
#: Largest JSON member (metadata) accepted.
MAX_JSON_MEMBER_BYTES = 4 * 1024 * 1024

#: numpy parses a ``.npy`` header with :func:`ast.literal_eval`, and CPython 3.11 before 3.11.9 can fail with
#: ``SystemError: AST constructor recursion depth mismatch`` when two threads build syntax trees at once (CPython
#: gh-106905; a server reads fingerprints on a thread per core). Every header is parsed under this lock (a few
#: microseconds); the data itself is read in parallel, without numpy's parser.
HEADER_LOCK = threading.Lock()

#: A member's declared layout, read from its ``.npy`` header before anything is decompressed.
Header = tuple[tuple[int, ...], np.dtype]


def read_npz(path: str | os.PathLike, *, kind: str, required: set[str],
             optional: set[str] | frozenset[str] = frozenset(), optional_prefix: str | None = None,
             max_bytes: int = MAX_ARCHIVE_BYTES, skip: frozenset[str] = frozenset(),
             check_headers: Callable[[dict[str, Header]], None] | None = None) -> dict[str, np.ndarray]:
    """Read every member of an ``.npz`` archive after validating its layout.

    Raises :class:`BadInputError` naming the file and the problem for anything that is not a well-formed archive
    holding exactly ``required`` (plus any of ``optional``, or names ``optional_prefix`` + identifier) plain
    (non-object) arrays. Members named in ``skip`` are validated by name but not decompressed.

    Before any member is decompressed, every member's ``.npy`` header is read (a few hundred bytes each): its
    declared shape and dtype must account for exactly the member's declared size, object dtypes are refused, and
    ``check_headers`` (given ``{name: (shape, dtype)}``) may refuse the layout, e.g. against a spec; so a file
    never costs more memory than the layout its reader accepts.
    """
    path = Path(path)
    where = f"{kind} file {str(path)!r}"
    if not path.is_file():
        raise BadInputError(f"{where} does not exist; check the path")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BadInputError(f"{where} is not a readable .npz archive ({exc}); re-create it") from None
    names = {info.filename.removesuffix(".npy") for info in infos}
    if any(not info.filename.endswith(".npy") or "/" in info.filename or ".." in info.filename for info in infos):
        raise BadInputError(f"{where} holds members that are not plain arrays; re-create it with tfp")
    declared = sum(info.file_size for info in infos)
    if declared > max_bytes:
        raise BadInputError(f"{where} declares {declared:,} uncompressed bytes (limit {max_bytes:,}); refusing to "
                            f"decompress it")
    missing = required - names
    if missing:
        raise BadInputError(f"{where} lacks {', '.join(sorted(missing))}; it is incomplete or not a {kind} file")
    unknown = {name for name in names - required - set(optional)
               if not (optional_prefix and name.startswith(optional_prefix)
                       and name[len(optional_prefix):].isidentifier())}
    if unknown:
        raise BadInputError(f"{where} holds unexpected members {', '.join(sorted(unknown))}; re-create it with tfp")
    headers, layout = _headers(path, infos, where)
    if check_headers is not None:
        check_headers(headers)
    by_name = {info.filename.removesuffix(".npy"): info for info in infos}
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in sorted(names - set(skip)):
                arrays[name] = _read_member(archive, by_name[name], headers[name], layout[name])
    except ValueError as exc:
        raise BadInputError(f"{where} holds a malformed array ({exc}); re-create it") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise BadInputError(f"{where} is truncated or corrupt ({exc}); re-create it") from None
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise BadInputError(f"{where}: member {name!r} is an object array; re-create it with tfp")
    return arrays


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: Header,
                 layout: tuple[int, bool]) -> np.ndarray:
    """One member's array from its checked header: the data is read into an array of the declared layout, 256 kB
    at a time (decompression releases the GIL, so several threads read in parallel), never parsed by numpy again."""
    shape, dtype = header
    offset, fortran = layout
    array = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=dtype)
    raw = array.view(np.uint8)
    with archive.open(info) as member:
        member.read(offset)
        filled = 0
        while filled < raw.size:
            chunk = member.read(min(1 << 18, raw.size - filled))
            if not chunk:
                raise EOFError(f"member {info.filename!r} ends after {filled:,} of {raw.size:,} bytes")
            raw[filled:filled + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            filled += len(chunk)
    return array.reshape(shape, order="F" if fortran else "C")


def _headers(path: Path, infos: list[zipfile.ZipInfo],
             where: str) -> tuple[dict[str, Header], dict[str, tuple[int, bool]]]:
    """Each member's declared (shape, dtype), checked against its declared size, and where its data starts (and
    whether it is in Fortran order); nothing is decompressed."""
    headers: dict[str, Header] = {}
    layout: dict[str, tuple[int, bool]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in infos:
                name = info.filename.removesuffix(".npy")
                with archive.open(info) as member, HEADER_LOCK:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise ValueError(f"unsupported .npy version {version}")
                    offset = member.tell()
                if dtype.hasobject:
                    raise BadInputError(f"{where} contains pickled objects (member {name!r}), which tfp never "
                                        f"loads; re-create it with tfp")
                if any(d < 0 for d in shape) or len(shape) > 8:
                    raise ValueError(f"member {name!r} declares shape {shape}")
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if nbytes != info.file_size - offset:
                    raise BadInputError(f"{where}: member {name!r} declares shape {shape} ({nbytes:,} bytes) but "
                                        f"holds {info.file_size - offset:,}; the file is corrupt or forged")
                headers[name] = (tuple(int(d) for d in shape), dtype)
                layout[name] = (offset, bool(fortran))
    except BadInputError:
        raise
    except (ValueError, zipfile.BadZipFile, OSError, EOFError, KeyError, RuntimeError) as exc:
        raise BadInputError(f"{where} holds a malformed array header ({first_line(exc)}); re-create it") from None
    return headers, layout


def read_json_member(arrays: Mapping[str, np.ndarray], name: str, where: str) -> dict[str, Any]:
    """Decode a JSON object stored as a 0-d unicode array (bounded: see :func:`tfp_mlflow._json.loads`)."""
    array = arrays[name]
    if array.shape != () or array.dtype.kind != "U":
        raise BadInputError(f"{where}: {name!r} must be a JSON string, got an array of dtype {array.dtype} and "
                            f"shape {array.shape}")
    value = _json.loads(str(array), f"{where}: {name!r}", max_bytes=MAX_JSON_MEMBER_BYTES)
    if not isinstance(value, dict):
        raise BadInputError(f"{where}: {name!r} must be a JSON object")
    return value


def json_member(value: Mapping[str, Any]) -> np.ndarray:
    """Encode a JSON object as a 0-d unicode array (canonical: sorted keys)."""
    return np.array(json.dumps(value, sort_keys=True, separators=(",", ":")))


def write_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], *, compress: bool = True) -> Path:
    """Write an archive next to ``path`` and rename it into place, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    as_ordinary_file(fd)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    try:
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", compression=method, allowZip64=True) as archive:
                for name in sorted(arrays):
                    # A fixed timestamp makes equal content give byte-identical files.
                    info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                    info.compress_type = method
                    with archive.open(info, "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asanyarray(arrays[name]), allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
