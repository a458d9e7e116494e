"""clipsearch and rclip side by side on the same photos, in fresh processes, alternating.

    python scripts/compare_rclip.py FOLDER [--rclip PATH] [--runs 3] [--json FILE]

rclip (pip install rclip, in a virtual environment of its own: it pins other numpy and
Pillow versions) fetches its ONNX models from a model hub on first use, which cannot
work offline. This script gives it random-weight exports of its architecture instead,
in its data folder's layout (RCLIP_DATADIR/ViT-B-32-256-datacomp_s34b_b86k/visual.onnx and
textual.onnx, RCLIP_DATADIR/tokenizer/), and runs clipsearch with ViT-B-32-256:random:
the same architecture and cost on both sides. `--model` gives clipsearch another model
(e.g. random weights of the default, `bench.py checkpoint ViT-B-32-SigLIP2-256 DIR`), and
`--python` the interpreter of another install (a torch-free one).

What is timed (wall seconds, median of the runs; peak RSS of the indexing process):
  first use + query       (--first-use) clipsearch only: the same with an empty model cache,
                          its towers built from the weights on disk; against rclip's fresh
                          index, whose ONNX files are ready
  fresh index + query     index FOLDER into an empty library, then one text query
  10 changed files        10 photos replaced by other images, then update + query
  image query             an image-to-image query from a fresh process
  cold text query         one text query from a fresh process
  unchanged re-check      update with nothing changed
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = "ViT-B-32-256:random"
RCLIP_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"
QUERY = "a red car in the snow"


def make_rclip_models(datadir: Path) -> None:
    """Random-weight ViT-B-32-256 towers in rclip's layout (its input names and shapes)."""
    target = datadir / RCLIP_SUBDIR
    if (target / "visual.onnx").is_file() and (target / "textual.onnx").is_file():
        return
    import open_clip
    import torch

    from clipsearch.model.embed import OpenClipEmbedder
    from clipsearch.model.tokenizer import merges_file

    model = OpenClipEmbedder(MODEL, device="cpu")._model.eval()
    target.mkdir(parents=True, exist_ok=True)

    class Visual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.encode_image(x)

    class Textual(Visual):
        def forward(self, x):
            return self.model.encode_text(x)

    with torch.enable_grad():  # the plain attention path exports; the fused one does not
        torch.onnx.export(Visual(), (torch.zeros(2, 3, 256, 256),), str(target / "visual.onnx"),
                          input_names=["input"], output_names=["output"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        tokens = open_clip.get_tokenizer("ViT-B-32-256")(["a photo", "two"])
        torch.onnx.export(Textual(), (tokens,), str(target / "textual.onnx"), input_names=["input"],
                          output_names=["output"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    (datadir / "tokenizer").mkdir(exist_ok=True)
    shutil.copy(merges_file(), datadir / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz")


def timed(args: list[str], env: dict, cwd: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one command in a fresh process."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        child = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=out)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS, in KiB on Linux
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            out.seek(0)
            raise SystemExit(f"{' '.join(args)} failed:\n{out.read().decode(errors='replace')[-3000:]}")
    return wall, usage.ru_maxrss / 1024


class Tool:
    def __init__(self, name: str, workdir: Path, photos: Path, rclip: str | None = None):
        self.name, self.workdir, self.photos, self.rclip = name, workdir, photos, rclip
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}

    def reset(self) -> None:
        for path in self.workdir.iterdir():
            if path.name != "models":
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def index_and_query(self) -> tuple[float, float]:
        raise NotImplementedError


class Clipsearch(Tool):
    def __init__(self, *args, model: str = MODEL, python: str = sys.executable, **kwargs):
        super().__init__(*args, **kwargs)
        self.model, self.python = model, python
        self.env["CLIPSEARCH_MODEL_CACHE"] = str(self.workdir / "models")

    def cli(self, *args: str) -> list[str]:
        return [self.python, "-m", "clipsearch.cli", "--home", str(self.workdir / "home"), *args]

    def index_and_query(self) -> tuple[float, float]:
        wall, rss = timed(self.cli("crawl", str(self.photos), "--model", self.model), self.env)
        return wall + timed(self.cli("search", QUERY), self.env)[0], rss

    def first_use(self) -> tuple[float, float]:
        """Index and query with the weights on disk but no towers built yet (an empty model
        cache): what the first crawl on a computer costs."""
        self.reset()
        shutil.rmtree(self.workdir / "models")
        (self.workdir / "models").mkdir()
        return self.index_and_query()

    def update_and_query(self) -> float:
        return timed(self.cli("crawl"), self.env)[0] + timed(self.cli("search", QUERY), self.env)[0]

    def image_query(self, image: Path) -> float:
        return timed(self.cli("search", "--image", str(image)), self.env)[0]

    def text_query(self) -> float:
        return timed(self.cli("search", QUERY), self.env)[0]

    def recheck(self) -> float:
        return timed(self.cli("crawl"), self.env)[0]


class Rclip(Tool):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.env["RCLIP_DATADIR"] = str(self.workdir / "models")
        # In a child: a child's peak RSS starts from its parent's at fork, so the measuring
        # process must stay small.
        subprocess.run([sys.executable, __file__, "--make-rclip-models", str(self.workdir / "models")], check=True)

    def reset(self) -> None:
        db = self.workdir / "models" / "db.sqlite3"
        for path in db.parent.glob("db.sqlite3*"):
            path.unlink()

    def run(self, *args: str) -> tuple[float, float]:
        return timed([self.rclip or "rclip", *args], self.env, cwd=self.photos)

    def index_and_query(self) -> tuple[float, float]:
        return self.run("-f", QUERY)

    def update_and_query(self) -> float:
        return self.run("-f", QUERY)[0]

    def image_query(self, image: Path) -> float:
        return self.run("-n", "-f", str(image))[0]

    def text_query(self) -> float:
        return self.run("-n", "-f", QUERY)[0]

    def recheck(self) -> float:
        return self.run("-f", QUERY)[0]


def make_wallpapers(tree: Path, out: Path, crops: int = 84) -> None:
    """The comparison's photos from Debian's wallpaper packages, unpacked into tree
    (`apt-get download mate-backgrounds gnome-backgrounds`, then `dpkg -x` each into tree):
    their JPEG, PNG and WebP files as they are, and `crops` JPEG crops of them."""
    from PIL import Image

    rng = random.Random(9)
    found = sorted(p for p in tree.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    out.mkdir(parents=True, exist_ok=True)
    for path in found:
        shutil.copy(path, out / path.name)
    for i in range(crops):
        with Image.open(found[i % len(found)]) as img:
            width, height = img.size
            share = rng.uniform(0.35, 0.8)
            w, h = int(width * share), int(height * share)
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            img.convert("RGB").crop((left, top, left + w, top + h)).save(out / f"crop_{i:03d}.jpg", quality=90)
    print(f"{len(found) + crops} photos in {out}", file=sys.stderr)


def change_ten(photos: Path, round_: int) -> None:
    """Give 10 photos other pixels (a small re-encode with a new marker), as an edit would."""
    from PIL import Image

    for path in sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:10]:
        with Image.open(path) as img:
            edited = img.convert("RGB").rotate(90 * (round_ % 3 + 1), expand=True)
        edited.save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?")
    parser.add_argument("--make-rclip-models", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--make-wallpapers", nargs=2, type=Path, metavar=("TREE", "OUT"),
                        help="make the 130 photos from unpacked mate-/gnome-backgrounds packages, then stop")
    parser.add_argument("--rclip", help="the rclip executable (default: rclip on PATH)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image-precision", choices=("fp32", "int8"), default="fp32",
                        help="clipsearch's CPU image tower (its export must be in the model cache already)")
    parser.add_argument("--model", help=f"clipsearch's model spec (default: {MODEL}); e.g. a checkpoint made by "
                                        "`scripts/bench.py checkpoint ARCH DIR`")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python that runs clipsearch (e.g. a torch-free install's; default: this one)")
    parser.add_argument("--first-use", action="store_true",
                        help="also time clipsearch's first crawl with an empty model cache (towers built)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.make_rclip_models:
        make_rclip_models(args.make_rclip_models)
        return
    if args.make_wallpapers:
        make_wallpapers(*args.make_wallpapers)
        return
    if args.folder is None:
        parser.error("FOLDER is required")
    with tempfile.TemporaryDirectory(prefix="compare-") as scratch:
        photos = Path(scratch) / "photos"
        shutil.copytree(args.folder, photos)
        image = next(p for p in sorted(photos.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg"))
        query_image = Path(scratch) / ("query" + image.suffix)
        shutil.copy(image, query_image)
        tools: list[Tool] = []
        for name in ("clipsearch", "rclip"):
            workdir = Path(scratch) / name
            workdir.mkdir()
            (workdir / "models").mkdir()
        tools.append(Clipsearch("clipsearch", Path(scratch) / "clipsearch", photos, model=args.model or MODEL,
                                python=args.python))
        tools.append(Rclip("rclip", Path(scratch) / "rclip", photos, rclip=args.rclip))
        tools[0].env["CLIPSEARCH_IMAGE_PRECISION"] = args.image_precision
        figures: dict[str, dict[str, list[float]]] = {t.name: {} for t in tools}

        def note(tool: Tool, what: str, value: float) -> None:
            figures[tool.name].setdefault(what, []).append(value)
            print(f"  {tool.name:<10} {what:<24} {value:8.2f}", file=sys.stderr, flush=True)

        for run in range(args.runs):
            print(f"run {run + 1} of {args.runs}", file=sys.stderr)
            if args.first_use:  # rclip's ONNX files are ready: its fresh index is its first use
                wall, rss = tools[0].first_use()
                note(tools[0], "first use + query", wall)
                note(tools[0], "peak RSS MiB (first use)", rss)
            for tool in tools if run % 2 == 0 else tools[::-1]:
                tool.reset()
                wall, rss = tool.index_and_query()
                note(tool, "fresh index + query", wall)
                note(tool, "peak RSS MiB (index)", rss)
                note(tool, "unchanged re-check", tool.recheck())
                note(tool, "cold text query", tool.text_query())
                note(tool, "image query", tool.image_query(query_image))
            # The same 10 files change for both tools, then each catches up.
            change_ten(photos, run)
            for tool in tools if run % 2 == 0 else tools[::-1]:
                note(tool, "10 changed files + query", tool.update_and_query())
    summary = {name: {what: statistics.median(values) for what, values in rows.items()}
               for name, rows in figures.items()}
    print(f"\n{'work':<26}{'clipsearch':>12}{'rclip':>12}{'ratio':>8}")
    paired = {"first use + query": "fresh index + query", "peak RSS MiB (first use)": "peak RSS MiB (index)"}
    for what in summary["clipsearch"]:
        ours, theirs = summary["clipsearch"][what], summary["rclip"][paired.get(what, what)]
        print(f"{what:<26}{ours:>12.2f}{theirs:>12.2f}{ours / theirs:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": figures, "median": summary}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
