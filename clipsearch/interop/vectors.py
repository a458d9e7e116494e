"""Vectors in and out of a library: .npz, the .npy pair, and clip-retrieval's folders.

Written (`clipsearch export`):
  library.npz   vectors (float32, n x dim, L2-normalised), paths, hashes, taken_at (ISO text,
                "" unknown), width, height (int32, -1 unknown), model (0-d text)
  FOLDER/       embeddings.npy + paths.npy (--format npy)
Read (`clipsearch import`): those two layouts (`vectors` may also be called `embeddings`,
`paths` also `filenames`), and clip-retrieval's output folder (img_emb/img_emb_N.npy with
metadata/metadata_N.parquet, which needs pyarrow).

Both ways stream: an export writes each array in chunks of rows straight into its file, an
import reads rows in chunks from the file (or the zip member), so a million vectors (2 GB)
are never held twice. Nothing is unpickled (object arrays are refused), and a file is
written whole or not at all.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import numpy.lib.format as npformat

from .._files import replaced
from ..errors import BadArgument, ClipsearchError, NotIndexed
from ..records import ExportReport

if TYPE_CHECKING:
    from ..catalog.store import Store

VECTOR_KEYS = ("vectors", "embeddings")
PATH_KEYS = ("paths", "filenames")
COLUMNS = ("hashes", "taken_at", "width", "height")  # optional, per row
CHUNK = 20_000  # rows read or written at a time (40 MB of 512-d vectors)
FORMATS = ("npz", "npy")


# --- reading ----------------------------------------------------------------------------
class _Rows:
    """One .npy array (a file, or a member of an .npz) read a number of rows at a time."""

    def __init__(self, file: IO[bytes], label: str, size: int | None = None):
        """`size`: the bytes the whole array file holds, where known (checked against the header)."""
        self.file, self.label = file, label
        try:
            version = npformat.read_magic(file)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(file)
            elif version == (2, 0):
                shape, fortran, dtype = npformat.read_array_header_2_0(file)
            else:
                raise ValueError(f"format version {version}")
        except ValueError as exc:
            raise ClipsearchError(f"{label} is not a NumPy array file ({exc})") from None
        if dtype.hasobject:
            raise ClipsearchError(f"{label} holds Python objects, which are not loaded (they would run code "
                                  "when unpickled): save it as numbers or text (e.g. np.array(paths, dtype=str))")
        if fortran and len(shape) > 1:
            raise ClipsearchError(f"{label} is stored in Fortran order: save np.ascontiguousarray() of it")
        self.shape, self.dtype = tuple(shape), dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self.left = shape[0] if shape else 0
        if size is not None and size - file.tell() < self.left * self.row_bytes:
            raise ClipsearchError(f"{label} ends early: the file is truncated")

    def read(self, rows: int) -> np.ndarray:
        import zlib

        rows = min(rows, self.left)
        try:
            data = self.file.read(rows * self.row_bytes)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise ClipsearchError(f"{self.label} cannot be read whole ({exc}): the file is damaged") from None
        if len(data) != rows * self.row_bytes:
            raise ClipsearchError(f"{self.label} ends early: the file is truncated")
        self.left -= rows
        return np.frombuffer(data, dtype=self.dtype).reshape(rows, *self.shape[1:])


@dataclass
class _Part:
    """Rows that belong together: vectors and their per-row columns (arrays read in step, or
    whole arrays)."""

    vectors: _Rows
    columns: dict[str, _Rows | np.ndarray]
    count: int


@dataclass
class VectorSource:
    """Vectors to import, checked: shapes, dtypes and lengths agree. Use as a context manager."""

    label: str
    dim: int
    count: int
    model: str | None
    parts: list[_Part]
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def __enter__(self) -> "VectorSource":
        return self

    def __exit__(self, *exc) -> None:
        for close in reversed(self._closers):  # zip members before their archive
            close()

    def chunks(self, rows: int = CHUNK) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """(columns, vectors as float32) CHUNK rows at a time, in order; columns always has
        `paths` (str) and those of COLUMNS the source has."""
        for part in self.parts:
            done = 0
            while done < part.count:
                take = min(rows, part.count - done)
                vectors = part.vectors.read(take).astype(np.float32, copy=False)
                columns = {name: (column.read(take) if isinstance(column, _Rows) else column[done:done + take])
                           for name, column in part.columns.items()}
                columns["paths"] = _text(columns["paths"])
                yield columns, vectors
                done += take


def open_source(path: str | os.PathLike, paths: str | os.PathLike | None = None) -> VectorSource:
    """The vectors at path: an .npz, an .npy of vectors with `paths` (default: paths.npy beside
    it), or a clip-retrieval output folder. Raises ClipsearchError naming the problem."""
    path = Path(path)
    if path.is_dir():
        return _clip_retrieval(path)
    if not path.is_file():
        raise ClipsearchError(f"{path}: no such file")
    if path.suffix.lower() == ".npz" or zipfile.is_zipfile(path):
        if paths is not None:
            raise BadArgument("paths", None, "goes with an .npy of vectors; an .npz holds its own paths")
        return _npz(path)
    paths = Path(paths) if paths is not None else path.with_name("paths.npy")
    if not paths.is_file():
        raise ClipsearchError(f"{path}: the paths of its vectors are not given: name their .npy with --paths FILE "
                              f"({paths} is not there)")
    source = VectorSource(str(path), 0, 0, None, [])
    try:
        vectors = _Rows(_opened(path, source), str(path), path.stat().st_size)
        source.parts.append(_part(vectors, {"paths": _Rows(_opened(paths, source), str(paths), paths.stat().st_size)},
                                  str(path)))
        return _checked(source)
    except BaseException:
        source.__exit__()
        raise


def _opened(path: Path, source: VectorSource) -> IO[bytes]:
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by the source
    except OSError as exc:
        raise ClipsearchError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    source._closers.append(file.close)
    return file


def _npz(path: Path) -> VectorSource:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ClipsearchError(f"{path} is not a readable .npz ({exc})") from None
    source = VectorSource(str(path), 0, 0, None, [], [archive.close])
    try:
        names = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}

        def member(key: str) -> _Rows:
            file = archive.open(names[key])
            source._closers.append(file.close)
            return _Rows(file, f"{path}: {key!r}", archive.getinfo(names[key]).file_size)

        vector_key = next((k for k in VECTOR_KEYS if k in names), None)
        path_key = next((k for k in PATH_KEYS if k in names), None)
        if vector_key is None or path_key is None:
            raise ClipsearchError(f"{path} has no {'vectors' if vector_key is None else 'paths'} array (it holds: "
                                  f"{', '.join(sorted(names)) or 'nothing'}); clipsearch reads `vectors` and `paths`")
        columns: dict[str, _Rows | np.ndarray] = {"paths": member(path_key)}
        columns.update({key: member(key) for key in COLUMNS if key in names})
        source.parts.append(_part(member(vector_key), columns, str(path)))
        if "model" in names:
            model = member("model")
            if model.shape != () or model.dtype.kind not in "US":
                raise ClipsearchError(f"{path}: 'model' should be one text, not {model.dtype} {model.shape}")
            source.model = str(_text(np.frombuffer(model.file.read(), dtype=model.dtype))[0]) or None
        return _checked(source)
    except BaseException:
        source.__exit__()
        raise


def _clip_retrieval(folder: Path) -> VectorSource:
    """clip-retrieval's `clip_inference` output: img_emb/img_emb_N.npy and metadata/metadata_N.parquet."""
    embeddings = folder / "img_emb" if (folder / "img_emb").is_dir() else folder
    metadata = folder / "metadata" if (folder / "metadata").is_dir() else folder
    files = sorted(embeddings.glob("img_emb_*.npy"), key=lambda p: _number(p.stem))
    if not files:
        raise ClipsearchError(f"{folder}: no img_emb_*.npy in it (a clip-retrieval output folder has img_emb/ "
                              "and metadata/)")
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise ClipsearchError("reading clip-retrieval's parquet metadata needs pyarrow: "
                              "pip install 'clipsearch[parquet]' (or pip install pyarrow)") from None
    source = VectorSource(str(folder), 0, 0, None, [])
    try:
        for file in files:
            table_path = metadata / f"metadata_{_number(file.stem)}.parquet"
            if not table_path.is_file():
                raise ClipsearchError(f"{file} has no metadata beside it ({table_path} is not there)")
            try:
                schema = parquet.read_schema(table_path)
                column = next((c for c in ("image_path", "url", "path") if c in schema.names), None)
                if column is None:
                    raise ClipsearchError(f"{table_path} has no image_path or url column (it has: "
                                          f"{', '.join(schema.names)})")
                values = parquet.read_table(table_path, columns=[column]).column(0).to_pylist()
            except ClipsearchError:
                raise
            except Exception as exc:  # noqa: BLE001 - pyarrow raises its own kinds for bad files
                raise ClipsearchError(f"{table_path} cannot be read as parquet ({exc})") from None
            # Kept as Python strings: a fixed-width array is as wide as the longest URL, for every row.
            paths = np.array(["" if v is None else str(v) for v in values], dtype=object)
            source.parts.append(_part(_Rows(_opened(file, source), str(file), file.stat().st_size), {"paths": paths},
                                      str(file)))
        return _checked(source)
    except BaseException:
        source.__exit__()
        raise


