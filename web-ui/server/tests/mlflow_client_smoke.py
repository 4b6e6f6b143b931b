"""Smoke test of Capstan's MLflow-compatible API with the real, unmodified mlflow client.

Given MLFLOW_TRACKING_URI (a running Capstan server) and MLFLOW_RUN_ID (an existing
RUNNING run), do what a training job does -- log a metric, a param, a tag, a batch of
metrics, end the run -- then read everything back through MlflowClient and check it.
Exits 0 on success; 2 when mlflow is not installed; anything else is a failure.

Run by tests/mlflow_client.rs; by hand:
    MLFLOW_TRACKING_URI=http://127.0.0.1:PORT MLFLOW_RUN_ID=<run> python3 mlflow_client_smoke.py
"""

import math
import os
import sys

try:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
except ImportError as exc:  # the Rust test turns this into a failure with the fix
    print(
        f"cannot import mlflow ({exc}); install the client: "
        "pip install mlflow-skinny==3.17.2 (or run scripts/install-deps.sh)",
        file=sys.stderr,
    )
    sys.exit(2)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except MlflowException as exc:
        check(exc.error_code == code, f"expected {code}, got {exc.error_code}: {exc}")
        return exc
    raise AssertionError(f"expected {code} from {fn.__name__}{args}, got success")


def main():
    if os.environ.get("SMOKE_TRACE_HTTP"):
        import logging

        # One line per request: "GET /api/2.0/mlflow/runs/get?... 200".
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.DEBUG)
    run_id = os.environ["MLFLOW_RUN_ID"]
    print(f"mlflow {mlflow.__version__} against {mlflow.get_tracking_uri()}, run {run_id}")

    # What a training job does; MLFLOW_RUN_ID makes the fluent API resume the run.
    mlflow.log_metric("loss", 0.5, step=1)
    mlflow.log_param("lr", "0.1")
    mlflow.log_param("lr", "0.1")  # the same value again is fine
    mlflow.set_tag("t", "v")
    mlflow.log_metrics({"loss": 0.25, "acc": 0.9}, step=2)
    mlflow.log_metric("odd", float("nan"), step=0)
    mlflow.log_metric("odd", float("inf"), step=1)
    mlflow.log_params({"batch_size": 32, "optimizer": "adam"})
    mlflow.set_tags({"stage": "smoke"})
    check(mlflow.active_run().info.run_id == run_id, "the fluent API resumed MLFLOW_RUN_ID")
    mlflow.end_run()

    client = MlflowClient()
    run = client.get_run(run_id)
    check(run.info.run_id == run_id, f"run id {run.info.run_id}")
    check(run.info.status == "FINISHED", f"status {run.info.status}")
    check(run.info.end_time is not None and run.info.end_time >= run.info.start_time, "end_time set")
    check(run.info.lifecycle_stage == "active", f"lifecycle {run.info.lifecycle_stage}")
    check(run.info.run_name and run.data.tags.get("mlflow.runName") == run.info.run_name, "run name tag")
    check(
        run.data.params == {"lr": "0.1", "batch_size": "32", "optimizer": "adam"},
        f"params {run.data.params}",
    )
    check(run.data.tags.get("t") == "v", f"tags {run.data.tags}")
    check(run.data.tags.get("stage") == "smoke", f"tags {run.data.tags}")
    check(run.data.metrics.get("loss") == 0.25, f"metrics {run.data.metrics}")
    check(run.data.metrics.get("acc") == 0.9, f"metrics {run.data.metrics}")
    check(run.data.metrics.get("odd") == math.inf, f"metrics {run.data.metrics}")

    history = client.get_metric_history(run_id, "loss")
    check([(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25)], f"loss history {history}")
    check(all(m.timestamp > 0 for m in history), "timestamps")
    odd = client.get_metric_history(run_id, "odd")
    check(len(odd) == 2 and math.isnan(odd[0].value) and odd[1].value == math.inf, f"odd {odd}")
    check(client.get_metric_history(run_id, "never-logged") == [], "unknown metric: empty")

    # Paging through the store the client uses (max_results / page_token).
    store = mlflow.tracking._tracking_service.utils._get_store()
    page = store.get_metric_history(run_id, "loss", max_results=1)
    check(len(page) == 1 and page.token, f"first page {page} token {page.token}")
    page2 = store.get_metric_history(run_id, "loss", max_results=1, page_token=page.token)
    check([m.step for m in page2] == [2] and not page2.token, f"second page {page2}")

    # Errors come back as MLflow's error codes.
    err = expect_error("INVALID_PARAMETER_VALUE", client.log_param, run_id, "lr", "0.2")
    check("0.1" in str(err) and "0.2" in str(err), f"message names both values: {err}")
    expect_error("RESOURCE_DOES_NOT_EXIST", client.get_run, "0123456789abcdef0123456789abcdef")

    # Experiments and a fresh run through the client.
    exp_id = client.create_experiment("smoke-experiment", tags={"team": "ml"})
    exp = client.get_experiment(exp_id)
    check(exp.name == "smoke-experiment" and exp.tags == {"team": "ml"}, f"experiment {exp}")
    check(client.get_experiment_by_name("smoke-experiment").experiment_id == exp_id, "by name")
    check(client.get_experiment_by_name("no-such-experiment") is None, "missing by name is None")
    expect_error("RESOURCE_ALREADY_EXISTS", client.create_experiment, "smoke-experiment")
    new = client.create_run(exp_id)
    check(new.info.status == "RUNNING" and new.info.run_name.count("-") == 2, f"new run {new.info}")
    client.log_batch(
        new.info.run_id,
        metrics=[mlflow.entities.Metric("m", float(i), 1000 + i, i) for i in range(3)],
    )
    client.set_terminated(new.info.run_id, "FAILED")
    check(client.get_run(new.info.run_id).info.status == "FAILED", "set_terminated")
    check(len(client.get_metric_history(new.info.run_id, "m")) == 3, "batch history")

    # The fluent API end to end in the new experiment (no longer resuming MLFLOW_RUN_ID).
    # (end_run already dropped MLFLOW_RUN_ID from the environment; make sure.)
    os.environ.pop("MLFLOW_RUN_ID", None)
    mlflow.set_experiment(experiment_id=exp_id)
    with mlflow.start_run(run_name="fluent") as active:
        mlflow.log_metric("x", 1.0)
    fluent = client.get_run(active.info.run_id)
    check(fluent.info.run_name == "fluent" and fluent.info.status == "FINISHED", f"fluent {fluent.info}")
    check(fluent.data.metrics == {"x": 1.0}, f"fluent metrics {fluent.data.metrics}")

    print("mlflow client smoke test passed")


if __name__ == "__main__":
    main()
