"""The tokenizers give open_clip's token ids: CLIP's BPE (ours, with the merges clipsearch
ships) and SigLIP 2's tokenizer.json read by `tokenizers` (against open_clip's HFTokenizer).

The real SigLIP 2 tokenizer.json (Gemma's 256k vocabulary, in the hub repo
timm/ViT-B-32-SigLIP2-256) cannot be downloaded here, so the tests train a small one with
the `tokenizers` library in Gemma's layout: BPE with byte fallback (<0x00> ... <0xFF>), spaces
spelt "▁" by the normaliser and no pre-tokeniser, <pad> 0, <eos> 1, <bos> 2, <unk> 3, and
<eos> after the text. open_clip reads it through transformers' AutoTokenizer. The compiled
form that cold queries load (model/bpe.py) must give `tokenizers`' ids on every text.
"""

from __future__ import annotations

import json
import random
import string

import numpy as np
import open_clip
import pytest

from clipsearch.model.tokenizer import ClipTokenizer, HubTokenizer, clean_text, probe_texts


def _texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.printable + "éüßñ日本語🐶½²ﬁ’“”&;Ⅻ٣"
    words = ["a", "red", "car", "in", "the", "snow", "Photo", "DOG", "beach", "2024", "don't", "&amp;",
             "café", "naïve", "東京", "x²", "snake_case", "<b>", "   "]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 50))) for _ in range(count)]
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) for _ in range(count)]
    return texts + ["", "word " * 100, "\x1b[31mred\x1b[0m", "ﬁne Ｆｕｌｌwidth", "&amp;amp;amp;"]


def test_clips_tokenizer_gives_open_clips_token_ids_from_the_merges_clipsearch_ships():
    ours, theirs = ClipTokenizer(context_length=77), open_clip.get_tokenizer("ViT-B-32")
    texts = _texts(600, seed=1)
    mismatched = [t for t in texts if not np.array_equal(ours([t]), theirs([t]).numpy())]
    assert mismatched == []
    assert ours(texts[:3]).shape == (3, 77)


CORPUS = ["a dog on the beach", "a red car in the snow", "chien sur la plage", "une voiture rouge dans la neige",
          "海辺の犬", "雪の中の赤い車", "the receipt from the bakery", "beach portugal 2019", "photo of a cat",
          "ein Hund am Strand", "собака на пляже", "un perro en la playa"]
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
QUERIES = ["chien sur la plage", "海辺の犬", "a dog on the beach", "A DOG on the Beach!!", "", "   ",
           "café crème", "naïve façade", "snake_case_words", "the &amp; sign &lt;b&gt;", "ﬁne Ｆｕｌｌwidth",
           "emoji 🐶🏖️", "zebra xylophone quixotic", "dog " * 40, "собака на пляже", "東京 2024年",
           "can't won't", "\x1b[31mred\x1b[0m", "tab\tand\nnewline"]