def _number(stem: str) -> int:
    tail = stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _part(vectors: _Rows, columns: dict[str, _Rows | np.ndarray], label: str) -> _Part:
    if len(vectors.shape) != 2 or vectors.shape[1] < 1:
        raise ClipsearchError(f"{vectors.label} should hold one vector per row (2 dimensions), "
                              f"not an array of shape {vectors.shape}")
    if vectors.dtype.kind != "f":
        raise ClipsearchError(f"{vectors.label} holds {vectors.dtype}, not floating-point vectors")
    count = vectors.shape[0]
    kinds = {"paths": "US", "hashes": "US", "taken_at": "US", "width": "iu", "height": "iu"}
    for name, column in columns.items():
        shape = column.shape
        column_label = column.label if isinstance(column, _Rows) else f"{label}: {name}"
        if len(shape) != 1:
            raise ClipsearchError(f"{column_label} should be a list (1 dimension), not of shape {shape}")
        if shape[0] != count:
            raise ClipsearchError(f"{column_label} has {shape[0]} entries for {count} vectors: the lengths must match")
        if column.dtype.kind not in kinds[name] and not (isinstance(column, np.ndarray) and column.dtype.kind == "O"):
            # (object arrays only ever come from parquet, read here: never unpickled)
            raise ClipsearchError(f"{column_label} holds {column.dtype}, not "
                                  f"{'text' if kinds[name] == 'US' else 'whole numbers'}")
    return _Part(vectors, columns, count)


