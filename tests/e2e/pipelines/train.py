"""Pipeline step `train` of tests/e2e/tests/pipelines.rs: trains an iris classifier with the
hyperparameters of the pushed commit's params.json (read from the repository with git), and logs
params, a metric and the model to the job's MLflow run (MLFLOW_RUN_ID, set by Capstan).

The model is logged as ONNX (`mlflow.onnx.log_model`, name "model"): the logistic regression's
weights as MatMul + Add + Softmax + ArgMax, which Capstan's model server runs."""
import json
import os
import subprocess

import mlflow
import mlflow.onnx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

repo = os.environ["CAPSTAN_PARAM_REPO"]
sha = os.environ["CAPSTAN_COMMIT_SHA"]
cfg = json.loads(subprocess.check_output(["git", "--git-dir", repo, "show", f"{sha}:params.json"]))

X, y = load_iris(return_X_y=True)
X_train, _, y_train, _ = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
noise = float(cfg.get("label_noise", 0.0))
if noise > 0:
    rng = np.random.default_rng(0)
    flip = rng.random(len(y_train)) < noise
    y_train = np.where(flip, rng.integers(0, 3, len(y_train)), y_train)
clf = LogisticRegression(max_iter=int(cfg.get("max_iter", 200))).fit(X_train, y_train)

w = clf.coef_.T.astype(np.float32)  # [4, 3]
b = clf.intercept_.astype(np.float32)  # [3]
graph = helper.make_graph(
    [
        helper.make_node("MatMul", ["input", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ],
    "iris",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
    [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
        helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
    ],
    initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
onnx.checker.check_model(model)

with mlflow.start_run():
    mlflow.log_params({k: str(v) for k, v in cfg.items()})
    mlflow.log_metric("train_accuracy", float(clf.score(X_train, y_train)))
    mlflow.onnx.log_model(model, name="model")
print(f"trained on commit {sha}: {cfg}")
