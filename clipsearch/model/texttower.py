"""A CLIP-family text tower in numpy: text search without torch.

The tower runs open_clip's TextTransformer from the checkpoint's own tensors, in both
places open_clip puts it: at the top of a CLIP model (`token_embedding.weight`,
`transformer.resblocks.N...`, `ln_final`, `text_projection` as a matrix) and under `text.`
in a CustomTextCLIP (SigLIP, SigLIP 2: `text_projection` a Linear with a bias). Pre-norm
residual blocks with nn.MultiheadAttention weights, optional layer scale, GELU (erf or
tanh), QuickGELU, the model's layer-norm eps, causal or bidirectional attention, pooling by
argmax, eos id, first or last token. Not covered (UnsupportedArchitecture): a class token
(CoCa), Hugging Face text towers, custom blocks: those keep the torch path.

Saved in HOME/text-tower/ (and the model cache, model/_share.py): the tower's tensors in a
safetensors file of their own, a large token table in float16 (SigLIP 2's 256,000 x 768
rows: 393 MB instead of 786 MB; cosine 0.9999999 to float32's vectors), the tokenizer's
files beside it (a hub tokenizer also compiled into arrays, bpe.py, when it gives the same
ids), and `text-tower.json` last, naming the model spec, the weights' fingerprint, the
tokenizer, and the model's logit scale and bias (a sigmoid model's scores become match
probabilities). A search memory-maps the file: only the layers and a query's few table rows
are read. Towers written by clipsearch before (format 1: one flat float32 file) still load.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import _share
from .bpe import Unsupported
from .checkpoint import UnsupportedArchitecture, count_numbered, read_safetensors, write_safetensors
from .tokenizer import CompiledTokenizer, HubTokenizer, clip_tokenizer, probe_texts

log = logging.getLogger(__name__)

FORMAT = 2  # 2: the tensors under open_clip's names in a safetensors file; 1: one flat float32 file
DESCRIPTION = "text-tower.json"
_TOGETHER = 64  # texts through the tower at once: SigLIP's 64 x 64 tokens keep activations ~50 MB


@dataclass(frozen=True)
class TextConfig:
    """What the tower needs from open_clip's model config (the rest comes from the weights)."""

    heads: int
    context_length: int
    eps: float = 1e-5
    act: str = "gelu"  # gelu | gelu_tanh | quick_gelu
    causal: bool = True
    pool: str = "argmax"  # argmax | eos | first | last
    eos_id: int = 2


@dataclass(frozen=True)
class Scoring:
    """How the model turns a cosine into its logit: `scale * cos + bias`. A sigmoid model
    (SigLIP) has a bias, and sigmoid(logit) is its match probability; a softmax model (CLIP)
    has none, and its scores stay cosines."""

    scale: float
    bias: float | None = None

    @property
    def sigmoid(self) -> bool:
        return self.bias is not None

    def probability(self, cosine: np.ndarray) -> np.ndarray:
        """sigmoid(scale * cosine + bias)."""
        logits = self.scale * np.asarray(cosine, np.float64) + (self.bias or 0.0)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def text_config(model_cfg: dict) -> TextConfig:
    """The TextConfig of an open_clip model config (model_cfg of open_clip_config.json)."""
    text = dict(model_cfg.get("text_cfg") or {})
    if text.get("hf_model_name"):
        raise UnsupportedArchitecture("a Hugging Face text tower")
    if text.get("embed_cls"):
        raise UnsupportedArchitecture("a text class token (embed_cls)")
    for flag in ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc"):
        if text.get(flag):
            raise UnsupportedArchitecture(f"text_cfg.{flag}")
    if text.get("block_type") not in (None, "default"):
        raise UnsupportedArchitecture(f"text_cfg.block_type {text['block_type']!r}")
    if model_cfg.get("quick_gelu"):
        act = "quick_gelu"
    else:
        approximate = (text.get("act_kwargs") or {}).get("approximate", "none")
        if approximate not in ("none", "tanh"):
            raise UnsupportedArchitecture(f"GELU approximation {approximate!r}")
        act = "gelu" if approximate == "none" else "gelu_tanh"
    pool = text.get("pool_type", "argmax")
    if pool not in ("argmax", "eos", "first", "last"):
        raise UnsupportedArchitecture(f"text pool_type {pool!r}")
    return TextConfig(heads=int(text.get("heads", 8)), context_length=int(text.get("context_length", 77)),
                      eps=float((text.get("norm_kwargs") or {}).get("eps", 1e-5)), act=act,
                      causal=not text.get("no_causal_mask", False), pool=pool, eos_id=int(text.get("eos_id", 2)))