def _checked(source: VectorSource) -> VectorSource:
    dims = {part.vectors.shape[1] for part in source.parts}
    if len(dims) > 1:
        raise ClipsearchError(f"{source.label}: its files hold vectors of different lengths ({sorted(dims)})")
    source.dim = dims.pop()
    source.count = sum(part.count for part in source.parts)
    return source


def _text(values: np.ndarray) -> np.ndarray:
    """Text as str: bytes are read as UTF-8 (a path that is not UTF-8 becomes "", refused as
    having no path)."""
    if values.dtype.kind == "S":
        return np.array([_utf8(v) for v in values.tolist()], dtype=object)
    return values


def _utf8(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return ""


# --- writing ----------------------------------------------------------------------------
def _header(file: IO[bytes], dtype: np.dtype, shape: tuple[int, ...]) -> None:
    npformat.write_array_header_1_0(file, {"descr": npformat.dtype_to_descr(np.dtype(dtype)),
                                           "fortran_order": False, "shape": shape})


def write_npy(file: IO[bytes], dtype: np.dtype | str, shape: tuple[int, ...], chunks: Iterable[np.ndarray]) -> None:
    """An .npy of `shape` whose rows come in chunks (checked to add up)."""
    dtype = np.dtype(dtype)
    _header(file, dtype, shape)
    rows = 0
    for chunk in chunks:
        file.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
        rows += len(chunk)
    if rows != shape[0]:
        raise RuntimeError(f"{rows} rows written for {shape[0]}: the catalog changed during the export")


@dataclass(frozen=True)
class Plan:
    """What an export writes: how many rows, the vector length, the longest texts, the model."""

    count: int
    dim: int
    path_chars: int
    hash_chars: int
    model: str
    taken_chars: int = 19  # 2021-06-01T12:30:00


# An export reads the catalog once per array, each time one column (the Library's reader).
Reader = Callable[[str], Iterator[np.ndarray]]


def _arrays(plan: Plan) -> list[tuple[str, str, np.dtype]]:
    """(array name, catalog column, dtype) in the order they are written."""
    return [("vectors", "vector", np.dtype(np.float32)),
            ("paths", "path", np.dtype(f"<U{max(plan.path_chars, 1)}")),
            ("hashes", "hash", np.dtype(f"<U{max(plan.hash_chars, 1)}")),
            ("taken_at", "taken_at", np.dtype(f"<U{max(plan.taken_chars, 1)}")),
            ("width", "width", np.dtype(np.int32)),
            ("height", "height", np.dtype(np.int32))]


def _shape(plan: Plan, name: str) -> tuple[int, ...]:
    return (plan.count, plan.dim) if name == "vectors" else (plan.count,)


def _member(name: str, compress_type: int = zipfile.ZIP_STORED) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = compress_type
    return info


def write_npz(path: str | os.PathLike, plan: Plan, read: Reader,
              on_progress: Callable[[int, int], None] | None = None) -> None:
    """library.npz: each array streamed into its member (vectors stored, texts compressed)."""
    arrays = _arrays(plan)
    steps = len(arrays) * max(plan.count, 1)
    with replaced(path, "wb") as file, zipfile.ZipFile(file, "w", allowZip64=True) as archive:
        for number, (name, column, dtype) in enumerate(arrays):
            info = _member(name, zipfile.ZIP_STORED if name == "vectors" else zipfile.ZIP_DEFLATED)
            with archive.open(info, "w", force_zip64=True) as member:
                write_npy(member, dtype, _shape(plan, name),
                          _counted(read(column), number * plan.count, steps, on_progress))
        with archive.open(_member("model"), "w") as member:
            npformat.write_array(member, np.array(plan.model), allow_pickle=False)


def write_npy_pair(folder: str | os.PathLike, plan: Plan, read: Reader,
                   on_progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """FOLDER/embeddings.npy and FOLDER/paths.npy (the npz's `vectors` and `paths`): both
    written under temporary names, then renamed, so a failure leaves the old pair (never
    new vectors beside old paths)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ClipsearchError(f"{folder} is a file: --format npy writes a folder (embeddings.npy, paths.npy)")
    arrays = [a for a in _arrays(plan) if a[0] in ("vectors", "paths")]
    steps = 2 * max(plan.count, 1)
    folder.mkdir(parents=True, exist_ok=True)
    with replaced(folder / "embeddings.npy", "wb") as vectors_file, replaced(folder / "paths.npy", "wb") as paths_file:
        for number, (file, (name, column, dtype)) in enumerate(zip((vectors_file, paths_file), arrays)):
            write_npy(file, dtype, _shape(plan, name), _counted(read(column), number * plan.count, steps, on_progress))
    return [folder / "embeddings.npy", folder / "paths.npy"]


def _counted(chunks: Iterator[np.ndarray], before: int, total: int,
             on_progress: Callable[[int, int], None] | None) -> Iterator[np.ndarray]:
    done = before
    for chunk in chunks:
        yield chunk
        done += len(chunk)
        if on_progress:
            on_progress(done, total)


def export(store: Store, output: str | os.PathLike, fmt: str = "npz", live_only: bool = True,
           on_progress: Callable[[int, int], None] | None = None) -> ExportReport:
    """Write the catalog's vectors with their paths: an .npz, or with fmt "npy" the folder
    `output` with embeddings.npy and paths.npy. live_only False adds the rows kept with a
    vector while their photos are away (offline, deleted). The catalog is read in one read
    transaction, one column at a time, whatever a crawl writes meanwhile."""
    if fmt not in FORMATS:
        raise BadArgument("format", fmt, f"is not one of: {', '.join(FORMATS)}")
    output = Path(output)
    if not output.parent.is_dir():
        raise ClipsearchError(f"{output.parent}: no such folder")
    if fmt == "npz" and output.is_dir():
        raise ClipsearchError(f"{output} is a folder: name the .npz file to write (or use --format npy)")
    with store.snapshot():  # one moment of the catalog, whatever the crawl writes meanwhile
        dim = int(store.get_meta("dim") or 0)
        model = store.get_meta("model")
        if not dim or not model:
            raise NotIndexed(None, "vectors")
        count, path_chars, hash_chars, taken_chars = store.export_sizes(live_only)
        plan = Plan(count, dim, path_chars, hash_chars, model, taken_chars)

        def read(column: str):
            for values in store.export_column(live_only, column):
                if column == "vector":
                    yield np.frombuffer(b"".join(values), dtype=np.float32).reshape(len(values), dim)
                elif column in ("width", "height"):
                    yield np.array([-1 if v is None else v for v in values], dtype=np.int32)
                else:
                    yield [v or "" for v in values]

        if fmt == "npz":
            write_npz(output, plan, read, on_progress)
            files = [output]
        else:
            files = write_npy_pair(output, plan, read, on_progress)
    return ExportReport(count, dim, model, files)
