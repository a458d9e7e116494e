"""The plain values that cross layers: what one layer hands another, and nothing more.

Files as a walk sees them, photos' metadata, the catalog's writes and rows, search results,
and the reports the Library gives its faces. Dataclasses only, no behaviour beyond a
derived property: every module may import this one, and it imports no other module of
clipsearch (the bottom of DESIGN.md's layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


# --- files and photos, as the crawl sees them -------------------------------------------------
@dataclass(frozen=True)
class FileRecord:
    """A candidate image file as seen on disk, before it is opened."""

    path: str
    root_id: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class WalkProblem:
    """A folder (or file) that could not be listed or read: its files are neither indexed nor
    marked deleted."""

    path: str
    error: str


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: square side, resize mode and interpolation (open_clip's terms)."""

    size: int = 224
    resize_mode: str = "shortest"  # shortest (resize + centre crop) | squash | longest (fit + pad)
    interpolation: str = "bicubic"
    fill_color: int = 0


@dataclass
class ImageMeta:
    width: int
    height: int
    format: str | None
    taken_at: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    # A small JPEG of the photo, made from the crawl's own decode when the words pass will read
    # it (never stored in the catalog: the pipeline spools it, ingest/ocr.py reads it).
    preview: bytes | None = field(default=None, repr=False, compare=False)


# --- the catalog's rows and writes ----------------------------------------------------------
@dataclass(frozen=True)
class Root:
    id: int
    path: str
    exclude: tuple[str, ...]
    crawled_at: float | None
    options: dict = field(default_factory=dict)  # extensions, include_hidden, follow_symlinks
    offline_since: float | None = None  # when the folder was found missing, if it is


@dataclass(frozen=True)
class KnownFile:
    """What the catalog knows of a path: enough to decide whether to look at the file again."""

    id: int
    size: int | None
    mtime_ns: int | None
    status: str
    has_vector: bool
    path: str = ""  # as stored (a case-insensitive match may differ in case)


@dataclass(frozen=True)
class Renamed:
    """A catalogued file found under a new spelling of its path (only its case changed)."""

    file_id: int
    path: str


@dataclass
class Embedded:
    record: FileRecord
    hash: str
    meta: ImageMeta
    vector: np.ndarray


@dataclass
class Reused:
    """A file whose bytes already have a vector (a move, a rename, a copy): `twin` is that
    vector and its metadata, read when the file was checked, or None while the twin is still
    being embedded in this crawl."""

    record: FileRecord
    hash: str
    twin: "Twin | None" = None


@dataclass(frozen=True)
class Twin:
    vector: bytes
    meta: dict


@dataclass
class Failed:
    record: FileRecord
    hash: str | None
    error: str


@dataclass
class Restored:
    """A file that had vanished and is back, unchanged."""

    file_id: int


Write = Embedded | Reused | Failed | Restored | Renamed


@dataclass
class FileRow:
    id: int
    path: str
    size: int | None
    mtime_ns: int | None
    width: int | None
    height: int | None
    format: str | None
    taken_at: str | None
    status: str
    error: str | None
    extra: dict = field(default_factory=dict)
    hash: str | None = None  # of the file's bytes (BLAKE2b-128, hex)
    remote: bool = False  # imported for a photo that is not on this computer


@dataclass(frozen=True)
class Imported:
    """A vector brought in by `clipsearch import`, with what is known of its photo."""

    path: str
    vector: bytes  # float32, L2-normalised
    root_id: int | None = None  # the library folder the photo is in, if any
    size: int | None = None  # the file's, where it is on this computer
    mtime_ns: int | None = None
    remote: bool = False
    hash: str | None = None
    taken_at: str | None = None
    width: int | None = None
    height: int | None = None


# --- what searches ask for and give ---------------------------------------------------------------
@dataclass(frozen=True)
class Filters:
    """Which photos may be returned. Empty tuples and None mean no restriction."""

    folders: tuple[str, ...] = ()  # absolute folders: photos under any of them
    folder_names: tuple[str, ...] = ()  # relative names: photos in a folder of that name anywhere
    after: str | None = None  # ISO date, inclusive
    before: str | None = None  # ISO date, exclusive
    extensions: tuple[str, ...] = ()  # lower case, no dot
    cameras: tuple[str, ...] = ()  # lower case substrings of "make model"
    # Not syntax: set by the library where the file system ignores case (`in:d:/photos`
    # then finds D:/Photos; ASCII letters only, as SQLite's NOCASE).
    fold_case: bool = False
    words: tuple[str, ...] = ()  # text:, each words in this order in the text read in the photo
    places: tuple[str, ...] = ()  # place:, folded names (places.fold): a city, region or country
    near: tuple[float, float, float] | None = None  # near: latitude, longitude, km

    def __bool__(self) -> bool:
        return bool(self.folders or self.folder_names or self.after or self.before or self.extensions
                    or self.cameras or self.words or self.places or self.near)



