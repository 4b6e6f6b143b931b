//! Tracking runs of jobs on Kubernetes, created through the Capstan server's MLflow REST API
//! (the controller has no database of its own): the same experiment, run name and tags as
//! `capstan up` gives a job.

use serde_json::{json, Value};

use crate::Error;

/// A client of the server's tracking API.
#[derive(Clone)]
pub struct Tracking {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Tracking {
    /// A client of the server at `base` (e.g. `http://capstan-server:8080`).
    pub fn new(base: &str, token: Option<String>) -> Tracking {
        Tracking { base: base.trim_end_matches('/').to_string(), token, http: reqwest::Client::new() }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(u16, Value), Error> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let mut req = self.http.request(method, &url).timeout(std::time::Duration::from_secs(10));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| Error::Tracking(format!("{url}: {e}")))?;
        let code = resp.status().as_u16();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((code, v))
    }

    async fn experiment(&self, name: &str) -> Result<String, Error> {
        let q = format!("experiments/get-by-name?experiment_name={}", urlencode(name));
        let (code, v) = self.call(reqwest::Method::GET, &q, None).await?;
        if code == 200 {
            if let Some(id) = v["experiment"]["experiment_id"].as_str() {
                return Ok(id.to_string());
            }
        }
        let (code, v) = self.call(reqwest::Method::POST, "experiments/create", Some(json!({"name": name}))).await?;
        match (code, v["experiment_id"].as_str()) {
            (200, Some(id)) => Ok(id.to_string()),
            // Created meanwhile by another caller.
            (400, _) | (409, _) => {
                let (_, v) = self.call(reqwest::Method::GET, &q, None).await?;
                v["experiment"]["experiment_id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::Tracking(format!("experiment {name}: {v}")))
            }
            _ => Err(Error::Tracking(format!("creating experiment {name}: HTTP {code}: {v}"))),
        }
    }

    /// Create the run of job `ns/name` (experiment `experiment`, default the job's name).
    pub async fn create_run(&self, ns: &str, name: &str, uid: &str, experiment: Option<&str>) -> Result<String, Error> {
        let exp = self.experiment(experiment.unwrap_or(name)).await?;
        let body = json!({
            "experiment_id": exp,
            "run_name": name,
            "start_time": chrono::Utc::now().timestamp_millis(),
            "tags": [
                {"key": "capstan.dev/job-name", "value": name},
                {"key": "capstan.dev/namespace", "value": ns},
                {"key": "capstan.dev/job-uid", "value": uid},
                {"key": "mlflow.source.name", "value": format!("TrainingJob/{ns}/{name}")},
                {"key": "mlflow.runName", "value": name},
            ],
        });
        let (code, v) = self.call(reqwest::Method::POST, "runs/create", Some(body)).await?;
        match (code, v["run"]["info"]["run_id"].as_str()) {
            (200, Some(id)) => Ok(id.to_string()),
            _ => Err(Error::Tracking(format!("creating the run of {ns}/{name}: HTTP {code}: {v}"))),
        }
    }

    /// The version a registered model's alias points at now.
    pub async fn alias_version(&self, model: &str, alias: &str) -> Result<String, Error> {
        let q = format!("registered-models/alias?name={}&alias={}", urlencode(model), urlencode(alias));
        let (code, v) = self.call(reqwest::Method::GET, &q, None).await?;
        match (code, v["model_version"]["version"].as_str()) {
            (200, Some(version)) => Ok(version.to_string()),
            _ => Err(Error::Tracking(format!("alias {model}@{alias}: HTTP {code}: {v}"))),
        }
    }

    /// The latest value of each metric of a run.
    pub async fn latest_metrics(&self, run: &str) -> Result<std::collections::BTreeMap<String, f64>, Error> {
        let (code, v) = self.call(reqwest::Method::GET, &format!("runs/get?run_id={}", urlencode(run)), None).await?;
        if code != 200 {
            return Err(Error::Tracking(format!("run {run}: HTTP {code}: {v}")));
        }
        Ok(v["run"]["data"]["metrics"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| Some((m["key"].as_str()?.to_string(), m["value"].as_f64()?)))
                    .filter(|(_, x)| x.is_finite())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Register a version of `model` from `runs:/<run>/<path>` with `tags`, and move `alias`
    /// to it; returns the version.
    pub async fn register(
        &self,
        model: &str,
        run: &str,
        path: &str,
        alias: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<i64, Error> {
        let (code, v) =
            self.call(reqwest::Method::POST, "registered-models/create", Some(json!({"name": model}))).await?;
        if code != 200 && v["error_code"] != "RESOURCE_ALREADY_EXISTS" {
            return Err(Error::Tracking(format!("creating registered model {model}: HTTP {code}: {v}")));
        }
        let tags: Vec<Value> = tags.iter().map(|(k, x)| json!({"key": k, "value": x})).collect();
        let body = json!({"name": model, "source": format!("runs:/{run}/{path}"), "run_id": run, "tags": tags});
        let (code, v) = self.call(reqwest::Method::POST, "model-versions/create", Some(body)).await?;
        let version = match (code, v["model_version"]["version"].as_str().and_then(|s| s.parse::<i64>().ok())) {
            (200, Some(n)) => n,
            _ => return Err(Error::Tracking(format!("creating a version of {model}: HTTP {code}: {v}"))),
        };
        if let Some(a) = alias {
            let body = json!({"name": model, "alias": a, "version": version.to_string()});
            let (code, v) = self.call(reqwest::Method::POST, "registered-models/alias", Some(body)).await?;
            if code != 200 {
                return Err(Error::Tracking(format!("moving {model}@{a} to {version}: HTTP {code}: {v}")));
            }
        }
        Ok(version)
    }

    /// Mirror the job's phase on its run.
    pub async fn set_status(&self, run: &str, status: &str, now: i64) -> Result<(), Error> {
        let mut body = json!({"run_id": run, "status": status});
        if status != "RUNNING" {
            body["end_time"] = json!(now * 1000);
        }
        let (code, v) = self.call(reqwest::Method::POST, "runs/update", Some(body)).await?;
        if code != 200 {
            return Err(Error::Tracking(format!("updating run {run}: HTTP {code}: {v}")));
        }
        Ok(())
    }

    /// End a run with `status` now.
    pub async fn finish_run(&self, run: &str, status: &str) -> Result<(), Error> {
        self.set_status(run, status, chrono::Utc::now().timestamp()).await
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(super::urlencode("my exp/1"), "my%20exp%2F1");
    }
}
