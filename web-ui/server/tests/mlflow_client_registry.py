"""The real, unmodified mlflow client against Capstan's experiments, run search and model
registry endpoints.

Given MLFLOW_TRACKING_URI (a running Capstan MLflow API, empty store), drives MlflowClient and
the fluent API through: experiments (create, search, rename, delete, restore, tags), nested
runs, params/tags/metrics and a 1000-metric log_batch, search_runs (AND, OR, parentheses,
LIKE, ILIKE, IN, IS NULL, datasets, order_by, max_results and page tokens), dataset inputs,
the model registry (registered models, versions from a run, aliases, tags, stages, latest
versions, searches), logged models, and MLflow's error codes. Prints what it checked; exits
0 on success, 2 when mlflow is not installed, anything else on failure.

Run by tests/mlflow_client_registry.rs; by hand:
    MLFLOW_TRACKING_URI=http://127.0.0.1:PORT python3 mlflow_client_registry.py
"""

import os
import sys
import time
import warnings

try:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelStatus, Metric, Param, RunTag, ViewType
    from mlflow.exceptions import MlflowException
except ImportError as exc:  # the Rust test turns this into a failure with the fix
    print(
        f"cannot import mlflow ({exc}); install the client: "
        "pip install mlflow-skinny==3.17.2 (or run scripts/install-deps.sh)",
        file=sys.stderr,
    )
    sys.exit(2)

warnings.filterwarnings("ignore", category=FutureWarning)


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


def names(runs):
    return [r.info.run_name for r in runs]


def experiments(client):
    a = client.create_experiment("exp-alpha", tags={"team": "vision"})
    b = client.create_experiment("exp-beta", tags={"team": "nlp"})
    c = client.create_experiment("misc")
    found = client.search_experiments(filter_string="name LIKE 'exp-%'", order_by=["name DESC"])
    check([e.name for e in found] == ["exp-beta", "exp-alpha"], f"search_experiments {found}")
    found = client.search_experiments(filter_string="tags.team = 'nlp' OR name = 'misc'", order_by=["name"])
    check([e.name for e in found] == ["exp-beta", "misc"], f"OR filter {found}")
    page = client.search_experiments(max_results=2)
    check(len(page) == 2 and page.token, f"first page {page} token {page.token}")
    rest = client.search_experiments(max_results=2, page_token=page.token)
    everything = [e.experiment_id for e in page] + [e.experiment_id for e in rest]
    check(sorted(everything) == sorted(["0", a, b, c]), f"paged experiments {everything}")

    client.rename_experiment(c, "misc-renamed")
    check(client.get_experiment(c).name == "misc-renamed", "rename")
    expect_error("RESOURCE_ALREADY_EXISTS", client.rename_experiment, c, "exp-alpha")
    client.set_experiment_tag(a, "owner", "ada")
    check(client.get_experiment(a).tags.get("owner") == "ada", "set_experiment_tag")
    client.delete_experiment_tag(a, "owner")
    check("owner" not in client.get_experiment(a).tags, "delete_experiment_tag")

    client.delete_experiment(c)
    check(client.get_experiment(c).lifecycle_stage == "deleted", "deleted")
    deleted = client.search_experiments(view_type=ViewType.DELETED_ONLY)
    check([e.experiment_id for e in deleted] == [c], f"deleted view {deleted}")
    active = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    check(c not in [e.experiment_id for e in active], "not active")
    try:
        mlflow.set_experiment("misc-renamed")
        raise AssertionError("set_experiment on a deleted experiment succeeded")
    except MlflowException as exc:
        check("deleted" in str(exc), f"set_experiment on a deleted experiment: {exc}")
    client.restore_experiment(c)
    check(client.get_experiment(c).lifecycle_stage == "active", "restored")
    expect_error("RESOURCE_DOES_NOT_EXIST", client.get_experiment, "987654")
    print("experiments: ok")
    return a


