"""ONNX models for the serving tests and benchmark, built with the `onnx` package.

    python3 onnx_models.py classifier OUT.onnx [--features 4] [--seed 0]
    python3 onnx_models.py identity OUT.onnx
    python3 onnx_models.py mlp OUT.onnx

mlp:        the benchmark's model: input "input" FP32 [N, 64] -> two ReLU layers of 256 ->
            "probabilities" FP32 [N, 10] (softmax).

classifier: input "input" FP32 [N, features] -> "logits" FP32 [N, 3] (dense layer),
            "probabilities" FP32 [N, 3] (softmax), "label" INT64 [N] (argmax).
            --features 5 gives a model that refuses the 4-feature requests of the others
            (the broken canary).
identity:   one input per datatype ("x_bool", "x_uint8", ..., "x_bytes"), each [N, 2],
            returned unchanged as "y_<type>".
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

TYPES = {
    "bool": TensorProto.BOOL,
    "uint8": TensorProto.UINT8,
    "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64,
    "int8": TensorProto.INT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "fp16": TensorProto.FLOAT16,
    "fp32": TensorProto.FLOAT,
    "fp64": TensorProto.DOUBLE,
    "bytes": TensorProto.STRING,
}


def dense_classifier(w: np.ndarray, b: np.ndarray, name: str, logits_output: bool = True) -> onnx.ModelProto:
    """input FP32 [N, features] -> x @ w + b: ("logits" FP32 [N, classes] when `logits_output`),
    "probabilities" FP32 [N, classes] (softmax), "label" INT64 [N] (argmax). `w` is
    [features, classes] FP32, `b` [classes] FP32. Also the pipeline tests' trained iris models
    (tests/e2e/pipelines/train.py, tests/ui/pipeline_train.py)."""
    features, classes = w.shape
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    outputs = [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes]),
        helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
    ]
    if logits_output:
        outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
        outputs,
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def classifier(features: int, seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(features, 3)).astype(np.float32)
    b = rng.normal(size=(3,)).astype(np.float32)
    return dense_classifier(w, b, "classifier")


def mlp(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    dims = [64, 256, 256, 10]
    inits, nodes, x = [], [], "input"
    for i in range(3):
        w = (rng.normal(size=(dims[i], dims[i + 1])) / np.sqrt(dims[i])).astype(np.float32)
        b = (rng.normal(size=(dims[i + 1],)) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}"])]
        x = f"a{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def identity() -> onnx.ModelProto:
    nodes, inputs, outputs = [], [], []
    for name, t in TYPES.items():
        nodes.append(helper.make_node("Identity", [f"x_{name}"], [f"y_{name}"]))
        inputs.append(helper.make_tensor_value_info(f"x_{name}", t, ["N", 2]))
        outputs.append(helper.make_tensor_value_info(f"y_{name}", t, ["N", 2]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["classifier", "identity", "mlp"])
    p.add_argument("out")
    p.add_argument("--features", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.kind == "classifier":
        model = classifier(a.features, a.seed)
    elif a.kind == "mlp":
        model = mlp(a.seed)
    else:
        model = identity()
    onnx.checker.check_model(model)
    onnx.save(model, a.out)


if __name__ == "__main__":
    main()
