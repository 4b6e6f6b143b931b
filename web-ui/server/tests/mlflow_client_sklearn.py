"""scikit-learn through the real mlflow client, end to end against Capstan: train a model,
`mlflow.sklearn.log_model` it (a logged model, its artifacts uploaded through the artifacts
proxy), register it twice (from `runs:/<run>/model` and from `models:/<model_id>`), point an
alias at a version, and load it back by alias and by model id, predicting the same classes.

Needs mlflow-skinny==3.17.2, scikit-learn, pandas and skops (MLflow 3 saves scikit-learn
models in the safe skops format by default). Exits 0 on success, 2 when a module is
missing, anything else on failure. Run by tests/mlflow_client_sklearn.rs; by hand:
    MLFLOW_TRACKING_URI=http://127.0.0.1:PORT python3 mlflow_client_sklearn.py
"""

import sys
import warnings

try:
    import mlflow
    import mlflow.sklearn
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
except ImportError as exc:
    print(
        f"cannot import a module ({exc}); install: pip install mlflow-skinny==3.17.2 scikit-learn pandas skops "
        "(or run scripts/install-deps.sh)",
        file=sys.stderr,
    )
    sys.exit(2)

warnings.filterwarnings("ignore")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    print(f"mlflow {mlflow.__version__} against {mlflow.get_tracking_uri()}")
    client = MlflowClient()
    X, y = load_iris(return_X_y=True)
    mlflow.set_experiment("sklearn")
    with mlflow.start_run(run_name="iris") as run:
        model = LogisticRegression(max_iter=300).fit(X, y)
        mlflow.log_param("max_iter", 300)
        mlflow.log_metric("train_accuracy", model.score(X, y))
        info = mlflow.sklearn.log_model(model, name="model", signature=infer_signature(X, model.predict(X)))
    run_id = run.info.run_id
    logged = client.get_logged_model(info.model_id)
    check(logged.status == LoggedModelStatus.READY, f"logged model status {logged.status}")
    check(logged.source_run_id == run_id, f"source run {logged.source_run_id}")
    check(logged.artifact_location.endswith(f"/models/{info.model_id}/artifacts"), logged.artifact_location)
    outputs = client.get_run(run_id).outputs.model_outputs
    check([o.model_id for o in outputs] == [info.model_id], f"run outputs {outputs}")

    # Register from the run (resolved through search_logged_models) and from the model id.
    v1 = mlflow.register_model(f"runs:/{run_id}/model", "iris-clf")
    v2 = mlflow.register_model(info.model_uri, "iris-clf")
    check((v1.version, v2.version) == ("1", "2"), f"versions {v1.version} {v2.version}")
    check(v1.run_id == run_id and v2.run_id == run_id, "versions know their run")
    uri = client.get_model_version_download_uri("iris-clf", "2")
    check(uri == logged.artifact_location, f"download uri {uri}")
    client.set_registered_model_alias("iris-clf", "champion", v2.version)

    expected = model.predict(X[:10])
    by_alias = mlflow.pyfunc.load_model("models:/iris-clf@champion")
    check(np.array_equal(by_alias.predict(X[:10]), expected), "predictions by alias")
    by_id = mlflow.sklearn.load_model(f"models:/{info.model_id}")
    check(np.array_equal(by_id.predict(X[:10]), expected), "predictions by model id")
    by_version = mlflow.sklearn.load_model("models:/iris-clf/1")
    check(np.array_equal(by_version.predict(X[:10]), expected), "predictions by version")
    registrations = client.get_logged_model(info.model_id).tags.get("mlflow.modelVersions", "")
    check('"iris-clf"' in registrations, f"registrations tag {registrations}")
    print("mlflow client sklearn test passed")


if __name__ == "__main__":
    main()
