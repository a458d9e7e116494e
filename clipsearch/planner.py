"""The query planner: a Query becomes a Plan, and a Plan becomes results.

    Query (query.py) + k, page, example photo, exact? ──► Plan
    Plan ──► query vector (texts and images in one model call each; weights; TTA)
         ──► candidates: the newest photos that pass the filters (no vector), or the forest
             and the rows written since its build, or every photo scored exactly (search.py)
         ──► qe: the query averaged with its best results, searched again (rerank.expand)
         ──► the best POOL re-ordered: by the tuned head's space (image queries; head.py),
             then by k-reciprocal neighbourhoods (rerank:on; rerank.k_reciprocal)
         ──► stages, in order (each may ask for more candidates than k): own-image
             exclusion, the min: floor, not: terms
         ──► the page (offset, k) ──► sort: ──► SearchResults

`search`, `search_many` (batches: their texts in one model call, their images in another,
and with exact_search every photo scored once for all of them), the prompt, the web page
and `clipsearch batch` all go through here.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from .config import Settings
from .errors import BadArgument, ClipsearchError, NotFound, NothingToSearch, NotIndexed
from .keeper import ForestKeeper
from .notices import Notices
from .paths import PathRule, absolute
from .policy import ModelPolicy
from .query import Crop, Query, Term
from .records import BatchAnswer, BatchQuery, SearchResult
from .search import candidates, exact_many, results_for

if TYPE_CHECKING:
    from .catalog.store import Store
    from .head import Head
    from .model.spec import Embedder
    from .model.texttower import Scoring

# A sigmoid model's match probability below which its best result is "nothing close". Real
# captions of a photo score 0.2-0.4 with SigLIP (open_clip#716, big_vision#180), unrelated
# ones 1e-4 and below: 1% lies between, with room on both sides.
MATCH_FLOOR = 0.01
# not:TERM on a softmax model whose relevance floor cannot be measured (under 20 photos).
NOT_FLOOR = 0.25
# What a photo whose words read in it hold all the rare words of a query gains (cosine): more
# than the spread of a CLIP model's scores for a subject (0.1-0.15), so the sign that says
# BAKERY comes before photos of bakeries.
WORD_BOOST = 0.15

HEAD_FILE = "head.npz"  # `clipsearch tune`'s head, in the library's home

# Candidates re-ordered by re-ranking or the tuned head: k-reciprocal neighbourhoods (k1 = 20)
# need several times k1 of them; 100 cost 2-7 ms (docs/benchmarks.md). Scores stay the model's
# cosines: only the order changes.
POOL = 100
QE_TOP = 5  # results averaged into the query (rerank.expand: alpha = 3)

# An image sent to search with (the web page): photo formats only, at most 50 MP, and one
# large decode at a time (a 14000 x 14000 PNG of a few hundred KB would hold 1.7 GB).
UPLOAD_PIXELS = 50_000_000
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

# Varied everyday subjects; the relevance floor is measured against them (relevance_floor).
_CALIBRATION_CAPTIONS = (
    "a dog", "a cat", "a horse", "a bird", "a fish", "a car", "a bicycle", "a train", "an airplane", "a boat",
    "a city street at night", "a mountain landscape", "a beach with waves", "a forest", "a desert", "snow",
    "a plate of food", "a cake", "a cup of coffee", "fruit", "a bowl of soup", "a group of people", "a baby",
    "an old man", "a wedding", "a football match", "a concert", "a computer", "a book", "a chair", "a bed",
    "a kitchen", "a bathroom", "a flower", "a tree", "a sunset", "a bridge", "a church", "a skyscraper",
    "a painting", "a toy", "a clock", "a document with text", "a screenshot", "a map", "fireworks",
    "a swimming pool", "a garden", "a farm", "an insect")


@functools.cache
def _upload_budget():
    """One budget for every image sent, in every thread (made when first needed: the
    decoder's import is not paid by commands that never decode)."""
    from .ingest.decode import MemoryBudget

    return MemoryBudget(256 << 20)


# --- plans and stages -------------------------------------------------------------------------
@dataclass
class Hits:
    """Candidates, best first: catalog ids and their scores (cosine similarity)."""

    ids: np.ndarray
    scores: np.ndarray

    def keep(self, mask: np.ndarray) -> Hits:
        return Hits(self.ids[mask], self.scores[mask])


class Stage(Protocol):
    """A step after retrieval. `extra`: candidates it needs beyond the k it is to leave."""

    @property
    def extra(self) -> int: ...

    def apply(self, hits: Hits, store: Store) -> Hits: ...


@dataclass(frozen=True)
class ExcludePaths:
    """Never return these photos (an image query's own file), compared by the path rule."""

    keys: frozenset[str]
    rule: PathRule

    @property
    def extra(self) -> int:
        return len(self.keys)

    def apply(self, hits: Hits, store: Store) -> Hits:
        rows = store.rows(hits.ids.tolist())
        own = np.fromiter((i in rows and self.rule.key(rows[i].path) in self.keys for i in hits.ids.tolist()),
                          dtype=bool, count=len(hits.ids))
        return hits.keep(~own)


@dataclass(frozen=True)
class Floor:
    """Leave out candidates scoring below `score` (min:, --min-score)."""

    score: float
    extra: int = 0

    def apply(self, hits: Hits, store: Store) -> Hits:
        return hits.keep(hits.scores >= self.score)


@dataclass(frozen=True)
class Exclude:
    """not:TERM: leave out candidates that match one of the terms: whose cosine with the
    term's vector reaches its floor (the score a real match of the model scores above), or
    whose words read in the photo hold the term's words."""

    texts: tuple[str, ...]
    vectors: np.ndarray  # the terms' vectors, one a row
    floors: np.ndarray  # the cosine at which each matches
    dim: int
    extra: int

    def apply(self, hits: Hits, store: Store) -> Hits:
        from .records import Filters

        ids, vectors = store.vectors(hits.ids.tolist(), self.dim)
        if not len(ids):
            return hits
        matched = set(ids[(vectors @ self.vectors.T >= self.floors).any(axis=1)].tolist())
        for text in self.texts:
            matched |= store.passing(ids.tolist(), Filters(words=(text,)))
        return hits.keep(np.fromiter((i not in matched for i in hits.ids.tolist()), dtype=bool, count=len(hits.ids)))


@dataclass(frozen=True)
class Plan:
    """What one search will do: the query, the page, the photo it is like, how it retrieves,
    and the stages after retrieval."""

    query: Query
    k: int
    offset: int = 0
    like: int | None = None  # the id of a library photo whose vector joins the query's
    image_data: bytes | None = None  # an image sent (a web page's drop), weight 1
    exact: bool = False  # every photo scored, not the index
    stages: tuple[Stage, ...] = field(default_factory=tuple)
    vector: np.ndarray | None = field(default=None, compare=False)  # a query vector given as it is
    tta: bool = False  # image queries also read mirrored
    qe: bool = False
    rerank: bool = False
    tuned: bool | None = None  # None: the head's own verdict (tuned = "auto")

    @property
    def listing(self) -> bool:
        """Only filters: the newest photos that pass them, unscored."""
        return not self.query.terms and self.like is None and self.image_data is None and self.vector is None

    @property
    def want(self) -> int:
        """Candidates to retrieve: the page and what comes before it, and the stages' extra;
        at least the POOL that re-ranking re-orders."""
        want = self.offset + self.k + sum(stage.extra for stage in self.stages)
        return max(want, POOL) if self.rerank or self.tuned else want


class Planner:
    """Answers Plans against a catalog, with the library's model and forest."""

    def __init__(self, settings: Settings, policy: ModelPolicy, keeper: ForestKeeper, notices: Notices):
        self.settings = settings
        self.policy = policy
        self.keeper = keeper
        self.notices = notices
        self.rule = PathRule.for_setting(settings.path_case)
        self._relevance: tuple[str, float] | None = None  # (model, floor), measured once
        self._head: tuple[int, Head] | None = None  # (file's mtime, head) read once

    # --- planning -------------------------------------------------------------------------
    def plan(self, query: Query, k: int, *, offset: int = 0, like: int | None = None,
             image_data: bytes | None = None, exact: bool = False, vector: np.ndarray | None = None) -> Plan:
        """The Plan of a search; raises NothingToSearch or BadArgument for one that cannot run.
        `vector`: a query vector of the library's model, searched as it is (with the query's
        filters and stages)."""
        if query.is_empty and like is None and image_data is None and vector is None:
            raise NothingToSearch()
        if k < 1:
            raise BadArgument("k", k, "must be at least 1")
        if query.filters.folders and not self.rule.case_sensitive:
            query = dataclasses.replace(query, filters=dataclasses.replace(query.filters, fold_case=True))
        stages: list[Stage] = [Floor(query.min_score)] if query.min_score is not None else []
        chosen = {"on": True, "off": False}.get(self.settings.tuned)
        return Plan(query, k, offset, like, image_data, exact or self.settings.exact_search, tuple(stages), vector,
                    tta=self.settings.tta == "flip" if query.tta is None else query.tta,
                    qe=self.settings.qe if query.qe is None else query.qe,
                    rerank=self.settings.rerank if query.rerank is None else query.rerank,
                    tuned=chosen if query.tuned is None else query.tuned)

    def resolve(self, store: Store, plan: Plan, spec: str, dim: int) -> Plan:
        """What needs the catalog and the model: plain words that name a place where photos of
        the library were taken become a place filter ("beach portugal"), and not: terms a
        stage that leaves out their matches. What the words were read as is told."""
        query = plan.query
        readings = list(query.readings)
        if any(t.text is not None and t.weight > 0 and t.marked for t in query.terms):
            query, places = self._read_places(store, query)
            readings.extend(places)
        stages = list(plan.stages)
        tuned = self._tuned(store, plan) if plan.tuned is not False else False
        if tuned and plan.tuned is None:  # chosen by the library, not asked for: say so
            self.notices.say("image queries rank with the head `clipsearch tune` trained (tuned:off to compare)")
        if query.excluded:
            stages.append(self._exclusion(store, spec, dim, query.excluded, plan.offset + plan.k))
        if readings:
            shown = " ".join(str(query).split()) if query.terms else "(no words: the newest photos that match)"
            self.notices.tell(f"read as: {' · '.join([shown, *readings])}")
        return dataclasses.replace(plan, query=query, stages=tuple(stages), tuned=tuned)

    def _tuned(self, store: Store, plan: Plan) -> bool:
        """Whether this plan ranks in the tuned head's space: image queries, where the library
        has a head for its model, and tuned:on asks or the head beat the plain vectors."""
        if _words_only(plan) or plan.listing:
            return False
        head = self.head(store)
        if head is None:
            if plan.tuned:
                raise ClipsearchError("tuned:on: this library has no tuned head for its model: "
                                      "`clipsearch tune FOLDER` trains one")
            return False
        return bool(plan.tuned) or (head.holdout_map or 0.0) > (head.plain_map or 0.0)

    def head(self, store: Store) -> Head | None:
        """The tuned head saved with the library, if it was trained for the library's model."""
        from .head import Head

        path = self.settings.home / HEAD_FILE
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return None
        if self._head is None or self._head[0] != stamp:
            try:
                self._head = (stamp, Head.load(path))
            except ValueError as exc:
                self.notices.tell(f"the tuned head is left out: {exc}")
                return None
        head = self._head[1]
        return head if head.model == self.policy.identity(store) else None

    def _read_places(self, store: Store, query: Query) -> tuple[Query, list[str]]:
        names = store.place_names()
        if not names:
            return query, []
        from .places import PlaceNames, filter_name

        reader = PlaceNames((city, region, country) for city, _, region, country, _ in names)
        codes = {name: code for city, _, region, country, code in names for name in (city, region, country) if name}
        terms, places, readings = [], list(query.filters.places), []
        for term in query.terms:
            if term.text is None or term.weight < 0 or term.marked is None:
                terms.append(term)
                continue
            rest, found = reader.read(term.marked)
            if not found:
                terms.append(term)
                continue
            for match in found:
                places.append(filter_name(match.name))
                readings.append(f"place: {match.name}" + (f", {codes[match.name]}" if codes.get(match.name) else ""))
            text = " ".join(rest.replace('"', " ").split())
            if text:
                terms.append(Term(term.weight, text=text, marked=rest))
        filters = dataclasses.replace(query.filters, places=tuple(dict.fromkeys(places)))
        return dataclasses.replace(query, terms=tuple(terms), filters=filters), readings

    def _exclusion(self, store: Store, spec: str, dim: int, texts: Sequence[str], page: int) -> Exclude:
        embedder = self.policy.embedder(spec)
        vectors = np.asarray(embedder.embed_texts(list(texts)), dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        scoring = getattr(embedder, "scoring", None)
        if scoring is not None and scoring.sigmoid:  # the cosine whose probability is MATCH_FLOOR
            floor = (float(np.log(MATCH_FLOOR / (1 - MATCH_FLOOR))) - (scoring.bias or 0.0)) / scoring.scale
        else:
            floor = self.known_floor(spec) or self.relevance_floor(store, spec) or NOT_FLOOR
        return Exclude(tuple(texts), vectors, np.full(len(vectors), floor, dtype=np.float32), dim, max(50, 2 * page))

    # --- answering ------------------------------------------------------------------------
    def search(self, store: Store, plan: Plan) -> list[SearchResult]:
        """The results of one plan: ranks offset+1 .. offset+k, then sorted as `sort:` asks."""
        spec, dim = self.searchable(store)
        plan = self.resolve(store, plan, spec, dim)
        if plan.listing and plan.stages:  # not:TERM alone: the newest photos that do not match it
            ids = store.newest(plan.query.filters, plan.want, 0)
            hits = Hits(np.array(ids, dtype=np.int64), np.zeros(len(ids), dtype=np.float32))
            for stage in plan.stages:
                hits = stage.apply(hits, store)
            page = hits.ids[plan.offset:plan.offset + plan.k]
            results = results_for(store, page, [None] * len(page), first_rank=plan.offset + 1)
        elif plan.listing:
            ids = store.newest(plan.query.filters, plan.k, plan.offset)
            results = results_for(store, ids, [None] * len(ids), first_rank=plan.offset + 1)
        else:
            vector = (_unit([np.asarray(plan.vector, dtype=np.float32)], plan.query) if plan.vector is not None
                      else self.vector(store, spec, dim, plan.query, plan.like, plan.image_data, plan.tta))
            hits = self._refine(store, plan, vector, dim, self._retrieve(store, plan, vector, dim))
            results = self._ranked(store, plan, hits, self._scoring(spec, plan))
        self.offline_notice(store)
        return _sorted(results, plan.query.sort)

    def search_many(self, store: Store, queries: Sequence[BatchQuery], k: int,
                    min_score: float | None = None) -> list[BatchAnswer]:
        """Answers for many queries at once. A query that fails gets its error and the others
        go on. An image query never finds its own file. References scoring below min_score
        (or the query's `min:`) are left out."""
        if k < 1:
            raise BadArgument("k", k, "must be at least 1")
        answers = [BatchAnswer([]) for _ in queries]
        spec, dim = self.searchable(store)
        plans: dict[int, Plan] = {}
        for number, item in enumerate(queries):
            try:
                plans[number] = self.resolve(store, self._batch_plan(item, k, min_score), spec, dim)
            except ClipsearchError as exc:
                answers[number].error = str(exc)
        vectors = self._batch_vectors(spec, {n: p.query for n, p in plans.items()}, answers,
                                      {n: p.tta for n, p in plans.items()})
        # One pass over the catalog scores every unfiltered query of an exact batch.
        together = [n for n in vectors if plans[n].exact and not plans[n].query.filters]
        candidates: dict[int, Hits] = {}
        if together:
            for n, (ids, scores) in zip(together, exact_many(
                    store.iter_live_vectors(dim), np.stack([vectors[n] for n in together]),
                    max(plans[n].want for n in together))):
                candidates[n] = Hits(ids[:plans[n].want], scores[:plans[n].want])
        for n, vector in vectors.items():
            if n not in candidates:
                candidates[n] = self._retrieve(store, plans[n], vector, dim)
            candidates[n] = self._refine(store, plans[n], vector, dim, candidates[n])
            answers[n].results = self._ranked(store, plans[n], candidates[n], self._scoring(spec, plans[n]))
        self.offline_notice(store)
        return answers

    def _batch_plan(self, item: BatchQuery, k: int, min_score: float | None) -> Plan:
        if item.text and item.text.strip():
            from .query import parse

            query = parse(item.text, files=False)
            if not query.terms:
                raise ClipsearchError("the description has filters but nothing to search for")
        elif item.image is None:
            raise ClipsearchError("no description, and image_path names no image")
        else:
            query = Query(terms=(Term(1.0, image=item.image),))
        plan = self.plan(query, k)
        floor = max((f for f in (min_score, query.min_score) if f is not None), default=None)
        stages: list[Stage] = []
        if item.image is not None:
            stages.append(ExcludePaths(frozenset([self.rule.key(absolute(item.image))]), self.rule))
        if floor is not None:
            stages.append(Floor(floor))
        return dataclasses.replace(plan, stages=tuple(stages))

    def _retrieve(self, store: Store, plan: Plan, vector: np.ndarray, dim: int) -> Hits:
        """The best `plan.want` candidates for vector among the photos that pass the filters;
        for a query of words, photos whose words read hold its rare words joined and raised."""
        forest = None if plan.exact else self.keeper.current(store)
        hits = Hits(*candidates(store, forest, vector, plan.want, dim, exact=plan.exact,
                                filters=plan.query.filters))
        return self._with_words(store, plan, vector, dim, hits) if _words_only(plan) else hits

    def _refine(self, store: Store, plan: Plan, vector: np.ndarray, dim: int, hits: Hits) -> Hits:
        """The candidates after query expansion (searched again), the tuned head and re-ranking
        (the best POOL re-ordered; their scores stay the model's cosines)."""
        if plan.qe and len(hits.ids):
            from .rerank import expand

            _, top = store.vectors(hits.ids[:QE_TOP].tolist(), dim)
            vector = expand(vector, top)
            hits = self._retrieve(store, plan, vector, dim)
        if not (plan.tuned or plan.rerank) or len(hits.ids) < 2:
            return hits
        ids, vectors = store.vectors(hits.ids[:POOL].tolist(), dim)
        query = vector
        if plan.tuned:
            head = self.head(store)
            if head is not None:
                query, vectors = head.apply(vector[None, :])[0], head.apply(vectors)
        if plan.rerank:
            from .rerank import k_reciprocal

            order = np.argsort(-k_reciprocal(query, vectors), kind="stable")
        else:
            order = np.argsort(-(vectors @ query), kind="stable")
        cosine = dict(zip(hits.ids.tolist(), hits.scores.tolist()))
        rest = hits.ids[POOL:]
        ranked = np.concatenate([ids[order], rest])
        return Hits(ranked, np.array([cosine[i] for i in ranked.tolist()], dtype=np.float32))

    def _with_words(self, store: Store, plan: Plan, vector: np.ndarray, dim: int, hits: Hits) -> Hits:
        """hits, with the photos whose words read in them hold the query's rare words (a word
        in few of the photos with words) scored WORD_BOOST higher for all of them, a share of
        it for some: "bakery" finds the sign that says BAKERY above photos of bread."""
        words = _rare_words(store, plan.query)
        if not words:
            return hits
        found = dict(store.word_hits(words, plan.want))
        if plan.query.filters and found:
            passing = store.passing(list(found), plan.query.filters)
            found = {i: n for i, n in found.items() if i in passing}
        if not found:
            return hits
        ids, vectors = store.vectors(list(found), dim)
        scores = dict(zip(hits.ids.tolist(), hits.scores.tolist()))
        for file_id, cosine in zip(ids.tolist(), (vectors @ vector).tolist()):
            scores[file_id] = cosine + WORD_BOOST * found[file_id] / len(words)
        order = sorted(scores, key=scores.__getitem__, reverse=True)[:plan.want]
        return Hits(np.array(order, dtype=np.int64), np.array([scores[i] for i in order], dtype=np.float32))

    def _ranked(self, store: Store, plan: Plan, hits: Hits, scoring: Scoring | None = None) -> list[SearchResult]:
        if scoring is not None:  # a sigmoid model's text query: scores are match probabilities
            hits = Hits(hits.ids, scoring.probability(hits.scores))
        for stage in plan.stages:
            hits = stage.apply(hits, store)
        page = slice(plan.offset, plan.offset + plan.k)
        return results_for(store, hits.ids[page], hits.scores[page], first_rank=plan.offset + 1)

    def _scoring(self, spec: str, plan: Plan) -> Scoring | None:
        """The model's scoring where a plan's scores are its match probabilities: a sigmoid
        model (SigLIP), a query of words alone. Image queries keep cosines: the model's
        probability is of a photo and a caption matching, not of two photos."""
        if not _words_only(plan):
            return None
        scoring = getattr(self.policy.embedder(spec), "scoring", None)
        return scoring if scoring is not None and scoring.sigmoid else None

    def judge(self, store: Store, plan: Plan, results: Sequence[SearchResult]) -> float | None:
        """The score the best of a text query's results falls short of, if it is no real
        match ("nothing close"); None if it is one, or if that cannot be known. A sigmoid
        model's results are match probabilities, judged against MATCH_FLOOR; a softmax
        model's against the floor measured on the library (relevance_floor). Not judged:
        later pages, image queries, and a query that sets its own min:."""
        best = max((r.score for r in results if r.score is not None), default=None)
        if best is None or plan.offset or plan.query.min_score is not None or not _words_only(plan):
            return None
        spec = self.policy.spec_for(store)
        if self._scoring(spec, plan) is not None:
            floor: float | None = MATCH_FLOOR
        else:
            floor = self.known_floor(spec)
            if floor is None:
                floor = self.relevance_floor(store, spec)
        return floor if floor is not None and best < floor else None

    def searchable(self, store: Store) -> tuple[str, int]:
        """(model spec, vector length) of a library that has vectors to search, else NotIndexed."""
        spec = self.policy.spec_for(store)
        dim = int(store.get_meta("dim") or 0)
        if not dim:
            raise NotIndexed(None, "vectors")
        return spec, dim

    def offline_notice(self, store: Store) -> None:
        offline = [r.path for r in store.roots() if r.offline_since is not None]
        if offline:
            self.notices.say(f"{store.offline_count()} photos in offline folders ({', '.join(offline)}) are left "
                             "out until the folders are back")

    # --- query vectors --------------------------------------------------------------------
    def vector(self, store: Store, spec: str, dim: int, query: Query, like: int | None,
               image_data: bytes | None = None, tta: bool = False) -> np.ndarray:
        """The weighted sum of the query's parts' vectors, L2-normalised. Texts go to the model
        in one call; images (files, or bytes sent, weight 1) are decoded with the crawl's guards."""
        parts: list[np.ndarray] = []
        texts = [t for t in query.terms if t.text is not None]
        images: list[tuple[float, str | bytes, Crop | None]] = [
            (t.weight, t.image, t.crop) for t in query.terms if t.image is not None]
        if image_data is not None:
            images.append((1.0, image_data, None))
        if texts or images:
            embedder = self.policy.embedder(spec)
            if texts:
                vectors = embedder.embed_texts([t.text for t in texts if t.text is not None])
                parts.extend(t.weight * v for t, v in zip(texts, vectors))
            if images:
                pixels = [self._query_pixels(embedder, source, crop) for _, source, crop in images]
                vectors = self._image_vectors(embedder, pixels, tta)
                parts.extend(weight * v for (weight, _, _), v in zip(images, vectors))
        if like is not None:
            ids, vectors = store.vectors([like], dim)
            if not len(ids):
                raise NotFound("that photo is no longer in the library")
            parts.append(vectors[0])
        return _unit(parts, query)

    def _batch_vectors(self, spec: str, queries: dict[int, Query], answers: list[BatchAnswer],
                       tta: dict[int, bool]) -> dict[int, np.ndarray]:
        """The query vector of each query (by number): texts in one model call, images in
        another (and their mirror images in a third where a query asks for TTA); a query whose
        image cannot be read gets its error instead."""
        if not queries:
            return {}
        embedder = self.policy.embedder(spec)
        texts = list(dict.fromkeys(t.text for q in queries.values() for t in q.terms if t.text is not None))
        text_vectors = dict(zip(texts, embedder.embed_texts(texts))) if texts else {}
        pixels: dict[tuple[str, Crop | None], np.ndarray] = {}
        usable = dict(queries)
        for n, query in queries.items():
            for term in query.terms:
                if term.image is not None and (term.image, term.crop) not in pixels:
                    try:
                        pixels[term.image, term.crop] = self._query_pixels(embedder, term.image, term.crop)
                    except ClipsearchError as exc:
                        answers[n].error = str(exc)
                        del usable[n]
                        break
        plain = self._image_vectors(embedder, list(pixels.values())) if pixels else np.zeros((0, 1))
        flipped = (self._image_vectors(embedder, list(pixels.values()), flip=True)
                   if pixels and any(tta.get(n, False) for n in usable) else plain)
        vectors: dict[int, np.ndarray] = {}
        for n, query in usable.items():
            images = dict(zip(pixels, flipped if tta.get(n, False) else plain))
            try:
                vectors[n] = _unit([t.weight * (text_vectors[t.text] if t.text is not None
                                                else images[str(t.image), t.crop]) for t in query.terms],
                                   query).astype(np.float32)
            except ClipsearchError as exc:
                answers[n].error = str(exc)
        return vectors

    def _image_vectors(self, embedder: Embedder, pixels: Sequence[np.ndarray], flip: bool = False) -> np.ndarray:
        """Vectors of query images in one model call, L2-normalised; with flip (tta:on, or
        tta = "flip"), each is the mean of the image's and its mirror image's (a view from the
        other side of the street still finds the place)."""
        batch = np.stack(pixels)
        if flip:
            vectors = embedder.embed_images(np.concatenate([batch, batch[:, :, ::-1]]))
            vectors = vectors[:len(batch)] + vectors[len(batch):]
        else:
            vectors = embedder.embed_images(batch)
        vectors = np.asarray(vectors, dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def _query_pixels(self, embedder: Embedder, path: str | bytes, crop: Crop | None = None) -> np.ndarray:
        from .ingest.decode import DecodeError, load_image

        if isinstance(path, bytes):  # an image sent to a page: in memory only
            if not path:
                raise ClipsearchError("the image sent is empty")
            try:
                return load_image(io.BytesIO(path), embedder.preprocess, min(self.settings.max_pixels, UPLOAD_PIXELS),
                                  _upload_budget(), formats=UPLOAD_FORMATS)[0]
            except DecodeError as exc:
                raise ClipsearchError(f"the image sent: {exc}") from None
        if not os.path.isfile(path):
            raise NotFound(f"{path}: no such file")
        try:
            return load_image(path, embedder.preprocess, self.settings.max_pixels, crop=crop)[0]
        except DecodeError as exc:
            raise ClipsearchError(f"{path}: {exc}") from None

    # --- how good is good enough ----------------------------------------------------------
    def relevance_floor(self, store: Store, spec: str | None = None) -> float | None:
        """The score below which a text query's best result is not a real match for this model
        and library, or None if it cannot be known (too few photos, no text path).

        How: the library's own photos (a sample of up to 1,000) are scored against a fixed set
        of varied captions. For each photo its 3 best captions may describe it and are left
        out; the rest are unrelated pairs, and the floor is the 99th percentile of their scores:
        a real match scores above 99% of unrelated photo-caption pairs of this model. CLIP
        models differ widely in scale (ViT-B-32's unrelated pairs score about 0.1-0.2), which is
        why the floor is measured, not fixed."""
        try:
            spec = spec or self.policy.spec_for(store)
            if self._relevance is not None and self._relevance[0] == spec:
                return self._relevance[1]  # measured once per model (a reembed measures again)
            dim = int(store.get_meta("dim") or 0)
            ids, vectors = store.sample_vectors(dim, 1000) if dim else (None, None)
            if vectors is None or len(vectors) < 20:
                return None
            captions = self.policy.embedder(spec).embed_texts([f"a photo of {c}" for c in _CALIBRATION_CAPTIONS])
        except ClipsearchError:
            return None
        scores = np.sort(vectors @ captions.T, axis=1)[:, :-3]
        floor = float(np.percentile(scores, 99))
        self._relevance = (spec, floor)
        return floor

    def known_floor(self, spec: str | None) -> float | None:
        """The floor already measured for spec, without a catalog read (the prompt's hot path)."""
        if self._relevance is not None and self._relevance[0] == spec:
            return self._relevance[1]
        return None


def _rare_words(store: Store, query: Query) -> list[str]:
    """The words of a query's positive texts that few photos' words hold (at most 5% of the
    photos with words, or 3): the ones worth raising a photo for. Common words ("the",
    "open") and words no photo holds are left out."""
    from .words import words_of

    text = " ".join(t.text for t in query.terms if t.text is not None and t.weight > 0)
    words = [w for w in dict.fromkeys(words_of(text)) if len(w) > 1 and w not in _STOP]
    if not words:
        return []
    total, frequency = store.word_frequencies(words)
    return [w for w in words if 0 < frequency.get(w, 0) <= max(3, 0.05 * total)]


_STOP = frozenset("the a an and or of in on at to for with from by is are was be this that it its my our your "
                  "photo photos picture image".split())


def _words_only(plan: Plan) -> bool:
    """A query of words alone (no image, no photo it is like, no vector given)."""
    return (plan.vector is None and plan.like is None and plan.image_data is None and bool(plan.query.terms)
            and all(term.text is not None for term in plan.query.terms))


def _unit(parts: Sequence[np.ndarray], query: Query) -> np.ndarray:
    """The sum of a query's weighted part vectors, L2-normalised; a ClipsearchError if the
    parts cancel out."""
    vector = np.sum(parts, axis=0)
    norm = float(np.linalg.norm(vector))
    if norm < 1e-6:
        raise ClipsearchError(f"the parts of '{query}' cancel out: nothing is left to search for")
    return vector / norm


def _sorted(results: list[SearchResult], sort: str) -> list[SearchResult]:
    if sort == "score":
        return results
    return sorted(results, key=_date_key, reverse=sort == "newest")


def _date_key(result: SearchResult) -> str:
    """The date sort:date orders by: taken, else the file's date (local time, as store.py)."""
    if result.taken_at:
        return result.taken_at
    if result.mtime_ns:
        import datetime

        return datetime.datetime.fromtimestamp(result.mtime_ns / 1e9).isoformat(timespec="seconds")
    return ""
