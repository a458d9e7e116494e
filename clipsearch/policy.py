"""The model policy: which model a library's vectors are of, and the one embedder of it.

A library keeps the model its photos were embedded with: the model setting (config.toml,
CLIPSEARCH_MODEL, a preset) only chooses the model of a new library, and a model asked for
explicitly (`--model`, `crawl --preset`, an injected embedder) that differs is refused.
The embedder is made here and loaded on first use, so commands with nothing to embed stay
fast; the watch daemon releases it when idle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import PRESETS, Settings
from .errors import ModelChanged, ModelMismatch
from .model import identity
from .model import spec as spec_mod
from .notices import Notices

if TYPE_CHECKING:
    from .catalog.store import Store
    from .model.spec import Embedder


class ModelPolicy:
    """One library's model rules. `embedder` (tests, tools) is used instead of loading one."""

    def __init__(self, settings: Settings, notices: Notices, embedder: Embedder | None = None):
        self.settings = settings
        self.notices = notices
        self._embedder = embedder

    def spec_for(self, store: Store | None, asked: str | None = None) -> str:
        """The model spec to use with this catalog (None: no catalog yet). Raises
        ModelMismatch if `asked` (or the injected embedder) is not the library's model."""
        # The recorded model binds once a vector exists (the dimension is written with the
        # first one): a model that failed to load before embedding anything binds nothing.
        current = store.get_meta("model") if store and store.get_meta("dim") else None
        asked = asked or (self._embedder.spec if self._embedder else None)
        wanted = spec_mod.canonical(asked) if asked else None
        if current and wanted and wanted != current:
            raise ModelMismatch(current, wanted, asked or wanted)
        if current:
            self.check(store, current)  # type: ignore[arg-type]
        if current and not asked and self.preset_model() not in (None, current):
            self.notices.say(f"preset {self.settings.preset} names model {self.preset_model()}, but this library's "
                             f"photos were embedded with {current}, which answers; its search settings apply "
                             f"(`clipsearch reembed --model {self.settings.model}` switches the library)")
        return current or wanted or spec_mod.canonical(self.settings.model or "default")

    def preset_model(self) -> str | None:
        """The model the settings' preset names (canonical), if the model setting is the preset's."""
        preset = PRESETS.get(self.settings.preset or "")
        if preset is None or self.settings.model != preset.values["model"]:
            return None
        return spec_mod.canonical(preset.values["model"])

    def embedder(self, spec: str) -> Embedder:
        """The model for spec; loaded on first use."""
        from .model.embed import LazyEmbedder

        if self._embedder is None or self._embedder.spec != spec or getattr(self._embedder, "failed", False):
            settings = self.settings
            self._embedder = LazyEmbedder(
                spec, text_tower_dir=settings.text_tower_dir, image_tower_dir=settings.image_tower_dir,
                image_precision=settings.image_precision, device=settings.device,
                batch_size=settings.batch_size, cache_dir=settings.model_cache, notify=self.notices.say)
        return self._embedder

    def fingerprint(self, spec: str) -> str:
        """The fingerprint of the weights spec names now (model/identity.py)."""
        return identity.fingerprint(spec, self.settings.model_cache)

    def check(self, store: Store, spec: str) -> None:
        """Raise ModelChanged if the weights behind spec are not the ones the catalog's vectors
        were made with. The one place the library's model identity is compared."""
        recorded = store.get_meta("model_weights")
        if recorded in (None, identity.UNRECORDED):
            return  # made before fingerprints: the next writer records them (adopt)
        now = self.fingerprint(spec)
        if now != recorded:
            raise ModelChanged(spec, recorded or "(none)", now or "(none)", identity.describe(spec))

    def bind(self, store: Store, embedder: Embedder) -> None:
        """Record embedder's model and its weights as the library's where it has none yet (it
        binds once the first vector, and the dimension with it, is written); record the
        weights of a library made before fingerprints."""
        if store.get_meta("dim") is None:
            store.set_meta("model", embedder.spec)
            self.record(store, embedder.spec)
        elif store.get_meta("model_weights") in (None, identity.UNRECORDED):
            self.record(store, embedder.spec)

    def identity(self, store: Store) -> str:
        """The library's model and the fingerprint of its vectors' weights, as one string: what
        a head trained on the library's vectors (`clipsearch tune`) is keyed to."""
        return f"{self.spec_for(store)} {store.get_meta('model_weights') or identity.UNRECORDED}"

    def record(self, store: Store, spec: str) -> None:
        """Record the weights spec names now as those of the catalog's vectors."""
        store.set_meta("model_weights", self.fingerprint(spec))

    @property
    def held_spec(self) -> str | None:
        """The spec of the embedder held now, if any."""
        return self._embedder.spec if self._embedder is not None else None

    @property
    def loaded(self) -> bool:
        """Whether a model is held in memory now."""
        return bool(getattr(self._embedder, "loaded", self._embedder is not None))

    def release(self) -> bool:
        """Forget the loaded model (the watch daemon, idle for a while); True if one was held.
        An injected embedder is kept."""
        from .model.embed import LazyEmbedder

        if isinstance(self._embedder, LazyEmbedder):
            self._embedder = None
            from ._memory import return_freed_memory

            return_freed_memory()
            return True
        return False
