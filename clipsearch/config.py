"""Settings: defaults < config.toml in the home < CLIPSEARCH_* environment < command-line flags.

The home folder itself comes from --home, then CLIPSEARCH_HOME, then the platform's user
data folder; it cannot be set in config.toml because config.toml lives inside it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import platformdirs

from .errors import ClipsearchError
from .filetypes import RAW_MODES, default_extensions, refused_extensions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

APP_NAME = "clipsearch"
PRECISIONS = ("fp32", "int8")  # of the CPU image tower (imagetower.MIN_COSINE)
DECODE_MODES = ("auto", "threads", "processes")  # ingest/workers.py MODES
DEFAULT_EXTENSIONS = default_extensions()  # filetypes.FORMATS: JPEG ... HEIC, AVIF, camera RAW
TTA_MODES = ("none", "flip")  # test-time augmentation of image queries (Library._image_vectors)


# The image tower's wall milliseconds per image on the build machine (2 cores, onnxruntime,
# batches of 16; `python scripts/bench.py towers`, docs/benchmarks.md): SigLIP 2 B/32 int8
# and fp32, SigLIP 2 B/16 fp32.
FAST_MS, DEFAULT_MS, ACCURATE_MS = 12.0, 36.0, 154.0


@dataclass(frozen=True)
class Preset:
    """A named bundle of settings for the whole command line: the model a new library is
    embedded with, and how searches run. `clipsearch presets` lists them."""

    name: str
    summary: str
    values: dict  # setting name -> value, as config.toml would give them
    # The image tower's time per image on a 2-core machine (onnxruntime, batches of 16; random
    # weights of the real architecture, which cost what real ones do): `scripts/bench.py towers`.
    ms_per_image: float | None = None


PRESETS = {p.name: p for p in (
    Preset("fast", "the default model with int8 weights: the quickest crawl on a CPU, vectors within a cosine "
                   "of about 0.999 of full precision; searches look at fewer candidates",
           {"model": "default", "image_precision": "int8", "search_k": 5000, "tta": "none", "exact_search": False},
           ms_per_image=FAST_MS),
    Preset("default", "SigLIP 2: finds more than the CLIP models rclip and others run, at their cost; scores "
                      "are match probabilities",
           {"model": "default", "image_precision": "fp32", "search_k": None, "tta": "none", "exact_search": False},
           ms_per_image=DEFAULT_MS),
    Preset("high_accuracy", "SigLIP 2 at patch 16: the best matches, about four times the crawl time; "
                            "searches look further and example photos are also read mirrored",
           {"model": "accurate", "image_precision": "fp32", "search_k": 60_000, "tta": "flip",
            "exact_search": False}, ms_per_image=ACCURATE_MS),
    Preset("vpr", "visual place recognition: `clipsearch batch` of example photos, where finding the "
                  "nearest photos matters more than speed (every photo scored, mirrored queries)",
           {"model": "accurate", "image_precision": "fp32", "search_k": None, "tta": "flip", "exact_search": True},
           ms_per_image=ACCURATE_MS),
)}


@dataclass
class Settings:
    """Everything a Library needs to know; built by load_settings()."""

    home: Path
    # None means: the model the catalog already uses, else the "default" preset.
    model: str | None = None
    device: str = "auto"
    # None means: chosen from the device (bigger on a GPU).
    batch_size: int | None = None
    # CPU decode workers; None means one per core.
    workers: int | None = None
    # Where they decode: "threads", "processes" (scale with cores, cost memory), or "auto":
    # processes from 4 workers up (ingest/workers.py).
    decode_in: str = "auto"
    # Decode JPEGs on the GPU (nvJPEG) when the model runs on a CUDA GPU.
    gpu_decode: bool = True
    max_pixels: int = 200_000_000
    # MB that images being decoded side by side may hold; None: sized from the number of
    # decode workers and the memory available (ingest/decode.py decode_budget).
    decode_memory_mb: int | None = None
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    exclude: tuple[str, ...] = ()
    include_hidden: bool = False
    follow_symlinks: bool = False
    # Camera RAW files: "unpaired" (those without a JPEG or HEIC of the same shot beside them:
    # a RAW+JPEG shooter's photos are not indexed twice) or "all".
    raw: str = "unpaired"
    # The CPU image tower's precision: "fp32", or "int8" (weights quantised: faster, vectors
    # within cosine 0.98-0.998 of fp32; docs/benchmarks.md).
    image_precision: str = "fp32"
    # How paths compare: "auto" (the platform's rule: Windows and macOS ignore case),
    # "sensitive" or "insensitive" (paths.py).
    path_case: str = "auto"
    # The watch daemon: seconds a new or changed file must keep its size and date before it is
    # embedded (a copy in progress is not read half-written).
    watch_debounce: float = 0.5
    model_cache: Path = field(default_factory=lambda: Path(platformdirs.user_cache_dir(APP_NAME)) / "models")
    # A named bundle of the settings above and below (PRESETS); settings given beside it win.
    preset: str | None = None
    # Candidates the index looks at per query (more: better recall, slower); None: automatic
    # (index.search_k_for).
    search_k: int | None = None
    # Score every photo exactly instead of asking the index (perfect recall; ~0.3 s at 100k).
    exact_search: bool = False
    # Image queries also read mirrored, their vectors averaged ("none" or "flip").
    tta: str = "none"
    # After retrieval (planner.py): query expansion and k-reciprocal re-ranking of the best
    # candidates. Off until `clipsearch eval` shows a gain on your photos (docs/benchmarks.md).
    qe: bool = False
    rerank: bool = False
    # Image queries ranked with the head `clipsearch tune` trained: "auto" (when its held-out
    # mAP beat the plain vectors'), "on" or "off".
    tuned: str = "auto"
    # Where a crawl decodes and embeds: "local" (this machine) or "ray" (a Ray cluster:
    # ingest/cluster.py); ray_address: the cluster's head (HOST:PORT), None: a local Ray
    # started for the crawl and stopped after it.
    engine: str = "local"
    ray_address: str | None = None
    # Read the words in photos after a crawl (ingest/ocr.py), for text: and plain queries;
    # off saves that pass's time (docs/benchmarks.md: its cost against the crawl's).
    read_text: bool = True
    # Where the preset was named ("--preset", CLIPSEARCH_PRESET or config.toml's path): a
    # preset asked for on the command line asks for its model (not a setting).
    preset_from: str | None = field(default=None, compare=False)

    @property
    def catalog_path(self) -> Path:
        return self.home / "catalog.db"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def image_tower_dir(self) -> Path:
        return self.home / ("image-tower" if self.image_precision == "fp32" else f"image-tower-{self.image_precision}")

    @property
    def text_tower_dir(self) -> Path:
        return self.home / "text-tower"

    @property
    def config_path(self) -> Path:
        return self.home / "config.toml"


def default_home() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def resolve_home(flag: str | os.PathLike | None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    raw = flag or env.get("CLIPSEARCH_HOME") or default_home()
    return Path(raw).expanduser().absolute()


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name not in ("home", "preset_from")}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a TOML or environment value into the field's type, or say which setting is wrong."""
    kind = _FIELDS[name].type
    try:
        if "tuple" in kind:
            if isinstance(value, str):
                value = [v for v in (p.strip() for p in value.split(",")) if v]
            return tuple(str(v).lower().lstrip(".") if name == "extensions" else str(v) for v in value)
        if "bool" in kind:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind.startswith("float"):
            number = float(value)
            if not number >= 0:
                raise ValueError(value)
            return number
        if "int" in kind:
            if value in (None, "", "auto"):
                return None if "None" in kind else int(value)
            number = int(value)
            if number <= 0:
                raise ValueError(value)
            return number
        if "Path" in kind:
            return Path(str(value)).expanduser()
        return None if value in (None, "") and "None" in kind else str(value)
    except (TypeError, ValueError):
        raise ClipsearchError(f"{source}: {name} = {value!r} is not a valid value") from None