@dataclass(frozen=True)
class TuneReport:
    """What `clipsearch tune` trained (tuning.py): on how many photos of how many classes, and
    the held-out photos' mAP with the plain vectors and with the head."""

    photos: int
    classes: int
    held_out: int
    missing: int  # photos of the folder without a vector (unreadable: `clipsearch errors`)
    plain_map: float | None
    head_map: float | None
    steps: int
    seconds: float
    path: str

    @property
    def better(self) -> bool:
        """The head ranks the held-out photos better: image queries use it by default."""
        return self.head_map is not None and self.plain_map is not None and self.head_map > self.plain_map


@dataclass
class EvalRow:
    """One pipeline's scores in `clipsearch eval` (evaluation.py): mAP (None for captions),
    R@k by k, the mean time a query took, and each query's AP in the order searched."""

    pipeline: str
    mean_ap: float | None
    recall: dict[int, float]
    ms_per_query: float
    ap: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class SearchResult:
    rank: int
    score: float | None  # None: listed by a filter alone, not scored
    file_id: int
    path: str
    size: int | None
    mtime_ns: int | None
    taken_at: str | None
    width: int | None
    height: int | None
    format: str | None
    camera: str | None = None  # make and model, as the photo's EXIF says
    gps: tuple[float, float] | None = None  # latitude, longitude
    remote: bool = False  # imported for a photo that is not on this computer
    place: str | None = None  # "Lisbon, Lisbon, Portugal": from the GPS position
    text: str | None = None  # the words read in the photo, a line each


@dataclass(frozen=True)
class Photo:
    """A photo in the library, as a page or an export shows it."""

    id: int
    path: str
    size: int | None
    width: int | None
    height: int | None
    format: str | None
    taken_at: str | None
    camera: str | None
    gps: tuple[float, float] | None
    hash: str | None
    mtime_ns: int | None = None
    remote: bool = False  # imported for a photo that is not on this computer
    place: str | None = None  # "Lisbon, Lisbon, Portugal": from the GPS position
    text: str | None = None  # the words read in the photo, a line each


@dataclass(frozen=True)
class BatchQuery:
    """One query of a batch: a description in the query language, or else an image file
    (an absolute path) to find photos like."""

    text: str | None = None
    image: str | None = None


@dataclass
class BatchAnswer:
    results: list[SearchResult]
    error: str | None = None  # why the query failed (its results are then empty)


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos that are copies of one another: `exact` if all have the same bytes, else near
    (vectors at least the threshold alike: resized, re-encoded, lightly edited copies).
    `similarity` is the lowest of the pairs that joined the group."""

    exact: bool
    similarity: float
    photos: list[Photo]


# --- reports the Library gives its faces -------------------------------------------------------
@dataclass(frozen=True)
class CrawlSummary:
    """A crawl's counts at one moment: while it runs (progress) or when it is done."""

    found: int = 0
    unchanged: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0  # vector reused by content hash: moved, renamed or copied files
    embedded: int = 0
    failed: int = 0
    restored: int = 0
    deleted: int = 0
    vanished: int = 0  # gone between being found and being read: neither indexed nor failed
    device_decoded: int = 0  # JPEGs decoded on the model's device (the rest on the CPU)
    problems: tuple[WalkProblem, ...] = ()
    offline: tuple[str, ...] = ()  # roots not there: kept, not walked
    decoder_messages: int = 0  # warnings and errors of image libraries, sent to the log
    elapsed: float = 0.0  # seconds
    images_per_second: float = 0.0  # since the model was ready (its loading not counted)
    scanning: bool = False  # folders are still being walked (the total is not known yet)
    loading_model: bool = False
    # Where the time went for the embedded files, summed (scripts/bench.py reports it per
    # image): CPU time of hashing and decoding, wall time of model calls and of commits.
    decode_cpu_s: float = 0.0
    embed_wall_s: float = 0.0
    write_wall_s: float = 0.0

    @property
    def processed(self) -> int:
        return self.unchanged + self.restored + self.moved + self.embedded + self.failed