def _gemma_like(folder, config: dict, added: tuple = ()) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors, trainers

    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.normalizer = normalizers.Replace(" ", "▁")
    learner.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(vocab_size=120, max_token_length=4,
                                                                show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({f"<0x{b:02X}>": len(SPECIALS) + b for b in range(256)})
    for token in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                                     fuse_unk=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tokenizer.add_tokens([AddedToken(content, special=False, normalized=normalized) for content, normalized in added])
    tokenizer.post_processor = processors.TemplateProcessing(single="$A <eos>", pair="$A <eos> $B <eos>",
                                                             special_tokens=[("<eos>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


CONFIGS = {
    # A plain fast tokenizer: tokenizer.json's own post-processor adds <eos>.
    "fast": {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "<eos>",
             "bos_token": "<bos>", "unk_token": "<unk>", "model_max_length": 64},
    # Gemma's class, as SigLIP 2's config is believed to name it (add_bos_token false,
    # add_eos_token true, matching the post-processor).
    "gemma": {"tokenizer_class": "GemmaTokenizer", "add_bos_token": False, "add_eos_token": True,
              "padding_side": "right", "pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>",
              "unk_token": "<unk>", "model_max_length": 64},
    # Flags that contradict tokenizer.json: transformers 5 ignores them, and so do we.
    "gemma-bos": {"tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": True,
                  "padding_side": "right", "pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>",
                  "unk_token": "<unk>"},
}


@pytest.mark.parametrize("context_length", [16, 64])
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_ids_match_open_clips_hf_tokenizer(tmp_path, kind, context_length):
    from open_clip.tokenizer import HFTokenizer

    _gemma_like(tmp_path / kind, CONFIGS[kind])
    model_cfg = {"text_cfg": {"context_length": context_length, "tokenizer_kwargs": {"clean": "canonicalize"}}}
    ours = HubTokenizer.from_folder(tmp_path / kind, model_cfg)(QUERIES)
    theirs = HFTokenizer(str(tmp_path / kind), context_length=context_length, clean="canonicalize")(QUERIES).numpy()
    assert ours.shape == (len(QUERIES), context_length)
    mismatched = [q for q, a, b in zip(QUERIES, ours, theirs) if not np.array_equal(a, b)]
    assert mismatched == []


def test_a_long_text_is_cut_and_keeps_its_eos(tmp_path):
    _gemma_like(tmp_path / "t", CONFIGS["gemma"])
    ids = HubTokenizer.from_folder(tmp_path / "t", {"text_cfg": {"context_length": 16}})(["dog " * 40, "dog"])
    assert ids[0, -1] == 1 and 0 not in ids[0]
    assert list(ids[1, :3]) != [0, 0, 0] and ids[1, -1] == 0  # padded with <pad> on the right


def test_without_a_padding_side_in_the_config_it_pads_on_the_right_as_siglip_was_trained(tmp_path):
    """transformers' GemmaTokenizer class would pad on the left here (README: open questions)."""
    config = {k: v for k, v in CONFIGS["gemma"].items() if k != "padding_side"}
    _gemma_like(tmp_path / "t", config)
    ids = HubTokenizer.from_folder(tmp_path / "t", {"text_cfg": {"context_length": 16}})(["dog"])
    assert ids[0, 0] != 0 and ids[0, -1] == 0


def test_clean_text_is_open_clips_cleaning():
    from open_clip.tokenizer import get_clean_fn

    rng = random.Random(5)
    alphabet = string.printable + "éüßñ日本語🐶½²ﬁ’“”&;Ⅻ٣ _"
    texts = QUERIES + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    for mode in ("canonicalize", "lower", "whitespace"):
        theirs = get_clean_fn(mode)
        assert [clean_text(t, mode) for t in texts] == [theirs(t) for t in texts], mode


# --- the compiled form (model/bpe.py): what a cold query loads instead of `tokenizers` -------
ADDED = (("<start_of_turn>", False), ("hund", True), ("la p", True), ("犬", False))


def _random_texts(folder, count: int, seed: int) -> list[str]:
    """Texts of the vocabulary's own pieces, of random characters (many outside it: byte
    fallback) and with the added tokens inside words."""
    rng = random.Random(seed)
    vocab = list(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])
    texts = [" ".join(rng.choice(vocab).replace("▁", " ") for _ in range(rng.randint(1, 12))) for _ in range(count)]
    texts += ["".join(chr(rng.randint(32, 0x3100)) for _ in range(rng.randint(0, 60))) for _ in range(count // 4)]
    texts += [f"ein{a}hund {b}x" for a, _ in ADDED for b, _ in ADDED]
    return texts


@pytest.mark.parametrize("context_length", [16, 64])
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_the_compiled_tokenizer_gives_the_same_ids_as_tokenizers(tmp_path, kind, context_length):
    _gemma_like(tmp_path / kind, CONFIGS[kind], ADDED)
    model_cfg = {"text_cfg": {"context_length": context_length, "tokenizer_kwargs": {"clean": "canonicalize"}}}
    reference = HubTokenizer.from_folder(tmp_path / kind, model_cfg)
    compiled = reference.compiled()
    texts = QUERIES + probe_texts() + _random_texts(tmp_path / kind, 600, seed=context_length)
    ours, theirs = compiled(texts), reference(texts)
    mismatched = [t for t, a, b in zip(texts, ours, theirs) if not np.array_equal(a, b)]
    assert mismatched == []
    assert len({tuple(row) for row in ours}) > len(texts) // 2  # the texts do tokenize differently


def test_added_tokens_are_cut_out_before_the_merges(tmp_path):
    _gemma_like(tmp_path / "t", CONFIGS["fast"], ADDED)
    compiled = HubTokenizer.from_folder(tmp_path / "t", {"text_cfg": {"context_length": 16}}).compiled()
    ids = compiled(["ein hund 犬"])[0]
    added = {t["content"]: t["id"] for t in json.loads((tmp_path / "t" / "tokenizer.json").read_text())["added_tokens"]}
    assert added["hund"] in ids and added["犬"] in ids


def test_a_tokenizer_the_compiler_does_not_cover_is_refused_and_the_tower_keeps_tokenizers(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from clipsearch.model.bpe import Unsupported
    from clipsearch.model.texttower import _compiled_tokenizer

    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.pre_tokenizer = pre_tokenizers.ByteLevel()  # GPT-2's layout: not what bpe.py does
    learner.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                                special_tokens=["<pad>", "<unk>"]))
    (tmp_path / "t").mkdir()
    learner.save(str(tmp_path / "t" / "tokenizer.json"))
    reference = HubTokenizer.from_folder(tmp_path / "t", {"text_cfg": {"context_length": 16}})
    with pytest.raises(Unsupported, match="pre-tokenizer"):
        reference.compiled()
    assert _compiled_tokenizer(tmp_path / "t" / "tokenizer.json", 16,
                               {"clean": "whitespace", "config": {}, "strip_sep_token": False}) is None


def test_a_compiled_form_that_disagrees_on_a_probe_text_is_not_kept(tmp_path, monkeypatch):
    from clipsearch.model import bpe
    from clipsearch.model.texttower import _compiled_tokenizer

    _gemma_like(tmp_path / "t", CONFIGS["gemma"], ADDED)
    tokenizer = {"clean": "canonicalize", "config": CONFIGS["gemma"], "strip_sep_token": False}
    assert _compiled_tokenizer(tmp_path / "t" / "tokenizer.json", 16, tokenizer) is not None
    monkeypatch.setattr(bpe.Bpe, "_merge", lambda self, symbols: symbols)  # a compiler bug: no merges
    assert _compiled_tokenizer(tmp_path / "t" / "tokenizer.json", 16, tokenizer) is None