def runs(client, exp_id):
    mlflow.set_experiment(experiment_id=exp_id)
    # Nested runs: the client tags the child with mlflow.parentRunId.
    with mlflow.start_run(run_name="parent") as parent:
        mlflow.log_param("lr", "0.1")
        mlflow.log_params({"model": "tree", "depth": 3})
        mlflow.set_tag("kind", "sweep")
        mlflow.log_metric("acc", 0.9)
        for lr, acc, model in [("0.01", 0.7, "Tree"), ("0.001", 0.95, "forest")]:
            with mlflow.start_run(run_name=f"child-{lr}", nested=True) as child:
                mlflow.log_params({"lr": lr, "model": model})
                mlflow.log_metric("acc", acc)
                mlflow.set_tag("kind", "trial")
                check(child.info.run_id != parent.info.run_id, "a new run")
    parent_id = parent.info.run_id
    children = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent_id}'", order_by=["metrics.acc DESC"])
    check(names(children) == ["child-0.001", "child-0.01"], f"children {names(children)}")

    # A batch of 1000 metrics, one request.
    big = client.create_run(exp_id, run_name="big")
    now = int(time.time() * 1000)
    client.log_batch(
        big.info.run_id,
        metrics=[Metric("loss", 1.0 / (i + 1), now + i, i) for i in range(1000)],
        params=[Param("batch", "1000")],
        tags=[RunTag("kind", "batch")],
    )
    history = client.get_metric_history(big.info.run_id, "loss")
    check(len(history) == 1000 and history[-1].step == 999, f"history of {len(history)}")
    client.set_terminated(big.info.run_id)

    # Filters: AND, OR, parentheses, LIKE, ILIKE, IN, IS NULL, attributes, order_by.
    def search(filter_string, order_by=None):
        return names(client.search_runs([exp_id], filter_string, order_by=order_by or ["attributes.run_name ASC"]))

    check(search("metrics.acc > 0.8") == ["child-0.001", "parent"], "metric filter")
    check(search("params.lr = '0.1' AND tags.kind = 'sweep'") == ["parent"], "AND")
    check(search("params.lr = '0.01' OR params.lr = '0.001'") == ["child-0.001", "child-0.01"], "OR")
    check(
        search("tags.kind = 'trial' AND (params.model = 'forest' OR metrics.acc < 0.8)") == ["child-0.001", "child-0.01"],
        "parentheses",
    )
    check(search("params.model LIKE 'tree%'") == ["parent"], "LIKE is case-sensitive")
    check(search("params.model ILIKE 'tree%'") == ["child-0.01", "parent"], "ILIKE")
    check(search("params.lr IN ('0.1', '0.001')") == ["child-0.001", "parent"], "IN")
    check(search("metrics.acc IS NULL") == ["big"], "IS NULL")
    check(search("attributes.status = 'FINISHED' AND run_name LIKE 'child-%'") == ["child-0.001", "child-0.01"], "attrs")
    check(
        search("", order_by=["metrics.acc DESC"]) == ["child-0.001", "parent", "child-0.01", "big"],
        "order by metric, missing last",
    )
    check(search("", order_by=["params.lr DESC"])[:1] == ["parent"], "order by param")

    # Paging: PagedList with a token, max_results.
    page = client.search_runs([exp_id], max_results=3, order_by=["attributes.run_name ASC"])
    check(len(page) == 3 and page.token, f"page 1 {names(page)} {page.token}")
    page2 = client.search_runs([exp_id], max_results=3, order_by=["attributes.run_name ASC"], page_token=page.token)
    check(names(page) + names(page2) == ["big", "child-0.001", "child-0.01", "parent"], "pages")
    check(not page2.token, "last page has no token")
    expect_error("INVALID_PARAMETER_VALUE", client.search_runs, [exp_id], max_results=50001)
    err = expect_error("INVALID_PARAMETER_VALUE", client.search_runs, [exp_id], "metrics.acc >> 1")
    check("column" in str(err), f"filter errors say where: {err}")
    # mlflow.search_runs(output_format="list") goes through the same endpoint.
    listed = mlflow.search_runs([exp_id], filter_string="tags.kind = 'trial'", output_format="list")
    check(len(listed) == 2, f"fluent search_runs {len(listed)}")

    # Delete / restore / delete a tag.
    client.delete_run(big.info.run_id)
    check("big" not in search(""), "deleted run is not active")
    check(names(client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)) == ["big"], "deleted view")
    client.restore_run(big.info.run_id)
    client.delete_tag(big.info.run_id, "kind")
    check("kind" not in client.get_run(big.info.run_id).data.tags, "delete_tag")
    expect_error("RESOURCE_DOES_NOT_EXIST", client.delete_tag, big.info.run_id, "kind")

    # Datasets as run inputs, and searching by them.
    dataset = Dataset(name="iris", digest="d1g35t", source_type="local", source='{"uri": "/data/iris"}', schema="{}")
    client.log_inputs(parent_id, [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])
    inputs = client.get_run(parent_id).inputs.dataset_inputs
    check(len(inputs) == 1 and inputs[0].dataset.name == "iris", f"inputs {inputs}")
    check(inputs[0].tags[0].key == "mlflow.data.context" and inputs[0].tags[0].value == "training", "input tags")
    check(search("datasets.name = 'iris' AND datasets.context = 'training'") == ["parent"], "datasets filter")

    # MLflow's errors: a changed param, an unknown run.
    err = expect_error("INVALID_PARAMETER_VALUE", client.log_param, parent_id, "lr", "0.5")
    check("0.1" in str(err) and "0.5" in str(err), f"changed param: {err}")
    missing = "0123456789abcdef0123456789abcdef"
    expect_error("RESOURCE_DOES_NOT_EXIST", client.get_run, missing)
    expect_error("RESOURCE_DOES_NOT_EXIST", client.log_metric, missing, "m", 1.0)
    expect_error("RESOURCE_DOES_NOT_EXIST", client.delete_run, missing)
    print("runs and search_runs: ok")
    return parent_id


