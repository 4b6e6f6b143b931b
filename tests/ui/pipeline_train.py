"""Pipeline step `train` of the browser test's pipeline (tests/e2e/tests/ui.rs): trains an iris
classifier with CAPSTAN_PARAM_MAX_ITER iterations, logs its held-out accuracy as `accuracy` and
the model as ONNX (`mlflow.onnx.log_model`, name "model": the logistic regression's weights as
MatMul + Add + Softmax + ArgMax, which Capstan's model server runs) to the job's MLflow run
(MLFLOW_RUN_ID, set by Capstan)."""
import os
import sys
from pathlib import Path

import mlflow
import mlflow.onnx
import numpy as np
import onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e" / "python"))  # tests/e2e/python
from onnx_models import dense_classifier  # noqa: E402

max_iter = int(os.environ.get("CAPSTAN_PARAM_MAX_ITER", "200"))
X, y = load_iris(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
clf = LogisticRegression(max_iter=max_iter).fit(X_train, y_train)

model = dense_classifier(clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32), "iris", logits_output=False)
onnx.checker.check_model(model)

with mlflow.start_run():
    mlflow.log_param("max_iter", str(max_iter))
    mlflow.log_metric("accuracy", float(clf.score(X_test, y_test)))
    mlflow.onnx.log_model(model, name="model")
print(f"trained with max_iter={max_iter}")