@dataclass(frozen=True)
class IndexInfo:
    """The search index as a face shows it."""

    generation: int
    count: int  # photos in it
    trees: int
    built_at: float


@dataclass(frozen=True)
class CrawlReport:
    stats: CrawlSummary
    index: IndexInfo | None  # None: nothing embedded yet
    rebuilt: bool
    placed: int = 0  # photos whose place was looked up from their GPS position
    texts: TextReport | None = None  # the words read in photos; None: not read (setting read_text)


@dataclass
class TextReport:
    """The pass that reads the words in photos: how many it read, how many held words, of how
    many it had to read, in how long."""

    read: int
    with_words: int
    total: int
    seconds: float = 0.0
    problem: str | None = None  # why the words could not be read at all (a package missing)


@dataclass
class Recovery:
    """What recovering a damaged catalog brought over."""

    model: str | None = None
    dim: int | None = None
    roots: int = 0
    files: int = 0
    with_vector: int = 0  # live photos that keep their vectors
    vectors_dropped: int = 0  # rows kept, vector unusable: embedded again by the next crawl
    unreadable: int = 0  # rows known to have been there that could not be read
    problems: list[str] = field(default_factory=list)


@dataclass
class RepairReport:
    problems: list[str]  # what the integrity check found ([] for a sound catalog)
    kept: Path | None  # where the damaged catalog was set aside
    recovery: Recovery | None  # what was brought over from it
    photos_before: int | None  # searchable photos the old index held, if it could be read
    index: IndexInfo | None
    rebuilt: bool


@dataclass(frozen=True)
class DaemonState:
    """What a running watch daemon last said of itself."""

    pid: int
    state: str
    started_at: float
    backlog: int
    offline: list[str]
    polled: list[str]
    error: str | None
    indexed: int
    deleted: int


@dataclass(frozen=True)
class RootInfo:
    path: str
    online: bool
    offline_since: float | None
    photos: int  # searchable now
    offline_photos: int  # kept while the folder is away
    exclude: tuple[str, ...]
    extensions: tuple[str, ...]
    include_hidden: bool
    follow_symlinks: bool
    crawled_at: float | None


@dataclass(frozen=True)
class LibraryStatus:
    home: Path
    model: str | None
    dim: int | None
    roots: list[RootInfo]
    counts: dict[str, int]
    index: IndexInfo | None
    pending: int  # rows written since the forest was built (scored exactly until the next build)
    catalog_bytes: int
    index_problem: str | None = None  # why the forest is not used, if it is not
    daemon: DaemonState | None = None  # the watch daemon, if it runs
    missing: list[MissingReader] = field(default_factory=list)  # formats this install cannot read
    places: tuple[int, int] = (0, 0)  # photos with a place, with a GPS position
    texts: tuple[int, int, int] = (0, 0, 0)  # photos whose words were read, of them with words, to read
    read_text: bool = True  # the setting: words are read after crawls


@dataclass(frozen=True)
class MissingReader:
    """Photos of a format whose package is not installed: recorded as failed until it is."""

    kind: str  # "HEIC", "AVIF", "camera RAW"
    why: str  # "pi-heif is not installed (pip install pi-heif)"
    files: int

    def line(self) -> str:
        return (f"{self.files} {self.kind} file{'s' if self.files != 1 else ''} not read: {self.why}; "
                "then `clipsearch crawl --retry-failed`")


@dataclass
class ImportReport:
    source: str
    model: str
    rows: int  # in the file
    added: int = 0
    replaced: int = 0  # rows the catalog had without a usable vector (or any, with overwrite)
    kept: int = 0  # photos already embedded, left as they were
    remote: int = 0  # of those written, photos not on this computer
    not_finite: int = 0  # refused: NaN, infinite or all-zero vectors
    duplicates: int = 0  # refused: a path seen earlier in the file
    no_path: int = 0  # refused: an empty path, or one that is not valid text
    model_assumed: bool = False  # the file does not say its model; the library's was taken
    index: IndexInfo | None = None
    rebuilt: bool = False

    @property
    def refused(self) -> int:
        return self.not_finite + self.duplicates + self.no_path


@dataclass(frozen=True)
class ExportReport:
    count: int
    dim: int
    model: str
    files: list[Path]


@dataclass(frozen=True)
class FailedFile:
    """A file that could not be indexed, and why."""

    path: str
    error: str


@dataclass(frozen=True)
class Overview:
    photos: int  # searchable
    folders: int
    model: str | None
    places: int = 0  # photos with a place (from their GPS position)
    worded: int = 0  # photos with words read in them

