"""Words read from photos (rapidocr's PP-OCR models on ONNX Runtime), cheaply enough for a crawl.

Measured on 2 cores (bench/ocr_bench.py, REPORT.md): the text detector's cost grows with its
input's pixels (1312x736 as rapidocr resizes by default: ~660 CPU ms a photo; 640 px: ~290;
480 px: ~190), and most photos hold no text. Yet a 20 px letter at 1280 px is still found
with the photo shrunk to 384 px (7.5 px letters). So the reader:

1. detects once, on the photo shrunk to `det_side` (384 px), with looser thresholds than
   rapidocr's defaults, using the detector quantized to int8 (made once, cached: ~3x less
   CPU for the same boxes);
2. only where it found boxes, cuts them from the photo at 1280 px (VIEW_SIDE, the size
   letter heights are defined at) and recognises them: the recogniser reads 48 px high
   lines and wants the sharper pixels. `read_file` decodes a file small first, and at 1280
   only when there is something to read.

No classifier for upside-down text (photos are upright after EXIF), no 2000 px preprocess,
no vertical padding. Decisions use only the image: nothing here knows the CLIP model.
rapidocr's logger (its own coloured stderr handler) is moved under the `clipsearch` log.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from PIL import Image

from ..errors import ClipsearchError

if TYPE_CHECKING:
    from ..config import Settings

VIEW_SIDE = 1280  # the photo as the reader sees it; letter heights are measured at this size
DETECT_SIDE = 384  # the detector's view (the crawl leaves copies this size: ingest/pipeline.py)
log = logging.getLogger("clipsearch")


class ReaderMissing(ClipsearchError):
    """rapidocr (or what it needs) cannot be imported: the words pass is skipped, said once."""


@dataclass(frozen=True)
class Line:
    """One line of text read from a photo: its words, the recogniser's confidence (0-1), and
    its four corners (x, y) in the photo scaled to VIEW_SIDE on its long side."""

    text: str
    score: float
    box: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Strategy:
    """Where the reader spends its time: the detector runs once, on the photo shrunk to
    det_side on its long side; the recogniser reads the boxes cut from the photo at VIEW_SIDE.
    (A second detection at 960-1280 px on the regions found, measured as well, found no more
    words and cost 1.5-4x: bench/ocr_bench.py.)"""

    det_side: int = DETECT_SIDE
    thresh: float = 0.2  # pixel text probability; rapidocr's 0.3 misses small words
    # A box's mean probability: 0.5 (rapidocr's) passes over leaves, tiles and grain that 0.3
    # takes for words, and found the same words (docs/benchmarks.md).
    box_thresh: float = 0.5
    min_score: float = 0.6  # recogniser confidence; below it, textures read as stray letters
    min_height: float = 8.0  # px at VIEW_SIDE: smaller boxes are specks, not words
    threads: int = 1  # ONNX Runtime's threads a read; read_files reads a photo a core side by side
    int8_detector: bool = True  # the detector quantized (static, per tensor): ~3x less CPU, same words


def quiet_rapidocr() -> None:
    """rapidocr installs a coloured StreamHandler on stderr at import and stops propagation;
    route its records to our log instead, warnings and above only."""
    logger = logging.getLogger("RapidOCR")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.WARNING)


class Reader:
    """Reads the lines of text in photos; models load on first use, one reader per process.
    Thread-safe for reads (ONNX Runtime sessions are)."""

    def __init__(self, cache: Path, strategy: Strategy | None = None):
        self.strategy = strategy or Strategy()
        self.cache = cache  # where the int8 detector is kept (the model cache's ocr/)
        self._det: Any = None
        self._rec: Any = None
        self._lock = threading.Lock()

    # --- loading -------------------------------------------------------------------------------
    def _load(self) -> None:
        with self._lock:
            if self._det is not None:
                return
            try:
                from rapidocr import RapidOCR  # 0.3 s of imports (cv2, shapely, omegaconf): only when reading
                from rapidocr.ch_ppocr_det import TextDetector
                from rapidocr.ch_ppocr_rec import TextRecognizer
            except ImportError as exc:
                raise ReaderMissing(f"the words in photos are not read: rapidocr cannot be imported ({exc}); "
                                    "pip install rapidocr, then `clipsearch crawl`") from None

            quiet_rapidocr()
            threads = self.strategy.threads or min(4, os.cpu_count() or 1)
            cfg = RapidOCR(params={"Global.log_level": "warning",
                                   "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                                   "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                                   "Det.limit_type": "max"}).cfg
            quiet_rapidocr()
            for part in (cfg.Det, cfg.Rec):
                part.engine_cfg = cfg.EngineConfig[part.engine_type.value]
                part.model_root_dir = cfg.Global.model_root_dir
            cfg.Rec.font_path = None
            rec, det = TextRecognizer(cfg.Rec), TextDetector(cfg.Det)
            rec.session.session = _session(rec.session.session._model_path, threads)
            det_path = det.session.session._model_path
            if self.strategy.int8_detector:
                det_path = str(quantized_detector(Path(det_path), self.cache))
            det.session.session = _session(det_path, threads)
            self._rec, self._det = rec, det

    # --- the steps -----------------------------------------------------------------------------
    def detect(self, bgr: np.ndarray, side: int, thresh: float, box_thresh: float) -> np.ndarray:
        """Text boxes (n x 4 x 2, float32) in bgr's own coordinates, the detector run with the
        long side at `side` (never enlarged)."""
        self._load()
        det = self._det
        det.limit_side_len = min(side, max(bgr.shape[:2]))
        det.postprocess_op.thresh = thresh
        det.postprocess_op.box_thresh = box_thresh
        found = det(bgr)
        if found.boxes is None or len(found.boxes) == 0:
            return np.zeros((0, 4, 2), np.float32)
        return np.asarray(found.boxes, np.float32)

    def recognise(self, bgr: np.ndarray, boxes: np.ndarray) -> list[Line]:
        from rapidocr.ch_ppocr_rec import TextRecInput
        from rapidocr.utils.process_img import get_rotate_crop_image

        self._load()
        heights = np.minimum(np.linalg.norm(boxes[:, 0] - boxes[:, 3], axis=1),
                             np.linalg.norm(boxes[:, 1] - boxes[:, 2], axis=1))
        boxes = boxes[heights >= self.strategy.min_height]
        if len(boxes) == 0:
            return []
        crops = [get_rotate_crop_image(bgr, box.copy()) for box in boxes]
        out = self._rec(TextRecInput(img=crops))
        lines = []
        for box, text, score in zip(boxes, out.txts or (), out.scores or ()):
            text = text.strip()
            # one letter alone is what leaves and tiles read as (a stray "M", a CJK sign): no word
            if score >= self.strategy.min_score and sum(ch.isalnum() for ch in text) >= 2:
                lines.append(Line(text, float(score), tuple((float(x), float(y)) for x, y in box)))
        return lines

    # --- the strategy --------------------------------------------------------------------------
    def read(self, image: Image.Image) -> list[Line]:
        """The lines of text in image, in reading order (top to bottom, left to right)."""
        view = to_view(image)
        s = self.strategy
        return self.recognise(view, self.detect(view, s.det_side, s.thresh, s.box_thresh))

    def read_file(self, path: str, max_pixels: int, small_image: Image.Image | None = None) -> list[Line]:
        """The lines of text in a photo file: the detector looks at `small_image` (the crawl's
        copy) or at the photo decoded small (JPEG draft, a HEIC's thumbnail, a RAW's preview),
        and only where it finds words is the photo decoded at VIEW_SIDE for the recogniser.
        DecodeError for a file that cannot be read."""
        from .decode import load_thumbnail

        s = self.strategy
        small = to_view(small_image if small_image is not None else load_thumbnail(path, s.det_side, max_pixels),
                        s.det_side)
        boxes = self.detect(small, s.det_side, s.thresh, s.box_thresh)
        if len(boxes) == 0:
            return []
        view = to_view(load_thumbnail(path, VIEW_SIDE, max_pixels))
        return self.recognise(view, boxes * (max(view.shape[:2]) / max(small.shape[:2])))


def _session(model_path: str, threads: int) -> Any:
    """Our own ONNX Runtime session for one of rapidocr's models, in place of the one it made:
    rapidocr offers no way to turn off the intra-op threads' spin-waiting, which burns a core
    between the small runs of a second pass that shares the machine with a crawl."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = False  # varying input shapes: an arena grows to the largest and keeps it
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])