def scoring_of(weights: Mapping[str, np.ndarray]) -> Scoring | None:
    """The logit scale (stored as its log, as open_clip keeps it) and bias of a checkpoint."""
    if "logit_scale" not in weights:
        return None
    scale = float(np.exp(np.asarray(weights["logit_scale"], np.float64).reshape(-1)[0]))
    bias = weights.get("logit_bias")
    return Scoring(scale, None if bias is None else float(np.asarray(bias, np.float64).reshape(-1)[0]))


class TextTower:
    """Texts -> L2-normalised vectors, the same as open_clip's encode_text."""

    def __init__(self, weights: Mapping[str, np.ndarray], config: TextConfig, tokenizer: Any = None,
                 description: dict | None = None):
        self.config = config
        self.description = description or {}
        self.spec: str = self.description.get("spec", "")
        self._tokenizer = tokenizer
        p = "text." if "text.token_embedding.weight" in weights else ""
        if p + "token_embedding.weight" not in weights:
            raise UnsupportedArchitecture("no text token embedding in the checkpoint")
        if p + "cls_emb" in weights:
            raise UnsupportedArchitecture("a text class token (embed_cls)")
        self._table = weights[p + "token_embedding.weight"]
        self._positions = np.asarray(weights[p + "positional_embedding"], np.float32)
        self._blocks = [_Block(weights, f"{p}transformer.resblocks.{i}.")
                        for i in range(count_numbered(weights, p + "transformer.resblocks."))]
        self._final = (_f32(weights[p + "ln_final.weight"]), _f32(weights[p + "ln_final.bias"]))
        proj = _maybe_f32(weights.get(p + "text_projection") if p + "text_projection" in weights else
                          weights.get(p + "text_projection.weight"))
        self._proj_bias = _maybe_f32(weights.get(p + "text_projection.bias"))
        # A Parameter projection is (width, dim) and used as x @ P; a Linear's weight is (dim, width).
        self._proj = None if proj is None else (proj if p + "text_projection" in weights else proj.T)
        width = self._table.shape[1]
        self.dim = width if self._proj is None else int(self._proj.shape[1])
        if width % config.heads:
            raise UnsupportedArchitecture(f"width {width} does not split into {config.heads} heads")
        if self._positions.shape[0] < config.context_length:
            raise UnsupportedArchitecture("fewer positions than the context length")

    @classmethod
    def load(cls, folder: str | os.PathLike, spec: str | None = None, source: str | None = None) -> TextTower | None:
        """The tower saved in `folder`, or None if there is none (or it is incomplete, or, when
        they are given, of another model spec or weights fingerprint)."""
        folder = Path(folder)
        try:
            description = json.loads((folder / DESCRIPTION).read_text(encoding="utf-8"))
            if (spec is not None and description.get("spec") != spec) or \
                    (source is not None and description.get("source") != source):
                return None
            if description.get("format") == 1:
                return _load_flat(folder, description)
            if description.get("format") != FORMAT:
                return None
            weights = read_safetensors(folder / description["file"])
            config = TextConfig(**description["text_config"])
            return cls(weights, config, _tokenizer_of(folder, description, config), description)
        except (OSError, ValueError, KeyError, TypeError, UnsupportedArchitecture):
            return None

    @property
    def scoring(self) -> Scoring | None:
        found = self.description.get("scoring")
        return Scoring(**found) if found else None

    @property
    def vocab_size(self) -> int:
        return int(self._table.shape[0])

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        if self._tokenizer is None:
            raise ValueError("this tower has no tokenizer")
        return self._tokenizer(list(texts))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, dim) float32, rows L2-normalised."""
        return self.encode(self.tokenize(texts))

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        """(N, context_length) token ids -> (N, dim) float32, rows L2-normalised. Texts go
        through _TOGETHER at a time: every layer's weights are read once for all of them
        (one CLIP text alone: ~25 ms on the build machine; in a batch: ~12 ms each)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 2:
            raise ValueError("tokens must be (texts, context_length)")
        if not len(tokens):
            return np.zeros((0, self.dim), np.float32)
        out = np.concatenate([self._together(tokens[i:i + _TOGETHER]) for i in range(0, len(tokens), _TOGETHER)])
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def _pooled_at(self, tokens: np.ndarray) -> np.ndarray:
        pool, length = self.config.pool, tokens.shape[1]
        if pool == "argmax":
            return tokens.argmax(axis=1)
        if pool == "eos":
            return (tokens == self.config.eos_id).argmax(axis=1)  # 0 where there is none, as open_clip
        return np.full(len(tokens), 0 if pool == "first" else length - 1)

    def _together(self, tokens: np.ndarray) -> np.ndarray:
        cfg = self.config
        at = self._pooled_at(tokens)
        # With causal attention nothing after a text's pooled token can reach it: the batch
        # stops at the last pooled position (CLIP: "a red car" runs 5 positions, not 77).
        length = int(at.max()) + 1 if cfg.causal else tokens.shape[1]
        tokens = tokens[:, :length]
        count, width = tokens.shape[0], self._table.shape[1]
        # Gather first, widen after: a float16 table stays on disk but for these rows.
        rows = np.asarray(self._table[tokens.reshape(-1)], dtype=np.float32).reshape(count, length, width)
        x = (rows + self._positions[:length]).reshape(count * length, width)
        mask = np.triu(np.full((length, length), -np.inf, np.float32), 1) if cfg.causal else None
        for block in self._blocks:
            x = block(x, count, length, cfg, mask)
        x = x.reshape(count, length, width)[np.arange(count), at]
        x = _layer_norm(x, *self._final, cfg.eps)
        if self._proj is not None:
            x = x @ self._proj
            if self._proj_bias is not None:
                x = x + self._proj_bias
        return x.astype(np.float32)