def registry(client, exp_id, run_id):
    rm = client.create_registered_model("churn", tags={"team": "risk"}, description="predicts churn")
    check(rm.name == "churn" and rm.description == "predicts churn", f"registered model {rm}")
    expect_error("RESOURCE_ALREADY_EXISTS", client.create_registered_model, "churn")
    client.create_registered_model("churn-shadow")
    client.update_registered_model("churn", description="v2 description")
    check(client.get_registered_model("churn").description == "v2 description", "update_registered_model")
    client.set_registered_model_tag("churn", "tier", "gold")
    client.delete_registered_model_tag("churn", "team")
    tags = client.get_registered_model("churn").tags
    check(tags == {"tier": "gold"}, f"registered model tags {tags}")

    source = f"runs:/{run_id}/model"
    v1 = client.create_model_version("churn", source, run_id=run_id, tags={"data": "2024"}, description="first")
    v2 = client.create_model_version("churn", source, run_id=run_id)
    check((v1.version, v2.version) == ("1", "2"), f"versions {v1.version} {v2.version}")
    check(v1.status == "READY" and v1.run_id == run_id and v1.source == source, f"version {v1}")
    check(v1.tags == {"data": "2024"} and v1.description == "first", f"version tags {v1.tags}")
    client.create_model_version("churn-shadow", source, run_id=run_id)

    client.set_registered_model_alias("churn", "champion", "1")
    by_alias = client.get_model_version_by_alias("churn", "champion")
    check(by_alias.version == "1" and by_alias.aliases == ["champion"], f"by alias {by_alias}")
    client.set_registered_model_alias("churn", "champion", "2")
    check(client.get_model_version_by_alias("churn", "champion").version == "2", "moved alias")
    check(client.get_registered_model("churn").aliases == {"champion": "2"}, "aliases on the model")
    client.delete_registered_model_alias("churn", "champion")
    expect_error("INVALID_PARAMETER_VALUE", client.get_model_version_by_alias, "churn", "champion")
    expect_error("INVALID_PARAMETER_VALUE", client.set_registered_model_alias, "churn", "latest", "1")

    client.set_model_version_tag("churn", "2", "validated", "yes")
    check(client.get_model_version("churn", "2").tags == {"validated": "yes"}, "version tag")
    client.delete_model_version_tag("churn", "2", "validated")
    check(client.get_model_version("churn", "2").tags == {}, "version tag deleted")
    client.update_model_version("churn", "2", description="second")
    check(client.get_model_version("churn", "2").description == "second", "update_model_version")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        moved = client.transition_model_version_stage("churn", "1", "Production")
        check(moved.current_stage == "Production", f"stage {moved.current_stage}")
        client.transition_model_version_stage("churn", "2", "production", archive_existing_versions=True)
        check(client.get_model_version("churn", "1").current_stage == "Archived", "archived")
        latest = client.get_latest_versions("churn", stages=["Production"])
        check([v.version for v in latest] == ["2"], f"latest production {latest}")
    check(client.get_model_version_download_uri("churn", "1") == source, "download uri")

    found = client.search_registered_models(filter_string="name LIKE 'churn%'", order_by=["name DESC"])
    check([m.name for m in found] == ["churn-shadow", "churn"], f"search_registered_models {found}")
    found = client.search_registered_models(filter_string="tags.tier = 'gold'")
    check([m.name for m in found] == ["churn"], f"by tag {found}")
    page = client.search_registered_models(max_results=1)
    check(len(page) == 1 and page.token, "registered model page token")
    versions = client.search_model_versions(f"run_id = '{run_id}'", order_by=["name ASC", "version_number ASC"])
    check([(v.name, v.version) for v in versions] == [("churn", "1"), ("churn", "2"), ("churn-shadow", "1")], "mv search")
    versions = client.search_model_versions("name = 'churn' AND version_number > 1")
    check([v.version for v in versions] == ["2"], f"mv filter {versions}")

    client.rename_registered_model("churn-shadow", "churn-old")
    check(client.get_model_version("churn-old", "1").name == "churn-old", "renamed versions")
    client.delete_model_version("churn-old", "1")
    expect_error("RESOURCE_DOES_NOT_EXIST", client.get_model_version, "churn-old", "1")
    client.delete_registered_model("churn-old")
    expect_error("RESOURCE_DOES_NOT_EXIST", client.get_registered_model, "churn-old")
    expect_error("RESOURCE_DOES_NOT_EXIST", client.create_model_version, "nope", source, run_id=run_id)
    print("model registry: ok")


