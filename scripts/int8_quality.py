"""Search quality of an int8 image tower against fp32, on the trained colour/shape model.

    python scripts/int8_quality.py          # needs `pip install onnx` (the quantiser's need)

Draws the held-out test photos (tests/shapes.py, 10 per colour and shape), embeds them
with the exported fp32 tower and with its int8 dynamic quantisation, and reports the
top-5 precision of the 20 captions "a {colour} {shape}" for both, the top-10 agreement of
int8 with fp32, and the smallest cosine between their vectors.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clipsearch.ingest.decode import load_image  # noqa: E402
from clipsearch.model.embed import LazyEmbedder, OpenClipEmbedder  # noqa: E402
from tests.conftest import SHAPES_MODEL  # noqa: E402
from tests.shapes import COLOURS, SHAPES, TEST_SEED, make_shape_folder  # noqa: E402


def main() -> None:
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = Path(tempfile.mkdtemp())
    photos = make_shape_folder(folder / "photos", 10, TEST_SEED)
    torch_model = OpenClipEmbedder(SHAPES_MODEL, device="cpu")
    fp32_tower = LazyEmbedder(SHAPES_MODEL, image_tower_dir=folder / "tower", device="cpu")
    fp32_tower.load()
    pixels = np.stack([load_image(str(p.path), torch_model.preprocess, 10**9)[0] for p in photos])
    fp32 = fp32_tower.embed_images(pixels)
    plain, quantised = folder / "plain.onnx", folder / "int8.onnx"
    torch_model.export_image_tower(plain)
    quantize_dynamic(str(plain), str(quantised), weight_type=QuantType.QInt8)
    int8 = onnxruntime.InferenceSession(str(quantised), providers=["CPUExecutionProvider"]).run(
        None, {"pixels": pixels})[0]
    int8 /= np.linalg.norm(int8, axis=1, keepdims=True)
    precision = {"fp32": [], "int8": []}
    agreement = []
    for colour in COLOURS:
        for shape in SHAPES:
            text = torch_model.embed_texts([f"a {colour} {shape}"])[0]
            tops = {name: np.argsort(-(vectors @ text))[:10] for name, vectors in (("fp32", fp32), ("int8", int8))}
            for name, top in tops.items():
                precision[name].append(np.mean([photos[i].colour == colour and photos[i].shape == shape
                                                for i in top[:5]]))
            agreement.append(len(set(tops["fp32"]) & set(tops["int8"])) / 10)
    print(json.dumps({"photos": len(photos), "top5_precision_fp32": float(np.mean(precision["fp32"])),
                      "top5_precision_int8": float(np.mean(precision["int8"])),
                      "top10_agreement_int8_with_fp32": float(np.mean(agreement)),
                      "min_cosine_int8_to_fp32": float(np.min(np.sum(fp32 * int8, axis=1)))}, indent=1))


if __name__ == "__main__":
    main()
