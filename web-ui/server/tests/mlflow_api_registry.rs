//! The model registry and MLflow 3 logged models over real HTTP, on SQLite and PostgreSQL:
//! registered-models/*, model-versions/*, aliases with their history (a Capstan extension),
//! and logged-models/*, with MLflow's wire shapes and error codes.

mod mlflow_api_common;

use capstan_store::test_db::Backend;
use mlflow_api_common::{assert_error, kv, message, start, Api};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    registered_models_crud_and_errors,
    registered_models_search,
    model_versions_lifecycle,
    model_versions_search,
    aliases_and_their_history,
    logged_models_and_registering_them,
);

async fn create_model(api: &Api, name: &str) -> Value {
    api.post_ok("registered-models/create", json!({"name": name})).await["registered_model"].clone()
}

async fn create_version(api: &Api, name: &str, run_id: &str) -> Value {
    let body = json!({"name": name, "source": format!("runs:/{run_id}/model"), "run_id": run_id});
    api.post_ok("model-versions/create", body).await["model_version"].clone()
}

async fn registered_models_crud_and_errors(backend: Backend) {
    let api = start(backend).await;
    let created = api
        .post_ok(
            "registered-models/create",
            json!({"name": "churn", "description": "first", "tags": [{"key": "team", "value": "risk"}]}),
        )
        .await["registered_model"]
        .clone();
    assert_eq!(created["name"], "churn");
    assert_eq!(created["description"], "first");
    assert_eq!(kv(&created["tags"], "team").as_deref(), Some("risk"));
    assert!(created["creation_timestamp"].as_i64().unwrap() > 0);

    let dup = api.post("registered-models/create", json!({"name": "churn"})).await;
    assert_error(&dup, 400, "RESOURCE_ALREADY_EXISTS");
    assert!(message(&dup).contains("churn"), "{}", dup.1);
    for bad in [json!({}), json!({"name": "  "}), json!({"name": "a/b"}), json!({"name": "a:b"})] {
        assert_error(&api.post("registered-models/create", bad).await, 400, "INVALID_PARAMETER_VALUE");
    }

    let got = api.get_ok("registered-models/get", json!({"name": "churn"})).await;
    assert_eq!(got["registered_model"]["description"], "first");
    assert_error(&api.get("registered-models/get", json!({"name": "nope"})).await, 404, "RESOURCE_DOES_NOT_EXIST");

    // update is a PATCH with a JSON body, as the client sends it.
    let updated =
        api.ok(Method::PATCH, "registered-models/update", json!({"name": "churn", "description": "second"})).await;
    assert_eq!(updated["registered_model"]["description"], "second");
    assert_error(
        &api.call(Method::PATCH, "registered-models/update", json!({"name": "nope", "description": "x"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );

    api.post_ok("registered-models/set-tag", json!({"name": "churn", "key": "stage", "value": "beta"})).await;
    api.ok(Method::DELETE, "registered-models/delete-tag", json!({"name": "churn", "key": "team"})).await;
    let got = api.get_ok("registered-models/get", json!({"name": "churn"})).await;
    assert_eq!(kv(&got["registered_model"]["tags"], "stage").as_deref(), Some("beta"));
    assert_eq!(kv(&got["registered_model"]["tags"], "team"), None);

    // rename keeps versions; a taken name is RESOURCE_ALREADY_EXISTS.
    let exp = api.experiment("e").await;
    let run = api.run(&exp, "r", 1).await;
    create_version(&api, "churn", &run).await;
    create_model(&api, "other").await;
    assert_error(
        &api.post("registered-models/rename", json!({"name": "churn", "new_name": "other"})).await,
        400,
        "RESOURCE_ALREADY_EXISTS",
    );
    let renamed = api.post_ok("registered-models/rename", json!({"name": "churn", "new_name": "churn2"})).await;
    assert_eq!(renamed["registered_model"]["name"], "churn2");
    assert_eq!(renamed["registered_model"]["latest_versions"][0]["name"], "churn2");
    let mv = api.get_ok("model-versions/get", json!({"name": "churn2", "version": "1"})).await;
    assert_eq!(mv["model_version"]["run_id"], run.as_str());
    assert_error(&api.get("registered-models/get", json!({"name": "churn"})).await, 404, "RESOURCE_DOES_NOT_EXIST");

    // delete (DELETE with a JSON body) removes versions too.
    api.ok(Method::DELETE, "registered-models/delete", json!({"name": "churn2"})).await;
    assert_error(&api.get("registered-models/get", json!({"name": "churn2"})).await, 404, "RESOURCE_DOES_NOT_EXIST");
    assert_error(
        &api.get("model-versions/get", json!({"name": "churn2", "version": "1"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    assert_error(
        &api.call(Method::DELETE, "registered-models/delete", json!({"name": "churn2"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    // The name can be used again.
    create_model(&api, "churn2").await;
    // Wrong method: 405 in MLflow's shape.
    let (status, body) = api.call(Method::GET, "registered-models/delete", json!({"name": "x"})).await;
    assert_eq!(status, 405, "{body}");
}

async fn registered_models_search(backend: Backend) {
    let api = start(backend).await;
    for (name, team) in [("alpha", "a"), ("beta", "b"), ("gamma", "a"), ("Alphabet", "c")] {
        api.post_ok("registered-models/create", json!({"name": name, "tags": [{"key": "team", "value": team}]})).await;
    }
    // A prompt is left out unless asked for.
    api.post_ok(
        "registered-models/create",
        json!({"name": "my-prompt", "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}]}),
    )
    .await;
    let search = |query: Value| {
        let api = &api;
        async move {
            let answer = api.get_ok("registered-models/search", query).await;
            answer["registered_models"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search(json!({})).await, ["Alphabet", "alpha", "beta", "gamma"]);
    assert_eq!(search(json!({"filter": "name LIKE 'alpha%'"})).await, ["alpha"]);
    assert_eq!(search(json!({"filter": "name ILIKE 'alpha%'"})).await, ["Alphabet", "alpha"]);
    assert_eq!(search(json!({"filter": "tags.team = 'a'"})).await, ["alpha", "gamma"]);
    assert_eq!(search(json!({"filter": "tags.team = 'b' OR name = 'gamma'"})).await, ["beta", "gamma"]);
    assert_eq!(search(json!({"filter": "tags.`mlflow.prompt.is_prompt` = 'true'"})).await, ["my-prompt"]);
    // What the client sends: its prompt clause is dropped and prompts left out, as MLflow does.
    let client_filter = "name ILIKE 'alpha%' AND tag.`mlflow.prompt.is_prompt` != 'true'";
    assert_eq!(search(json!({"filter": client_filter})).await, ["Alphabet", "alpha"]);
    assert_eq!(search(json!({"filter": "tag.`mlflow.prompt.is_prompt` != 'true'"})).await.len(), 4);
    assert_eq!(search(json!({"order_by": ["name DESC"]})).await, ["gamma", "beta", "alpha", "Alphabet"]);
    // Pages of 1 through a token.
    let mut seen = Vec::new();
    let mut query = json!({"max_results": 1});
    loop {
        let answer = api.get_ok("registered-models/search", query.clone()).await;
        seen.extend(answer["registered_models"].as_array().unwrap().iter().map(|m| m["name"].clone()));
        match answer.get("next_page_token") {
            Some(token) => query["page_token"] = token.clone(),
            None => break,
        }
    }
    assert_eq!(seen, ["Alphabet", "alpha", "beta", "gamma"]);
    // Errors.
    let bad = api.get("registered-models/search", json!({"filter": "name = "})).await;
    assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
    assert!(message(&bad).contains("column"), "{}", bad.1);
    assert_error(
        &api.get("registered-models/search", json!({"filter": "params.x = 'y'"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &api.get("registered-models/search", json!({"max_results": 1001})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(&api.get("registered-models/search", json!({"max_results": 0})).await, 400, "INVALID_PARAMETER_VALUE");
}

async fn model_versions_lifecycle(backend: Backend) {
    let api = start(backend).await;
    let exp = api.experiment("e").await;
    let run = api.run(&exp, "r", 1).await;
    create_model(&api, "m").await;
    let v1 = create_version(&api, "m", &run).await;
    assert_eq!(v1["version"], "1");
    assert_eq!(v1["current_stage"], "None");
    assert_eq!(v1["status"], "READY");
    assert_eq!(v1["source"], format!("runs:/{run}/model"));
    let v2 = api
        .post_ok(
            "model-versions/create",
            json!({"name": "m", "source": "s3://bucket/model", "description": "two",
                   "tags": [{"key": "k", "value": "v"}], "run_link": "http://x"}),
        )
        .await["model_version"]
        .clone();
    assert_eq!(v2["version"], "2");
    assert_eq!(v2["description"], "two");
    assert_eq!(kv(&v2["tags"], "k").as_deref(), Some("v"));
    assert_eq!(v2["run_link"], "http://x");

    // Sources MLflow refuses.
    for (body, why) in [
        (json!({"name": "m", "source": format!("runs:/{run}/model")}), "run_id"),
        (json!({"name": "m", "source": "runs:/other/model", "run_id": run}), "run_id"),
        (json!({"name": "m", "source": "/tmp/model"}), "Local"),
        (json!({"name": "m", "source": "file:///tmp/model"}), "Local"),
        (json!({"name": "m", "source": "s3://b/../../etc"}), ".."),
        (json!({"name": "m", "source": "mlflow-artifacts:/9/x/artifacts"}), "within"),
        (json!({"name": "m", "source": "models:/nope/1"}), "no existing model version"),
        (json!({"name": "m", "source": "models:/m/77"}), "no existing model version"),
        (json!({"name": "m"}), "source"),
    ] {
        let answer = api.post("model-versions/create", body.clone()).await;
        assert_error(&answer, 400, "INVALID_PARAMETER_VALUE");
        assert!(message(&answer).contains(why), "{body}: {}", answer.1);
    }
    assert_error(
        &api.post("model-versions/create", json!({"name": "nope", "source": "s3://b/m"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    let run_artifacts = api.get_ok("runs/get", json!({"run_id": run})).await["run"]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let v3 = api
        .post_ok(
            "model-versions/create",
            json!({"name": "m", "source": format!("{run_artifacts}/model"), "run_id": run}),
        )
        .await;
    assert_eq!(v3["model_version"]["version"], "3");
    // Another version as the source: it resolves to that version's artifacts and run.
    let copy = api.post_ok("model-versions/create", json!({"name": "m", "source": "models:/m/2"})).await;
    assert_eq!(copy["model_version"]["version"], "4");
    let uri = api.get_ok("model-versions/get-download-uri", json!({"name": "m", "version": "4"})).await;
    assert_eq!(uri["artifact_uri"], "s3://bucket/model");
    api.ok(Method::DELETE, "model-versions/delete", json!({"name": "m", "version": "4"})).await;

    // get / update / download uri.
    let got = api.get_ok("model-versions/get", json!({"name": "m", "version": "2"})).await;
    assert_eq!(got["model_version"]["source"], "s3://bucket/model");
    let updated =
        api.ok(Method::PATCH, "model-versions/update", json!({"name": "m", "version": "2", "description": "II"})).await;
    assert_eq!(updated["model_version"]["description"], "II");
    let uri = api.get_ok("model-versions/get-download-uri", json!({"name": "m", "version": "2"})).await;
    assert_eq!(uri["artifact_uri"], "s3://bucket/model");
    assert_error(
        &api.get("model-versions/get", json!({"name": "m", "version": "9"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    assert_error(
        &api.get("model-versions/get", json!({"name": "m", "version": "two"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );

    // Stages: transition, archive_existing_versions, latest per stage.
    let t = |version: &str, stage: &str, archive: bool| json!({"name": "m", "version": version, "stage": stage, "archive_existing_versions": archive});
    let moved = api.post_ok("model-versions/transition-stage", t("1", "production", false)).await;
    assert_eq!(moved["model_version"]["current_stage"], "Production");
    api.post_ok("model-versions/transition-stage", t("2", "Staging", false)).await;
    api.post_ok("model-versions/transition-stage", t("3", "Production", true)).await;
    let v1_now = api.get_ok("model-versions/get", json!({"name": "m", "version": "1"})).await;
    assert_eq!(v1_now["model_version"]["current_stage"], "Archived");
    let bad = api.post("model-versions/transition-stage", t("1", "Prod", false)).await;
    assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
    assert!(message(&bad).contains("None, Staging, Production, Archived"), "{}", bad.1);
    assert_error(
        &api.post("model-versions/transition-stage", t("1", "Archived", true)).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    let latest = |stages: Value| {
        let api = &api;
        async move {
            let answer =
                api.post_ok("registered-models/get-latest-versions", json!({"name": "m", "stages": stages})).await;
            answer["model_versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| (v["version"].as_str().unwrap().to_owned(), v["current_stage"].as_str().unwrap().to_owned()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(latest(json!(["Production"])).await, [("3".to_owned(), "Production".to_owned())]);
    assert_eq!(latest(json!(["staging", "production"])).await.len(), 2);
    assert_eq!(latest(json!([])).await.len(), 3);
    // GET with repeated `stages`.
    let answer = api
        .get_ok("registered-models/get-latest-versions", json!({"name": "m", "stages": ["Archived", "Staging"]}))
        .await;
    assert_eq!(answer["model_versions"].as_array().unwrap().len(), 2);
    let model = api.get_ok("registered-models/get", json!({"name": "m"})).await;
    assert_eq!(model["registered_model"]["latest_versions"].as_array().unwrap().len(), 3);

    // Tags.
    api.post_ok("model-versions/set-tag", json!({"name": "m", "version": "1", "key": "q", "value": "good"})).await;
    let got = api.get_ok("model-versions/get", json!({"name": "m", "version": "1"})).await;
    assert_eq!(kv(&got["model_version"]["tags"], "q").as_deref(), Some("good"));
    api.ok(Method::DELETE, "model-versions/delete-tag", json!({"name": "m", "version": "1", "key": "q"})).await;
    let got = api.get_ok("model-versions/get", json!({"name": "m", "version": "1"})).await;
    assert_eq!(kv(&got["model_version"]["tags"], "q"), None);
    assert_error(
        &api.post("model-versions/set-tag", json!({"name": "m", "version": "7", "key": "q", "value": "v"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );

    // Delete: the number is never reused.
    api.ok(Method::DELETE, "model-versions/delete", json!({"name": "m", "version": "3"})).await;
    assert_error(
        &api.get("model-versions/get", json!({"name": "m", "version": "3"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    let v5 = create_version(&api, "m", &run).await;
    assert_eq!(v5["version"], "5");
    assert_error(
        &api.call(Method::DELETE, "model-versions/delete", json!({"name": "m", "version": "3"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
}

async fn model_versions_search(backend: Backend) {
    let api = start(backend).await;
    let exp = api.experiment("e").await;
    let (r1, r2) = (api.run(&exp, "r1", 1).await, api.run(&exp, "r2", 2).await);
    for name in ["a", "b"] {
        create_model(&api, name).await;
    }
    create_version(&api, "a", &r1).await;
    create_version(&api, "a", &r2).await;
    create_version(&api, "b", &r1).await;
    api.post_ok("model-versions/set-tag", json!({"name": "a", "version": "2", "key": "gpu", "value": "h100"})).await;
    let search = |query: Value| {
        let api = &api;
        async move {
            let answer = api.get_ok("model-versions/search", query).await;
            answer["model_versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| format!("{}/{}", v["name"].as_str().unwrap(), v["version"].as_str().unwrap()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search(json!({"filter": "name = 'a'", "order_by": ["version_number ASC"]})).await, ["a/1", "a/2"]);
    assert_eq!(search(json!({"filter": format!("run_id = '{r1}'"), "order_by": ["name"]})).await, ["a/1", "b/1"]);
    assert_eq!(search(json!({"filter": "tags.gpu = 'h100'"})).await, ["a/2"]);
    assert_eq!(
        search(json!({"filter": "name = 'b' OR tags.gpu = 'h100'", "order_by": ["name ASC"]})).await,
        ["a/2", "b/1"]
    );
    assert_eq!(search(json!({"filter": "version_number > 1"})).await, ["a/2"]);
    assert_eq!(
        search(json!({"filter": "source_path LIKE 'runs:/%'", "order_by": ["name DESC", "version_number DESC"]})).await,
        ["b/1", "a/2", "a/1"]
    );
    assert_eq!(search(json!({"order_by": ["name", "version_number"], "max_results": 2})).await, ["a/1", "a/2"]);
    let bad = api.get("model-versions/search", json!({"filter": "version_number > 'x'"})).await;
    assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
    assert_error(
        &api.get("model-versions/search", json!({"max_results": 200_001})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
}

async fn aliases_and_their_history(backend: Backend) {
    let api = start(backend).await;
    let exp = api.experiment("e").await;
    let run = api.run(&exp, "r", 1).await;
    create_model(&api, "m").await;
    for _ in 0..3 {
        create_version(&api, "m", &run).await;
    }
    let set = |alias: &str, version: &str, user: Option<&'static str>| {
        let api = &api;
        let body = json!({"name": "m", "alias": alias, "version": version});
        async move { api.call_as(Method::POST, "registered-models/alias", body, user).await }
    };
    assert_eq!(set("champion", "1", Some("alice")).await.0, 200);
    let got = api.get_ok("registered-models/alias", json!({"name": "m", "alias": "champion"})).await;
    assert_eq!(got["model_version"]["version"], "1");
    assert_eq!(got["model_version"]["aliases"], json!(["champion"]));
    // Move it; setting the same again changes (and records) nothing.
    assert_eq!(set("champion", "2", Some("bob")).await.0, 200);
    assert_eq!(set("champion", "2", Some("bob")).await.0, 200);
    assert_eq!(set("challenger", "3", None).await.0, 200);
    let model = api.get_ok("registered-models/get", json!({"name": "m"})).await;
    assert_eq!(
        model["registered_model"]["aliases"],
        json!([{"alias": "challenger", "version": "3"}, {"alias": "champion", "version": "2"}])
    );
    let latest = api.get_ok("registered-models/alias", json!({"name": "m", "alias": "latest"})).await;
    assert_eq!(latest["model_version"]["version"], "3");

    // Refused names and targets.
    for (alias, version, status, code) in [
        ("latest", "1", 400, "INVALID_PARAMETER_VALUE"),
        ("v2", "1", 400, "INVALID_PARAMETER_VALUE"),
        ("has space", "1", 400, "INVALID_PARAMETER_VALUE"),
        ("ok", "9", 404, "RESOURCE_DOES_NOT_EXIST"),
        ("ok", "x", 400, "INVALID_PARAMETER_VALUE"),
    ] {
        assert_error(&set(alias, version, None).await, status, code);
    }
    let missing = api.get("registered-models/alias", json!({"name": "m", "alias": "nobody"})).await;
    assert_error(&missing, 400, "INVALID_PARAMETER_VALUE");
    assert_error(
        &api.get("registered-models/alias", json!({"name": "zz", "alias": "a"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );

    // Delete an alias (DELETE with a JSON body); deleting it again is fine.
    let deleted = api
        .call_as(Method::DELETE, "registered-models/alias", json!({"name": "m", "alias": "challenger"}), Some("carol"))
        .await;
    assert_eq!(deleted.0, 200, "{}", deleted.1);
    api.ok(Method::DELETE, "registered-models/alias", json!({"name": "m", "alias": "challenger"})).await;
    // Deleting version 2 removes the alias on it.
    api.call_as(Method::DELETE, "model-versions/delete", json!({"name": "m", "version": "2"}), Some("dave")).await;
    let model = api.get_ok("registered-models/get", json!({"name": "m"})).await;
    assert_eq!(model["registered_model"]["aliases"], json!([]));

    // The history: who moved what, when, from where to where; it follows a rename.
    api.post_ok("registered-models/rename", json!({"name": "m", "new_name": "m2"})).await;
    set_alias_direct(&api, "m2", "prod", "1").await;
    let history = api.get_ok("registered-models/alias-history", json!({"name": "m2"})).await;
    let events: Vec<AliasChange> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["alias"].as_str().unwrap().to_owned(),
                e["from_version"].as_str().map(str::to_owned),
                e["to_version"].as_str().map(str::to_owned),
                e["user"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        events,
        [
            ("champion".into(), None, s("1"), "alice".into(), "set".into()),
            ("champion".into(), s("1"), s("2"), "bob".into(), "set".into()),
            ("challenger".into(), None, s("3"), "unknown".into(), "set".into()),
            ("challenger".into(), s("3"), None, "carol".into(), "deleted".into()),
            ("champion".into(), s("2"), None, "dave".into(), "version deleted".into()),
            ("prod".into(), None, s("1"), "unknown".into(), "set".into()),
        ]
    );
    let first = &history["events"][0];
    assert_eq!(first["model_name"], "m");
    assert!(first["timestamp"].as_i64().unwrap() > 0);
    // It outlives the model.
    api.call_as(Method::DELETE, "registered-models/delete", json!({"name": "m2"}), Some("erin")).await;
    let after = api.get_ok("registered-models/alias-history", json!({"name": "m2"})).await;
    let last = after["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["alias"].as_str(), last["reason"].as_str(), last["user"].as_str()),
        (Some("prod"), Some("model deleted"), Some("erin"))
    );
    assert_error(
        &api.get("registered-models/alias-history", json!({"name": "never"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    assert_error(&api.get("registered-models/alias-history", json!({})).await, 400, "INVALID_PARAMETER_VALUE");
}

/// (alias, from version, to version, user, reason) of one alias-history event.
type AliasChange = (String, Option<String>, Option<String>, String, String);

async fn set_alias_direct(api: &Api, name: &str, alias: &str, version: &str) {
    api.post_ok("registered-models/alias", json!({"name": name, "alias": alias, "version": version})).await;
}

async fn logged_models_and_registering_them(backend: Backend) {
    let api = start(backend).await;
    let exp = api.experiment("lm").await;
    let run = api.run(&exp, "r", 1).await;
    let created = api
        .post_ok(
            "logged-models",
            json!({"experiment_id": exp, "name": "clf", "model_type": "sklearn", "source_run_id": run,
                   "params": [{"key": "alpha", "value": "0.5"}], "tags": [{"key": "flavor", "value": "sklearn"}]}),
        )
        .await["model"]
        .clone();
    let id = created["info"]["model_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("m-") && id.len() == 34, "{id}");
    assert_eq!(created["info"]["artifact_uri"], format!("mlflow-artifacts:/{exp}/models/{id}/artifacts"));
    assert_eq!(created["info"]["status"], "LOGGED_MODEL_PENDING");
    assert_eq!(created["info"]["source_run_id"], run.as_str());
    assert_eq!(kv(&created["data"]["params"], "alpha").as_deref(), Some("0.5"));
    assert_eq!(kv(&created["info"]["tags"], "flavor").as_deref(), Some("sklearn"));

    // Finalize (PATCH), tags (PATCH), delete a tag (DELETE path), params (POST).
    let done = api
        .ok(Method::PATCH, &format!("logged-models/{id}"), json!({"model_id": id, "status": "LOGGED_MODEL_READY"}))
        .await;
    assert_eq!(done["model"]["info"]["status"], "LOGGED_MODEL_READY");
    let tagged = api
        .ok(Method::PATCH, &format!("logged-models/{id}/tags"), json!({"tags": [{"key": "a.b/c", "value": "1"}]}))
        .await;
    assert_eq!(kv(&tagged["model"]["info"]["tags"], "a.b/c").as_deref(), Some("1"));
    api.ok(Method::DELETE, &format!("logged-models/{id}/tags/a.b/c"), json!({})).await;
    let missing_tag = api.call(Method::DELETE, &format!("logged-models/{id}/tags/a.b/c"), json!({})).await;
    assert_error(&missing_tag, 404, "RESOURCE_DOES_NOT_EXIST");
    api.post_ok(
        &format!("logged-models/{id}/params"),
        json!({"model_id": id, "params": [{"key": "beta", "value": "2"}]}),
    )
    .await;
    let got = api.get_ok(&format!("logged-models/{id}"), json!({})).await;
    assert_eq!(kv(&got["model"]["data"]["params"], "beta").as_deref(), Some("2"));
    assert_eq!(kv(&got["model"]["info"]["tags"], "a.b/c"), None);

    // Search by name (what register_model("runs:/...") asks) and by params.
    let other = api.post_ok("logged-models", json!({"experiment_id": exp, "name": "other"})).await;
    let other_id = other["model"]["info"]["model_id"].as_str().unwrap().to_owned();
    let found = api.post_ok("logged-models/search", json!({"experiment_ids": [exp], "filter": "name = 'clf'"})).await;
    assert_eq!(found["models"].as_array().unwrap().len(), 1);
    assert_eq!(found["models"][0]["info"]["model_id"], id.as_str());
    let found =
        api.post_ok("logged-models/search", json!({"experiment_ids": [exp], "filter": "params.alpha = '0.5'"})).await;
    assert_eq!(found["models"].as_array().unwrap().len(), 1);
    let all = api
        .post_ok("logged-models/search", json!({"experiment_ids": [exp], "order_by": [{"field_name": "name", "ascending": false}], "max_results": 1}))
        .await;
    assert_eq!(all["models"][0]["info"]["name"], "other");
    let token = all["next_page_token"].as_str().unwrap().to_owned();
    let rest = api.post_ok("logged-models/search", json!({"experiment_ids": [exp], "order_by": [{"field_name": "name", "ascending": false}], "page_token": token})).await;
    assert_eq!(rest["models"][0]["info"]["name"], "clf");
    assert!(rest.get("next_page_token").is_none());

    // Register it: source models:/<id>; the version points at the model's artifacts and
    // the model lists the registration.
    create_model(&api, "clf-model").await;
    let mv = api
        .post_ok(
            "model-versions/create",
            json!({"name": "clf-model", "source": format!("models:/{id}"), "model_id": id}),
        )
        .await["model_version"]
        .clone();
    assert_eq!(mv["model_id"], id.as_str());
    assert_eq!(mv["run_id"], run.as_str());
    let uri = api.get_ok("model-versions/get-download-uri", json!({"name": "clf-model", "version": "1"})).await;
    assert_eq!(uri["artifact_uri"], created["info"]["artifact_uri"]);
    let got = api.get_ok(&format!("logged-models/{id}"), json!({})).await;
    assert_eq!(got["model"]["info"]["registrations"], json!([{"name": "clf-model", "version": "1"}]));
    assert_error(
        &api.post("model-versions/create", json!({"name": "clf-model", "source": "models:/m-doesnotexist"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );

    // Delete: gone unless allow_deleted.
    api.ok(Method::DELETE, &format!("logged-models/{other_id}"), json!({"model_id": other_id})).await;
    assert_error(&api.get(&format!("logged-models/{other_id}"), json!({})).await, 404, "RESOURCE_DOES_NOT_EXIST");
    let kept = api.get_ok(&format!("logged-models/{other_id}"), json!({"allow_deleted": "true"})).await;
    assert_eq!(kept["model"]["info"]["model_id"], other_id.as_str());
    let found = api.post_ok("logged-models/search", json!({"experiment_ids": [exp]})).await;
    assert_eq!(found["models"].as_array().unwrap().len(), 1);

    // Errors name the field.
    for (body, status, code) in [
        (json!({"name": "x"}), 400, "INVALID_PARAMETER_VALUE"),
        (json!({"experiment_id": "424242"}), 404, "RESOURCE_DOES_NOT_EXIST"),
        (json!({"experiment_id": exp, "name": "bad/name"}), 400, "INVALID_PARAMETER_VALUE"),
        (json!({"experiment_id": exp, "params": [{"value": "v"}]}), 400, "INVALID_PARAMETER_VALUE"),
    ] {
        assert_error(&api.post("logged-models", body).await, status, code);
    }
    assert_error(
        &api.call(Method::PATCH, &format!("logged-models/{id}"), json!({"status": "DONE"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(&api.get("logged-models/m-nope", json!({})).await, 404, "RESOURCE_DOES_NOT_EXIST");
    assert_error(
        &api.post("logged-models/search", json!({"experiment_ids": [exp], "filter": "name = "})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &api.post(
            "logged-models/search",
            json!({"experiment_ids": [exp], "order_by": [{"field_name": "metrics.acc"}]}),
        )
        .await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
}
