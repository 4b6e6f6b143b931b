"""Creates the browser tests' data through the real mlflow client and prints it as JSON.

    python3 make_data.py <tracking-uri> <suffix> <loss-points>

An experiment with three runs (params lr/batch_size/optimizer; metrics loss and lr with
<loss-points> steps on the first run, acc, f1), a text and a JSON artifact, and a registered
model with two versions.
"""

import json
import sys

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

uri, suffix, n_points = sys.argv[1], sys.argv[2], int(sys.argv[3])
mlflow.set_tracking_uri(uri)
client = MlflowClient(uri)

exp_name = f"ui-e2e-{suffix}"
exp_id = client.create_experiment(exp_name)
runs = {}
specs = [("alpha", "0.1", "32", "adam"), ("beta", "0.3", "32", "adam"), ("gamma", "0.5", "64", "sgd")]
for i, (name, lr, bs, opt) in enumerate(specs):
    run = client.create_run(exp_id, run_name=name)
    rid = run.info.run_id
    params = [Param("lr", lr), Param("batch_size", bs), Param("optimizer", opt)]
    points = n_points if i == 0 else 50
    metrics = [Metric("loss", 1.0 / (s + 1) + 0.01 * i, 1_700_000_000_000 + s * 1000, s) for s in range(points)]
    metrics += [Metric("acc", 0.5 + 0.1 * i, 1_700_000_000_000, 0), Metric("f1", 0.4 + 0.1 * i, 1_700_000_000_000, 0)]
    # A learning-rate schedule logged at the same steps as loss: the charts' x axis can be it.
    metrics += [Metric("lr", 0.1 * 0.99**s, 1_700_000_000_000 + s * 1000, s) for s in range(points)]
    for start in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[start : start + 1000], params=params if start == 0 else [])
    if i == 0:
        client.log_text(rid, "hello from the artifacts browser\n", "notes/readme.txt")
        client.log_dict(rid, {"layers": 3, "activation": "relu"}, "config.json")
    client.set_terminated(rid, "FINISHED")
    runs[name] = rid

# A run with thousands of metric keys (MLflow's UI breaks on those, mlflow #11927).
wide_exp = client.create_experiment(f"ui-wide-{suffix}")
wide = client.create_run(wide_exp, run_name="wide").info.run_id
wide_metrics = [Metric(f"k{k:04d}", k / 10.0, 1_700_000_000_000, 0) for k in range(3000)]
for start in range(0, len(wide_metrics), 1000):
    client.log_batch(wide, metrics=wide_metrics[start : start + 1000])
client.set_terminated(wide, "FINISHED")

model = f"ui-model-{suffix}"
client.create_registered_model(model)
for name in ("alpha", "beta"):
    client.create_model_version(model, f"runs:/{runs[name]}/model", run_id=runs[name])

print(json.dumps({"wide_experiment_id": wide_exp, "wide_keys": 3000, "experiment_id": exp_id, "experiment_name": exp_name, "runs": runs, "model": model, "loss_points": n_points}))