class _Block:
    """One ResidualAttentionBlock's weights, as views (nothing copied)."""

    def __init__(self, w: Mapping[str, np.ndarray], b: str):
        if b + "attn.in_proj_weight" not in w:
            raise UnsupportedArchitecture(f"{b}attn is not nn.MultiheadAttention with a joint in-projection")
        self.ln_1 = (_f32(w[b + "ln_1.weight"]), _f32(w[b + "ln_1.bias"]))
        self.ln_2 = (_f32(w[b + "ln_2.weight"]), _f32(w[b + "ln_2.bias"]))
        self.w_in, self.b_in = _f32(w[b + "attn.in_proj_weight"]), _f32(w[b + "attn.in_proj_bias"])
        self.w_out, self.b_out = _f32(w[b + "attn.out_proj.weight"]), _f32(w[b + "attn.out_proj.bias"])
        self.w_fc, self.b_fc = _f32(w[b + "mlp.c_fc.weight"]), _f32(w[b + "mlp.c_fc.bias"])
        self.w_proj, self.b_proj = _f32(w[b + "mlp.c_proj.weight"]), _f32(w[b + "mlp.c_proj.bias"])
        self.ls_1, self.ls_2 = _maybe_f32(w.get(b + "ls_1.gamma")), _maybe_f32(w.get(b + "ls_2.gamma"))

    def __call__(self, x: np.ndarray, count: int, length: int, cfg: TextConfig, mask: np.ndarray | None):
        width = x.shape[1]
        heads, head = cfg.heads, width // cfg.heads
        h = _layer_norm(x, *self.ln_1, cfg.eps)
        qkv = (h @ self.w_in.T + self.b_in).reshape(count, length, 3, heads, head).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (1.0 / math.sqrt(head)), qkv[1], qkv[2]
        scores = q @ k.transpose(0, 1, 3, 2)  # texts x heads x length x length
        if mask is not None:
            scores += mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        mixed = (scores @ v).transpose(0, 2, 1, 3).reshape(count * length, width)
        x = x + _scaled(mixed @ self.w_out.T + self.b_out, self.ls_1)
        h = _layer_norm(x, *self.ln_2, cfg.eps)
        h = _activation(h @ self.w_fc.T + self.b_fc, cfg.act)
        return x + _scaled(h @ self.w_proj.T + self.b_proj, self.ls_2)