def load_settings(home: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                  **flags: Any) -> Settings:
    """Build Settings for a home; flags whose value is None are treated as not given.

    Each level (config.toml, then the environment, then flags) may name a preset: its values
    take that level's place under the settings the same level gives, so `--preset fast`
    overrides config.toml's model and `--model` beside it overrides the preset's."""
    env = os.environ if env is None else env
    settings = Settings(home=resolve_home(home, env))
    levels: list[tuple[str, dict[str, Any]]] = []
    if settings.config_path.is_file():
        try:
            data = tomllib.loads(settings.config_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ClipsearchError(f"{settings.config_path}: not valid TOML ({exc})") from None
        level: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise ClipsearchError(f"{settings.config_path}: unknown setting {key!r}")
            level[name] = _coerce(name, value, str(settings.config_path))
        levels.append((str(settings.config_path), level))
    level = {}
    for name in _FIELDS:
        env_name = f"CLIPSEARCH_{name.upper()}"
        if env_name in env:
            level[name] = _coerce(name, env[env_name], env_name)
    levels.append(("CLIPSEARCH_PRESET", level))
    level = {}
    for name, value in flags.items():
        if name not in _FIELDS:
            raise TypeError(f"unknown setting {name}")
        if value is not None and value != ():
            level[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    levels.append(("--preset", level))
    values: dict[str, Any] = {}
    for source, level in levels:
        if level.get("preset") is not None:
            bundle = preset_values(level["preset"], source)
            values.update(bundle)
            values["preset_from"] = source
            level = {**level, "preset": bundle["preset"]}  # the preset's own spelling
        values.update(level)
    settings = dataclasses.replace(settings, **values)
    if settings.path_case not in ("auto", "sensitive", "insensitive"):
        raise ClipsearchError(f"path_case = {settings.path_case!r} is not one of: auto, sensitive, insensitive")
    if settings.decode_in not in DECODE_MODES:
        raise ClipsearchError(f"decode_in = {settings.decode_in!r} is not one of: {', '.join(DECODE_MODES)}")
    if settings.image_precision not in PRECISIONS:
        raise ClipsearchError(f"image_precision = {settings.image_precision!r} is not one of: {', '.join(PRECISIONS)}")
    if settings.tta not in TTA_MODES:
        raise ClipsearchError(f"tta = {settings.tta!r} is not one of: {', '.join(TTA_MODES)}")
    if settings.engine not in ("local", "ray"):
        raise ClipsearchError(f"engine = {settings.engine!r} is not one of: local, ray")
    if settings.tuned not in ("auto", "on", "off"):
        raise ClipsearchError(f"tuned = {settings.tuned!r} is not one of: auto, on, off")
    if settings.raw not in RAW_MODES:
        raise ClipsearchError(f"raw = {settings.raw!r} is not one of: {', '.join(RAW_MODES)}")
    why = refused_extensions(settings.extensions)
    if why:
        raise ClipsearchError(f"extensions: {why}")
    return settings


def preset_values(name: str, source: str = "--preset") -> dict[str, Any]:
    """The settings a preset stands for; a ClipsearchError naming the presets if it is unknown."""
    preset = PRESETS.get(name.strip().lower().replace("-", "_"))
    if preset is None:
        raise ClipsearchError(f"{source}: there is no preset {name!r}; the presets are: {', '.join(PRESETS)} "
                              "(`clipsearch presets` describes them)")
    return {"preset": preset.name, **preset.values}