def quantized_detector(model: Path, cache: Path) -> Path:
    """The detector with int8 weights and activations (QDQ, one scale per tensor: the model's
    opset has no per-channel DequantizeLinear), made once and kept in cache (40 s on 2
    cores, 3.4 MB). Calibrated on pictures drawn here (words on smooth colour and noise), not
    on the user's photos, so every install makes the same file."""
    import hashlib

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:12]
    out = cache / f"{model.stem}-int8-{digest}.onnx"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    images = [_calibration_image(i) for i in range(16)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(images)

        def get_next(self) -> dict | None:
            image = next(self.batches, None)
            return None if image is None else {"x": image}

    pre = out.with_suffix(".pre.onnx")
    tmp = out.with_suffix(".tmp")
    quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    pre.unlink()
    tmp.replace(out)  # atomic: a reader never sees half a model
    return out


def _calibration_image(seed: int) -> np.ndarray:
    """A 640x384 detector input: a smooth colour field with noise, and words of 8-60 px on it."""
    from PIL import ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((640, 384), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 12 + 20 * (seed % 3), (384, 640, 3))
    img = Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)
    draw = ImageDraw.Draw(img)
    words = ["Open", "BAKERY", "station 7", "Lisboa", "exit", "2019", "Menu", "Total 12.50", "welcome", "PARK"]
    for i in range(int(rng.integers(0, 7))):
        size = int(rng.integers(10, 70))
        try:
            font: Any = ImageFont.truetype("DejaVuSans.ttf", size)
        except OSError:
            font = ImageFont.load_default(size)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.text((int(rng.integers(0, 560)), int(rng.integers(0, 340))), words[(seed + i) % len(words)],
                  font=font, fill=colour)
    x = np.asarray(img, np.float32)[:, :, ::-1] / 255.0
    return ((x - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)


def to_view(image: Image.Image, side: int = VIEW_SIDE) -> np.ndarray:
    """image as the reader sees it: RGB, `side` on its long side (never enlarged), BGR uint8
    (the order rapidocr's models were trained in)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if max(image.size) > side:
        image = image.copy()
        image.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


_readers: dict[Path, Reader] = {}
_readers_lock = threading.Lock()


def reader(cache: Path) -> Reader:
    """The process's reader (its models load once)."""
    with _readers_lock:
        if cache not in _readers:
            _readers[cache] = Reader(cache)
        return _readers[cache]


def cache_dir(settings: Settings) -> Path:
    """Where the quantized detector is kept: the model cache's ocr/ (CLIPSEARCH_OCR_CACHE:
    elsewhere, e.g. one for a whole test session)."""
    return Path(os.environ.get("CLIPSEARCH_OCR_CACHE") or settings.model_cache / "ocr")


def warm(settings: Settings) -> threading.Thread:
    """Load the reader in a thread of its own (the crawl starts it while its model loads, so
    that the words pass does not wait for it); a reader that cannot load says so when used."""
    def load() -> None:
        try:
            reader(cache_dir(settings))._load()
        except Exception as exc:  # noqa: BLE001 - the words pass meets it again and reports it
            log.debug("text reader not warmed: %s", exc)

    # Not a daemon: a process that exits while ONNX Runtime builds a session in a frozen daemon
    # thread aborts ("terminate called without an active exception", exit code 134), as a
    # crawl whose model cannot load did; the exit waits for the load instead (under 1 s once
    # the detector is quantized, about 10 s the first time).
    thread = threading.Thread(target=load, name="clipsearch-words-warm", daemon=False)
    thread.start()
    return thread


def read_files(photos: Sequence[tuple[str, str | None]], settings: Settings, spool: Path | None = None,
               stop: Callable[[], bool] | None = None) -> list[str | None]:
    """The words read in each photo (path, content hash), a line of the photo a line of text
    ("" where it holds none, or cannot be decoded: the crawl has recorded why); None for
    those not read because stop() said so. The detector looks at the small copy the crawl
    left in `spool` where there is one (no second decode), else at the photo decoded small."""
    from .decode import DecodeError

    ocr = reader(cache_dir(settings))

    def read(photo: tuple[str, str | None]) -> str | None:
        path, hash_ = photo
        if stop is not None and stop():
            return None
        small = None
        if spool is not None and hash_:
            try:
                with Image.open(spool / f"{hash_}.jpg") as copy:
                    small = copy.convert("RGB")
            except (OSError, SyntaxError, ValueError):
                small = None  # none left, or cut short: decode the photo instead
        try:
            return "\n".join(line.text for line in ocr.read_file(path, settings.max_pixels, small))
        except (DecodeError, OSError) as exc:
            log.info("no words read in %s: %s", path, exc)
            return ""

    # A photo a core: decoding, the detector and the recogniser each hold one (sessions are
    # thread-safe; one thread each spends less than one session on all cores, run after run).
    workers = min(len(photos), os.cpu_count() or 1, 4)
    if workers <= 1:
        return [read(photo) for photo in photos]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="clipsearch-words") as pool:
        return list(pool.map(read, photos))