# --- saving and finding towers ----------------------------------------------------------------
HALF_TABLE_BYTES = 200_000_000  # token tables larger than this in float32 are kept in float16


def text_tensors(weights: Mapping[str, np.ndarray],
                 token_dtype: type | None = None) -> tuple[dict[str, np.ndarray], dict[str, type]]:
    """The text tower's tensors of a checkpoint under their own names (as they are: views of
    the checkpoint) and the dtype each is to be saved in (write_safetensors' `dtypes`): the
    token table in token_dtype, by default float16 where it is large (SigLIP 2's 256,000 x
    768 rows: 393 MB instead of 786 MB; vectors within a cosine of 0.9999999 of float32's)
    and float32 where it is not (CLIP's 100 MB: its vectors stay exact); the rest float32."""
    p = "text." if "text.token_embedding.weight" in weights else ""
    if token_dtype is None:
        table = weights.get(p + "token_embedding.weight")
        token_dtype = np.float16 if table is not None and table.size * 4 > HALF_TABLE_BYTES else np.float32
    tower_names = re.compile(re.escape(p) + r"(token_embedding\.weight|positional_embedding|transformer\.|"
                             r"ln_final\.|text_projection)")
    out = {name: array for name, array in weights.items() if tower_names.match(name)}
    return out, {name: token_dtype if name == p + "token_embedding.weight" else np.float32 for name in out}


def save(folder: str | os.PathLike, spec: str, source: str, weights: Mapping[str, np.ndarray], model_cfg: dict,
         tokenizer_folder: str | os.PathLike | None = None) -> TextTower:
    """Write the text tower of a checkpoint into folder and make it the current one there:
    the tensors (and a hub tokenizer's files) under new names first, the description last
    (it is what `load` reads); older towers' files go. Returns the saved tower, mapped."""
    folder = Path(folder)
    config = text_config(model_cfg)
    TextTower(weights, config)  # refuse what the tower cannot run before writing anything
    tensors, dtypes = text_tensors(weights)
    folder.mkdir(parents=True, exist_ok=True)
    _share.check_room(folder, sum(t.size * np.dtype(dtypes[n]).itemsize for n, t in tensors.items()))
    stem = f"text-tower-{uuid.uuid4().hex[:12]}"
    files = [folder / f"{stem}.safetensors"]
    text = model_cfg.get("text_cfg") or {}
    tokenizer: dict[str, Any] = {"kind": "clip", "context_length": config.context_length}
    try:
        write_safetensors(files[0], tensors, dtypes=dtypes)
        if tokenizer_folder is not None:
            kwargs = dict(text.get("tokenizer_kwargs") or {})
            tokenizer = {"kind": "hub", "context_length": config.context_length, "clean": kwargs.get("clean",
                         "whitespace"), "strip_sep_token": bool(kwargs.get("strip_sep_token", False)),
                         "file": f"{stem}.tokenizer.json", "config": {}}
            files.append(folder / tokenizer["file"])
            files[-1].write_bytes((Path(tokenizer_folder) / "tokenizer.json").read_bytes())
            config_file = Path(tokenizer_folder) / "tokenizer_config.json"
            if config_file.is_file():
                tokenizer["config"] = json.loads(config_file.read_text(encoding="utf-8"))
            compiled = _compiled_tokenizer(files[-1], config.context_length, tokenizer)
            if compiled is not None:
                files.append(folder / f"{stem}.tokenizer.safetensors")
                write_safetensors(files[-1], compiled.arrays)
                tokenizer["compiled"] = {"file": files[-1].name, "description": compiled.description}
    except BaseException:
        for path in files:
            path.unlink(missing_ok=True)
        raise
    scoring = scoring_of(weights)
    description = {"format": FORMAT, "spec": spec, "source": source, "dim": TextTower(weights, config).dim,
                   "file": files[0].name, "text_config": asdict(config), "tokenizer": tokenizer,
                   "scoring": asdict(scoring) if scoring else None}
    _share.place(files, description, DESCRIPTION, folder, "text-tower-")
    tower = TextTower.load(folder, spec, source)
    if tower is None:
        raise OSError(f"the text tower written to {folder} cannot be read back")
    return tower