def logged_models(client, exp_id, run_id):
    model = client.create_logged_model(
        exp_id, name="clf", source_run_id=run_id, params={"alpha": "0.5"}, tags={"flavor": "sklearn"}, model_type="t"
    )
    check(model.model_id.startswith("m-"), f"model id {model.model_id}")
    check(model.artifact_location == f"mlflow-artifacts:/{exp_id}/models/{model.model_id}/artifacts", model.artifact_location)
    check(model.status == LoggedModelStatus.PENDING, f"status {model.status}")
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.set_logged_model_tags(model.model_id, {"stage": "candidate"})
    got = client.get_logged_model(model.model_id)
    check(got.status == LoggedModelStatus.READY and got.tags.get("stage") == "candidate", f"logged model {got}")
    check(got.params == {"alpha": "0.5"}, f"params {got.params}")
    client.delete_logged_model_tag(model.model_id, "stage")
    check("stage" not in client.get_logged_model(model.model_id).tags, "delete_logged_model_tag")
    found = client.search_logged_models([exp_id], filter_string="name = 'clf'")
    check([m.model_id for m in found] == [model.model_id], f"search_logged_models {found}")
    client.create_registered_model("from-logged")
    mv = client.create_model_version("from-logged", f"models:/{model.model_id}", model_id=model.model_id)
    check(mv.version == "1" and mv.run_id == run_id, f"version from a logged model {mv}")
    check(client.get_model_version_download_uri("from-logged", "1") == model.artifact_location, "download uri")
    print("logged models: ok")


def main():
    print(f"mlflow {mlflow.__version__} against {mlflow.get_tracking_uri()}")
    client = MlflowClient()
    from mlflow.store.tracking.rest_store import RestStore

    store = mlflow.tracking._tracking_service.utils._get_store()
    check(isinstance(store, RestStore), f"store {store}")
    version = RestStore._get_server_version(store.get_host_creds())
    check(version is not None and str(version) == mlflow.__version__, f"server version {version}")
    exp_id = experiments(client)
    run_id = runs(client, exp_id)
    registry(client, exp_id, run_id)
    logged_models(client, exp_id, run_id)
    print("mlflow client registry test passed")


if __name__ == "__main__":
    main()
