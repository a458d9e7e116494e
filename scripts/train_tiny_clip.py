"""Train the tiny CLIP that the search-quality tests use: it knows 5 colours and 4 shapes.

    python scripts/train_tiny_clip.py            # writes tests/fixtures/shapes-clip.{json,pt}

Real CLIP weights cannot be downloaded on the build machines, and random weights only
prove that the plumbing runs. This script draws labelled photos (tests/shapes.py: one
red/green/blue/yellow/purple circle/square/triangle/star on a plain, noisy background),
saves them as real JPEG and PNG files, and trains an open_clip model of its own tiny
config on them with open_clip's contrastive loss, captions such as "a red circle" and
"a photo of a blue star".

Images go through open_clip's own preprocessing and text through open_clip's tokenizer,
never through clipsearch's: a wrong constant in clipsearch must make the tests fail,
not be learnt into the weights. The checkpoint is an fp16 state dict that clipsearch
loads the way users load theirs: `--model shapes-clip.json:shapes-clip.pt`.

Everything is seeded; on 2 CPU cores it takes a few minutes, and it prints the training
time, the accuracy on held-out photos (another seed) and the checkpoint size.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.shapes import HELD_OUT_SEED, TEMPLATES, TRAIN_SEED, caption, combos, make_shape_folder  # noqa: E402

# Small enough to train in minutes on 2 CPU cores. The image tower is open_clip's
# ModifiedResNet (layers given as a list): convolutions learn shapes from a few thousand
# photos where a ViT of the same cost was still guessing. The text tower is narrow because
# its token table has a row for each of the tokenizer's 49408 tokens (32 wide: 3 MB in fp16).
CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "tests" / "fixtures",
                        help="where NAME.json and NAME.pt are written")
    parser.add_argument("--name", default="shapes-clip", help="model name (the config file's stem)")
    parser.add_argument("--train-per-combo", type=int, default=240, help="training photos per colour and shape")
    parser.add_argument("--held-out-per-combo", type=int, default=25, help="held-out photos per colour and shape")
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the batches")
    parser.add_argument("--data-dir", type=Path, help="keep the generated photos here instead of in a temporary folder")
    args = parser.parse_args(argv)

    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns that a new model has random weights
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    config_path = args.out_dir / f"{args.name}.json"
    config_path.write_text(json.dumps(CONFIG, indent=4) + "\n")
    open_clip.add_model_config(str(config_path))  # registered under the file's stem, as clipsearch does
    model, _, preprocess = open_clip.create_model_and_transforms(args.name, pretrained=None)
    tokenizer = open_clip.get_tokenizer(args.name)

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir or Path(scratch)
        train = _load(make_shape_folder(data_dir / "train", args.train_per_combo, TRAIN_SEED), preprocess)
        held_out = _load(make_shape_folder(data_dir / "held-out", args.held_out_per_combo, HELD_OUT_SEED),
                         preprocess)
    data_seconds = time.perf_counter() - start
    print(f"{len(train[0])} training and {len(held_out[0])} held-out photos drawn, saved and preprocessed "
          f"in {data_seconds:.0f} s", flush=True)

    _train(model, tokenizer, train, args)
    train_seconds = time.perf_counter() - start - data_seconds

    checkpoint = args.out_dir / f"{args.name}.pt"
    state = {key: value.half() if value.is_floating_point() else value for key, value in model.state_dict().items()}
    torch.save(state, checkpoint)
    # Measure what was saved: the fp16 weights, loaded back the way open_clip loads a file.
    saved = open_clip.create_model(args.name, pretrained=str(checkpoint)).eval()
    accuracies = [_accuracy(saved, tokenizer, held_out, template) for template in range(len(TEMPLATES))]
    print(f"training: {train_seconds:.0f} s ({args.steps} steps); "
          f"in all, with the photos and the evaluation: {time.perf_counter() - start:.0f} s")
    for template, (colour, shape, both) in zip(TEMPLATES, accuracies):
        print(f"held-out accuracy, photo -> the right one of {len(combos())} captions \"{template}\": "
              f"colour {colour:.1%}, shape {shape:.1%}, both {both:.1%}")
    print(f"wrote {config_path} and {checkpoint} ({checkpoint.stat().st_size / 1e6:.2f} MB)")


def _load(photos, preprocess) -> tuple[torch.Tensor, np.ndarray]:
    """Photos read back from their files through open_clip's preprocessing; labels index combos()."""
    index = {combo: i for i, combo in enumerate(combos())}
    images = []
    for photo in photos:
        with Image.open(photo.path) as image:
            images.append(preprocess(image.convert("RGB")))
    return torch.stack(images), np.array([index[(p.colour, p.shape)] for p in photos])


def _train(model, tokenizer, data, args) -> None:
    images, labels = data
    n_combos = len(combos())
    by_combo = [np.flatnonzero(labels == c) for c in range(n_combos)]
    # Every caption in every template, tokenised once; a batch picks one photo of every
    # combo, so no two photos in a batch share a caption and the usual CLIP loss is exact.
    tokens = torch.stack([tokenizer([caption(c, s, t) for c, s in combos()])
                          for t in range(len(TEMPLATES))])  # (templates, combos, context)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * step / args.steps)))
    loss_fn = open_clip.ClipLoss()
    rng = np.random.default_rng(args.seed)
    model.train()
    started, running = time.perf_counter(), 0.0
    for step in range(args.steps):
        picks = np.array([rng.choice(rows) for rows in by_combo])
        batch = images[picks]
        # A mirrored or quarter-turned photo shows the same shape: 8 views of every photo.
        if rng.random() < 0.5:
            batch = batch.flip(3)
        batch = batch.rot90(int(rng.integers(4)), dims=(2, 3))
        texts = tokens[rng.integers(len(TEMPLATES), size=n_combos), np.arange(n_combos)]
        image_features, text_features, logit_scale = model(batch, texts)
        loss = loss_fn(image_features, text_features, logit_scale)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % 250 == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}: loss {running:.3f} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    model.eval()


def _accuracy(model, tokenizer, data, template: int) -> tuple[float, float, float]:
    """Share of held-out photos whose best caption (of every combo, in one template) has the
    right colour, the right shape, and both."""
    images, labels = data
    names = combos()
    with torch.inference_mode():
        text = model.encode_text(tokenizer([caption(c, s, template) for c, s in names]), normalize=True)
        image = torch.cat([model.encode_image(chunk, normalize=True) for chunk in images.split(256)])
    best = (image @ text.T).argmax(1).numpy()
    colour = np.mean([names[b][0] == names[t][0] for b, t in zip(best, labels)])
    shape = np.mean([names[b][1] == names[t][1] for b, t in zip(best, labels)])
    return float(colour), float(shape), float(np.mean(best == labels))


if __name__ == "__main__":
    main()