def _compiled_tokenizer(path: Path, context_length: int, tokenizer: dict) -> CompiledTokenizer | None:
    """The hub tokenizer at path compiled into arrays (bpe.py), if bpe covers it and gives
    `tokenizers`' ids on probe texts: many scripts, byte fallback, the added tokens, words of
    the vocabulary's own pieces. None otherwise: the tower then loads `tokenizers`."""
    reference = HubTokenizer(path, context_length, clean=tokenizer["clean"], tokenizer_config=tokenizer["config"],
                             strip_sep_token=tokenizer["strip_sep_token"])
    source = json.loads(path.read_text(encoding="utf-8"))
    vocab = list((source.get("model") or {}).get("vocab") or {})
    sample = vocab[::max(1, len(vocab) // 4000)]
    added = [t["content"] for t in source.get("added_tokens") or []]
    try:
        compiled = reference.compiled(source)
    except Unsupported as exc:
        log.info("the tokenizer of this model is loaded through `tokenizers`: %s", exc)
        return None
    del source, vocab
    if not compiled.agrees_on(reference, probe_texts(sample, added)):
        log.warning("the compiled tokenizer disagrees with `tokenizers` on a probe text; keeping `tokenizers`")
        return None
    return compiled


def in_memory(spec: str, source: str, weights: Mapping[str, np.ndarray], model_cfg: dict,
              tokenizer_folder: str | os.PathLike | None = None) -> TextTower:
    """The text tower of a checkpoint, held in memory and not saved (where it cannot be
    written: a full disk)."""
    config = text_config(model_cfg)
    tokenizer = (HubTokenizer.from_folder(tokenizer_folder, model_cfg) if tokenizer_folder is not None
                 else clip_tokenizer(config.context_length))
    scoring = scoring_of(weights)
    return TextTower(weights, config, tokenizer, {"spec": spec, "source": source,
                                                  "scoring": asdict(scoring) if scoring else None})


def share(folder: str | os.PathLike, cache: str | os.PathLike) -> None:
    """Keep a copy of the tower in folder in the machine's model cache (see _share)."""
    description = json.loads((Path(folder) / DESCRIPTION).read_text(encoding="utf-8"))
    target = _share.cache_folder(cache, "text-towers", description["spec"], description.get("source", ""))
    _share.place(_files_of(Path(folder), description), description, DESCRIPTION, target, "text-tower-")


def adopt(cache: str | os.PathLike, folder: str | os.PathLike, spec: str, source: str) -> TextTower | None:
    """The tower another library on this machine saved for this model and weights, placed
    in folder; None if there is none."""
    shared = _share.cache_folder(cache, "text-towers", spec, source)
    tower = TextTower.load(shared, spec, source)
    if tower is None:
        return None
    _share.place(_files_of(shared, tower.description), tower.description, DESCRIPTION, Path(folder), "text-tower-")
    return TextTower.load(folder, spec, source)


def _files_of(folder: Path, description: dict) -> list[Path]:
    files = [folder / description["file"]]
    tokenizer = description.get("tokenizer") or {}
    if tokenizer.get("file"):
        files.append(folder / tokenizer["file"])
    if tokenizer.get("compiled"):
        files.append(folder / tokenizer["compiled"]["file"])
    return files


def _tokenizer_of(folder: Path, description: dict, config: TextConfig):
    tokenizer = description.get("tokenizer") or {"kind": "clip"}
    if tokenizer["kind"] == "clip":
        return clip_tokenizer(config.context_length)
    if tokenizer["kind"] == "hub" and tokenizer.get("compiled"):
        compiled = tokenizer["compiled"]
        return CompiledTokenizer(compiled["description"], read_safetensors(folder / compiled["file"]))
    if tokenizer["kind"] == "hub":
        return HubTokenizer(folder / tokenizer["file"], config.context_length, clean=tokenizer.get("clean",
                            "whitespace"), tokenizer_config=tokenizer.get("config") or {},
                            strip_sep_token=bool(tokenizer.get("strip_sep_token")))
    raise ValueError(f"tokenizer {tokenizer['kind']!r}")


def _load_flat(folder: Path, description: dict) -> TextTower:
    """A tower of format 1 (clipsearch before towers were built from checkpoints): one flat
    float32 file; its names mapped back to open_clip's, its matrices transposed back (views)."""
    blob = np.memmap(folder / description["file"], dtype=np.float32, mode="r")
    if blob.size != description["floats"]:
        raise ValueError("incomplete")
    flat = {name: blob[start:start + math.prod(shape)].reshape(shape)
            for name, (start, shape) in description["tensors"].items()}
    weights: dict[str, np.ndarray] = {
        "token_embedding.weight": flat["token_embedding"], "positional_embedding": flat["positional_embedding"],
        "ln_final.weight": flat["ln_final.weight"], "ln_final.bias": flat["ln_final.bias"]}
    names = {"ln_1.weight": "ln_1.weight", "ln_1.bias": "ln_1.bias", "in.weight": "attn.in_proj_weight",
             "in.bias": "attn.in_proj_bias", "out.weight": "attn.out_proj.weight", "out.bias": "attn.out_proj.bias",
             "ln_2.weight": "ln_2.weight", "ln_2.bias": "ln_2.bias", "fc.weight": "mlp.c_fc.weight",
             "fc.bias": "mlp.c_fc.bias", "proj.weight": "mlp.c_proj.weight", "proj.bias": "mlp.c_proj.bias",
             "ls_1": "ls_1.gamma", "ls_2": "ls_2.gamma"}
    for i in range(int(description["layers"])):
        for old, new in names.items():
            if f"block{i}.{old}" in flat:
                array = flat[f"block{i}.{old}"]
                weights[f"transformer.resblocks.{i}.{new}"] = array.T if old.endswith(".weight") and \
                    old.split(".")[0] in ("in", "out", "fc", "proj") else array
    if "projection.weight" in flat:
        weights["text_projection"] = flat["projection.weight"]  # stored as x @ P already
    if "projection.bias" in flat:
        weights["text_projection.bias"] = flat["projection.bias"]
    config = TextConfig(heads=int(description["heads"]), context_length=int(description["context_length"]),
                        eps=float(description["eps"]), act=description["activation"],
                        causal=bool(description["causal"]), pool=description["pool"],
                        eos_id=int(description.get("eos_id") or 2))
    return TextTower(weights, config, clip_tokenizer(config.context_length), description)


def _f32(array: np.ndarray) -> np.ndarray:
    """float32 as it is (a view of the file), anything else widened once (a float16
    checkpoint: its matrices would otherwise multiply in half precision)."""
    return array if array.dtype == np.float32 else np.asarray(array, dtype=np.float32)


def _maybe_f32(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else _f32(array)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + eps) * weight + bias


def _scaled(x: np.ndarray, gamma: np.ndarray | None) -> np.ndarray:
    return x if gamma is None else x * gamma


def _activation(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "quick_gelu":
        return x / (1 + np.exp(-1.702 * x))
    if kind == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1 + _erf(x * (1 / math.sqrt(2))))


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to within 1.2e-7 (Numerical Recipes' erfc by Chebyshev fitting): numpy has none."""
    z = np.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = t * 0.17087277 - 0.82215223
    for c in (1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368):
        poly *= t
        poly += c
    poly *= t
    poly -= z * z + 1.26551223
    return np.copysign(1 - t * np.exp(poly), x)
