"""Pipeline step `train` of tests/e2e/tests/pipelines.rs: trains an iris classifier with the
hyperparameters of the pushed commit's params.json (read from the repository with git), and logs
params, a metric and the model to the job's MLflow run (MLFLOW_RUN_ID, set by Capstan).

The model is logged as ONNX (`mlflow.onnx.log_model`, name "model"): the logistic regression's
weights as MatMul + Add + Softmax + ArgMax, which Capstan's model server runs."""
import json
import os
import sys
from pathlib import Path
import subprocess

import mlflow
import mlflow.onnx
import numpy as np
import onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))  # tests/e2e/python
from onnx_models import dense_classifier  # noqa: E402

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

model = dense_classifier(clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32), "iris", logits_output=False)
onnx.checker.check_model(model)

with mlflow.start_run():
    mlflow.log_params({k: str(v) for k, v in cfg.items()})
    mlflow.log_metric("train_accuracy", float(clf.score(X_train, y_train)))
    mlflow.onnx.log_model(model, name="model")
print(f"trained on commit {sha}: {cfg}")
