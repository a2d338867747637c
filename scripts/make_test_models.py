#!/usr/bin/env python3
"""Writes small, deterministic ONNX models named after catalog files, for the segmenter's tests.

Usage: make_test_models.py OUTDIR

Real rembg weights cannot be downloaded here, so the tests exercise the real loading and
inference code with stand-ins whose behaviour is known:

* ``u2netp.onnx`` -- the *predictable* model. Input ``[1,3,320,320]``, output ``[1,1,320,320]``:
  a 1x1 Conv computing ``red - blue`` of the normalised input (no bias). After the server's
  min-max normalisation, a pure red region maps to alpha 255 and a pure blue region to alpha 0
  (both colours present in the picture), so a test can predict the mask exactly.
* ``u2net.onnx`` -- the u2net op mix (Conv, BatchNormalization, Relu, MaxPool with ceil_mode,
  bilinear Resize, Concat, Add, Sigmoid) with fixed-seed random weights and two outputs like
  u2net's side outputs. Tests check only shapes and ranges for it.
* ``birefnet-general-lite.onnx`` -- input ``[1,3,1024,1024]``; output logits ``[1,1,256,256]``
  (red - blue, scaled, then 4x4 average pooling) with *no* sigmoid in the graph: the catalog's
  sigmoid flag is applied by the server, and the output is smaller than the input, which proves
  the mask is taken at whatever spatial size the model returns.

Everything is deterministic (numpy seed 20261121); the three files total well under 1 MB.
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
SEED = 20261121


def _save(model: onnx.ModelProto, path: str) -> None:
    onnx.checker.check_model(model)
    onnx.save(model, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="imagejobs make_test_models.py",
    )
    # IR version 8 is understood by every onnxruntime >= 1.14.
    model.ir_version = 8
    return model


def red_minus_blue(side: int, pool: int = 1, scale: float = 1.0) -> onnx.ModelProto:
    """1x1 Conv: out = scale * (in[0] - in[2]); optional pool x pool average pooling."""
    w = np.zeros((1, 3, 1, 1), dtype=np.float32)
    w[0, 0, 0, 0] = scale
    w[0, 2, 0, 0] = -scale
    out_side = side // pool
    nodes = [helper.make_node("Conv", ["input", "w"], ["rb"], kernel_shape=[1, 1])]
    if pool > 1:
        nodes.append(
            helper.make_node(
                "AveragePool", ["rb"], ["output"], kernel_shape=[pool, pool], strides=[pool, pool]
            )
        )
    else:
        nodes.append(helper.make_node("Identity", ["rb"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "red_minus_blue",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, out_side, out_side])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    return _model(graph)


def u2net_like(side: int = 320) -> onnx.ModelProto:
    """The op mix of u2net's RSU blocks at toy width, two outputs (d0 and a side output)."""
    rng = np.random.default_rng(SEED)
    inits = []

    def conv(name, x, cin, cout, k):
        w = (rng.standard_normal((cout, cin, k, k)) * (1.0 / np.sqrt(cin * k * k))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        inits.append(numpy_helper.from_array(b, f"{name}_b"))
        return helper.make_node(
            "Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_out"], kernel_shape=[k, k], pads=[k // 2] * 4
        )

    def bn(name, x, c):
        inits.append(numpy_helper.from_array((1.0 + 0.1 * rng.standard_normal(c)).astype(np.float32), f"{name}_s"))
        inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), f"{name}_b"))
        inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), f"{name}_m"))
        inits.append(numpy_helper.from_array((1.0 + 0.1 * rng.random(c)).astype(np.float32), f"{name}_v"))
        return helper.make_node(
            "BatchNormalization",
            [x, f"{name}_s", f"{name}_b", f"{name}_m", f"{name}_v"],
            [f"{name}_out"],
            epsilon=1e-5,
        )

    c = 8
    nodes = [
        conv("c1", "input.1", 3, c, 3),
        bn("bn1", "c1_out", c),
        helper.make_node("Relu", ["bn1_out"], ["r1"]),
        # 320 -> 160 (ceil_mode matters for odd sizes inside u2net; exercised here).
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        conv("c2", "p1", c, c, 3),
        bn("bn2", "c2_out", c),
        helper.make_node("Relu", ["bn2_out"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        conv("c3", "p2", c, c, 3),
        helper.make_node("Relu", ["c3_out"], ["r3"]),
        # Upsample back to the input size with bilinear Resize (u2net's _upsample_like).
        helper.make_node("Resize", ["r3", "", "", "size_full"], ["u3"], mode="linear"),
        helper.make_node("Resize", ["r2", "", "", "size_full"], ["u2"], mode="linear"),
        helper.make_node("Concat", ["u3", "u2", "r1"], ["cat"], axis=1),
        conv("c4", "cat", 3 * c, c, 3),
        bn("bn4", "c4_out", c),
        helper.make_node("Relu", ["bn4_out"], ["r4"]),
        helper.make_node("Add", ["r4", "r1"], ["res"]),
        conv("side", "res", c, 1, 1),
        conv("fuse", "side_out", 1, 1, 1),
        helper.make_node("Sigmoid", ["fuse_out"], ["d0"]),
        helper.make_node("Sigmoid", ["side_out"], ["d1"]),
    ]
    inits.append(numpy_helper.from_array(np.array([1, c, side, side], dtype=np.int64), "size_full"))
    graph = helper.make_graph(
        nodes,
        "u2net_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, side, side])],
        [
            helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, side, side]),
            helper.make_tensor_value_info("d1", TensorProto.FLOAT, [1, 1, side, side]),
        ],
        initializer=inits,
    )
    return _model(graph)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    _save(red_minus_blue(320), os.path.join(out, "u2netp.onnx"))
    _save(u2net_like(320), os.path.join(out, "u2net.onnx"))
    _save(red_minus_blue(1024, pool=4, scale=0.5), os.path.join(out, "birefnet-general-lite.onnx"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
