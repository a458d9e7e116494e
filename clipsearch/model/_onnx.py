"""A small ONNX graph builder over onnx.helper: fresh names, initialisers from numpy, and
the few composite pieces the image towers share (layer norm, activations, attention, MLP).

Weights arrive in PyTorch's layout (Linear: out x in); MatMul wants in x out, so each
linear layer's matrix is stored transposed once, here, at build time.
"""

from __future__ import annotations

import math
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .checkpoint import UnsupportedArchitecture

# 20: GELU is one op (Gelu, tanh approximation included), which onnxruntime runs as one
# kernel; spelt out in opset 17 the tanh form is 8 element-wise passes, and a batch of 16
# through SigLIP 2 B/32 took 1.72 s against 1.44 s (2 cores). onnxruntime >= 1.16 runs 20;
# 17 (LayerNormalization's first) stays available for older runtimes.
OPSET = 20
EXTERNAL_MIN_BYTES = 1024
EXTERNAL_ALIGN = 4096


class GraphBuilder:
    """Nodes and initialisers of one graph, with generated names."""

    def __init__(self, opset: int = OPSET, weights: BinaryIO | None = None, location: str = "") -> None:
        """With `weights` (a file open for writing, named `location` beside the model),
        initialisers of 1 KiB and more go straight into it, each at a 4 KiB boundary, and the
        graph only points at them: a 350 MB tower is not held in memory (twice, as protobuf
        copies it into the graph) on its way to the disk."""
        if opset < 17:
            raise ValueError("opset 17 or later (LayerNormalization)")
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._weights, self._location = weights, location

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, array: np.ndarray | float | int | list, hint: str = "c") -> str:
        """An initialiser: floats as float32, integers as int64."""
        array = np.asarray(array)
        array = array.astype(np.int64) if array.dtype.kind in "iub" else array.astype(np.float32)
        name = self._name(hint)
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        if self._weights is None or array.nbytes < EXTERNAL_MIN_BYTES:
            self.initializers.append(numpy_helper.from_array(array, name))
            return name
        offset = -(-self._weights.tell() // EXTERNAL_ALIGN) * EXTERNAL_ALIGN
        self._weights.write(b"\0" * (offset - self._weights.tell()))
        self._weights.write(array.tobytes())  # one tensor at a time: at most a few MB
        tensor = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self._location), ("offset", offset), ("length", array.nbytes)):
            tensor.external_data.add(key=key, value=str(value))
        self.initializers.append(tensor)
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, outputs: int = 1, out: str | None = None,
           **attrs):
        """Add one node; its output name (or names, when outputs > 1; `out` names a single
        output, such as a graph output)."""
        names = [out] if out else [self._name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=names[0], **attrs))
        return names[0] if outputs == 1 else names

    # -- composite pieces -------------------------------------------------------------

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, hint: str = "linear") -> str:
        """x @ weight.T + bias, weight in PyTorch's (out, in) layout."""
        y = self.op("MatMul", x, self.const(np.asarray(weight, np.float32).T, hint + "_w"), hint=hint)
        return y if bias is None else self.op("Add", y, self.const(bias, hint + "_b"), hint=hint + "_add")

    def layer_norm(self, x: str, weight: np.ndarray, bias: np.ndarray, eps: float, hint: str = "ln") -> str:
        return self.op("LayerNormalization", x, self.const(weight, hint + "_g"), self.const(bias, hint + "_b"),
                       axis=-1, epsilon=float(eps), hint=hint)

    def activation(self, x: str, kind: str) -> str:
        """GELU (erf), GELU (tanh approximation), QuickGELU or ReLU, spelt in the patterns
        onnxruntime's optimiser fuses into one kernel on the CPU (erf GELU -> Gelu or
        BiasGelu, QuickGELU -> QuickGelu). No spelling of the tanh approximation is fused on
        the CPU (FastGelu fusion is for GPU providers): from opset 20 on it is the Gelu op."""
        if kind in ("gelu", "gelu_tanh") and self.opset >= 20:
            return self.op("Gelu", x, approximate="none" if kind == "gelu" else "tanh", hint=kind)
        if kind == "gelu":
            inner = self.op("Erf", self.op("Div", x, self.const(math.sqrt(2.0), "sqrt2")))
            return self.op("Mul", self.op("Mul", x, self.op("Add", inner, self.const(1.0, "one"))),
                           self.const(0.5, "half"), hint="gelu")
        if kind == "gelu_tanh":
            cube = self.op("Mul", self.op("Mul", x, x), x)
            inner = self.op("Add", x, self.op("Mul", cube, self.const(0.044715, "k")))
            tanh = self.op("Tanh", self.op("Mul", inner, self.const(math.sqrt(2.0 / math.pi), "k")))
            return self.op("Mul", self.op("Mul", x, self.const(0.5, "half")),
                           self.op("Add", tanh, self.const(1.0, "one")), hint="gelu_tanh")
        if kind == "quick_gelu":
            return self.op("Mul", x, self.op("Sigmoid", self.op("Mul", x, self.const(1.702, "k"))),
                           hint="quick_gelu")
        if kind == "relu":
            return self.op("Relu", x)
        raise UnsupportedArchitecture(f"activation {kind!r}")

    def mlp(self, x: str, fc1: tuple[np.ndarray, np.ndarray | None], fc2: tuple[np.ndarray, np.ndarray | None],
            act: str, hint: str = "mlp") -> str:
        """Linear (weight, bias), activation, linear."""
        h = self.activation(self.linear(x, fc1[0], fc1[1], hint=hint + "_fc1"), act)
        return self.linear(h, fc2[0], fc2[1], hint=hint + "_fc2")

    def attention(self, q_src: str | np.ndarray, kv_src: str, wq: np.ndarray, bq: np.ndarray | None,
                  wk: np.ndarray, bk: np.ndarray | None, wv: np.ndarray, bv: np.ndarray | None,
                  wo: np.ndarray, bo: np.ndarray | None, heads: int, hint: str = "attn") -> str:
        """Multi-head attention (N, Lq, D) x (N, L, D) -> (N, Lq, Dout), weights in PyTorch's
        layout. The 1/sqrt(head) scale is folded into the query weights. q_src may be a
        constant (a learned latent query, (Lq, D)): its projection is then computed here once.
        q, k and v are three products: one fused in-projection and a Split measured no faster
        (ViT-B-32-256, batch 16: 1.31 s against 1.32 s) and is one more thing to get wrong."""
        width = wq.shape[0]
        head = width // heads
        if head * heads != width:
            raise UnsupportedArchitecture(f"width {width} does not split into {heads} heads")
        scale = 1.0 / math.sqrt(head)
        wq = np.asarray(wq, np.float32) * scale
        bq = None if bq is None else np.asarray(bq, np.float32) * scale
        split = [0, 0, heads, head]
        if isinstance(q_src, np.ndarray):
            q_rows = np.asarray(q_src, np.float64) @ wq.astype(np.float64).T
            if bq is not None:
                q_rows = q_rows + bq
            # (1, heads, Lq, head): broadcast over the batch in the MatMul below.
            q_heads = q_rows.reshape(1, -1, heads, head).transpose(0, 2, 1, 3)
            q = self.const(q_heads, hint + "_q")
        else:
            q = self.linear(q_src, wq, bq, hint=hint + "_q")
            q = self.op("Transpose", self.op("Reshape", q, self.const(split, "shape")), perm=[0, 2, 1, 3])
        k = self.linear(kv_src, wk, bk, hint=hint + "_k")
        v = self.linear(kv_src, wv, bv, hint=hint + "_v")
        k = self.op("Transpose", self.op("Reshape", k, self.const(split, "shape")), perm=[0, 2, 3, 1])
        v = self.op("Transpose", self.op("Reshape", v, self.const(split, "shape")), perm=[0, 2, 1, 3])
        weights = self.op("Softmax", self.op("MatMul", q, k, hint=hint + "_scores"), axis=-1)
        mixed = self.op("Transpose", self.op("MatMul", weights, v, hint=hint + "_mix"), perm=[0, 2, 1, 3])
        if isinstance(q_src, np.ndarray):
            # A constant query has no batch axis to copy: take it from the keys' side.
            mixed = self.op("Reshape", mixed, self.const([-1, q_heads.shape[2], width], "shape"))
        else:
            mixed = self.op("Reshape", mixed, self.const([0, 0, width], "shape"))
        return self.linear(mixed, wo, bo, hint=hint + "_out")

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: bool) -> str:
        """ReduceMean, ReduceL2 ...: their axes are an attribute up to opset 17, an input after."""
        if self.opset < 18:
            return self.op(op_type, x, axes=axes, keepdims=int(keepdims))
        return self.op(op_type, x, self.const(axes, "axes"), keepdims=int(keepdims))

    def l2_normalize(self, x: str, out: str | None = None) -> str:
        """x / max(||x||, 1e-12) along the last axis, as torch.nn.functional.normalize."""
        norm = self.reduce("ReduceL2", x, [-1], keepdims=True)
        return self.op("Div", x, self.op("Max", norm, self.const(1e-12, "eps")), out=out)

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], name: str,
              doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="clipsearch.towers", doc_string=doc)
        # The oldest IR that carries the opset: 8 for 17 (onnxruntime >= 1.14), 9 for 20 (>= 1.16).
        model.ir_version = 8 if self.opset < 19 else 9
        return model


def uint8_images(name: str, size: tuple[int, int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.UINT8, ["batch", size[0], size[1], 3])


def float_rows(name: str, dim: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", dim])
