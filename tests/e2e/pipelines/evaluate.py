"""Pipeline step `evaluate` of tests/e2e/tests/pipelines.rs: loads the ONNX model the train step
logged (its run id comes from CAPSTAN_STEP_TRAIN_RUN_ID) through the tracking server, runs it
with onnxruntime on held-out data and logs the accuracy to this job's own run."""
import os

import mlflow
import mlflow.onnx
import numpy as np
import onnxruntime as ort
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

train_run = os.environ["CAPSTAN_STEP_TRAIN_RUN_ID"]
model = mlflow.onnx.load_model(f"runs:/{train_run}/model")
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
X, y = load_iris(return_X_y=True)
_, X_test, _, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
(labels,) = session.run(["label"], {"input": X_test.astype(np.float32)})
accuracy = float((labels == y_test).mean())
with mlflow.start_run():
    mlflow.log_param("model_run", train_run)
    mlflow.log_metric("accuracy", accuracy)
print(f"accuracy of the model of run {train_run}: {accuracy:.3f}")
