"""The reference mask for the end-to-end tests: Python onnxruntime running the same ONNX graph
with rembg's published pre- and post-processing (rembg `sessions/base.py` `normalize` and
`sessions/u2net.py` / `dis_general_use.py` `predict`), written as an 8-bit grey PNG.

    reference_mask.py MODEL.onnx IMAGE OUT.png --size 320 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225

Pre: RGB → PIL LANCZOS resize to size² → divide by the resized image's max → (x − mean) / std
→ [1, 3, H, W] float32. Post: output 0, channel 0 → min-max normalise → ×255 as uint8 → PIL
LANCZOS resize back to the image's size. Independent of the segmenter's Rust code on purpose.
"""

import argparse

import numpy as np
import onnxruntime as ort
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("image")
    ap.add_argument("out")
    ap.add_argument("--size", type=int, required=True, help="network input side, px")
    ap.add_argument("--mean", type=float, nargs=3, required=True)
    ap.add_argument("--std", type=float, nargs=3, required=True)
    args = ap.parse_args()

    img = Image.open(args.image).convert("RGB")
    im = np.array(img.resize((args.size, args.size), Image.Resampling.LANCZOS), dtype=np.float64)
    im = im / max(np.max(im), 1e-6)
    x = np.zeros_like(im)
    for c in range(3):
        x[:, :, c] = (im[:, :, c] - args.mean[c]) / args.std[c]
    x = np.expand_dims(x.transpose((2, 0, 1)), 0).astype(np.float32)

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    pred = session.run(None, {session.get_inputs()[0].name: x})[0][:, 0, :, :]
    lo, hi = np.min(pred), np.max(pred)
    pred = np.squeeze((pred - lo) / (hi - lo))
    mask = Image.fromarray((pred * 255).astype("uint8"), mode="L")
    mask.resize(img.size, Image.Resampling.LANCZOS).save(args.out)


if __name__ == "__main__":
    main()
