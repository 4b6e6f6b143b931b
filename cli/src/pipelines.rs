//! `capstan secret ...`, `capstan pipeline run ...` and the table views of secrets,
//! pipelines and pipeline runs in `capstan get`.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::Client;

/// `capstan secret`.
#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Create a secret from literal values (like `kubectl create secret generic`). Values are
    /// never shown again by any command or API.
    Create {
        /// Secret name.
        name: String,
        /// KEY=VALUE, repeatable.
        #[arg(long = "from-literal", required = true)]
        from_literal: Vec<String>,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Delete a secret.
    Delete {
        /// Secret name.
        name: String,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

/// `capstan pipeline`.
#[derive(Subcommand, Debug)]
pub enum PipelineCommand {
    /// Start a run of a pipeline by hand.
    Run {
        /// Pipeline name.
        name: String,
        /// Parameter value, KEY=VALUE, repeatable.
        #[arg(long = "param")]
        params: Vec<String>,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

/// Splits `KEY=VALUE` (the value may contain `=`).
pub fn key_value(s: &str, flag: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{flag} {s:?}: expected KEY=VALUE"),
    }
}

/// Runs `capstan secret ...`.
pub async fn secret(client: &Client, cmd: SecretCommand) -> Result<i32> {
    match cmd {
        SecretCommand::Create { name, from_literal, namespace } => {
            let mut data = BTreeMap::new();
            for lit in &from_literal {
                let (k, v) = key_value(lit, "--from-literal")?;
                if data.insert(k.clone(), v).is_some() {
                    bail!("--from-literal: key {k:?} given twice");
                }
            }
            client
                .post_json(&format!("/api/v1/namespaces/{namespace}/secrets"), &json!({"name": name, "data": data}))
                .await?;
            println!("secret/{name} created");
        }
        SecretCommand::Delete { name, namespace } => {
            client.delete_path(&format!("/api/v1/namespaces/{namespace}/secrets/{name}")).await?;
            println!("secret/{name} deleted");
        }
    }
    Ok(0)
}

/// Runs `capstan pipeline ...`.
pub async fn pipeline(client: &Client, cmd: PipelineCommand) -> Result<i32> {
    match cmd {
        PipelineCommand::Run { name, params, namespace } => {
            let mut parameters = BTreeMap::new();
            for p in &params {
                let (k, v) = key_value(p, "--param")?;
                parameters.insert(k, v);
            }
            let r = client
                .post_json(
                    &format!("/api/v1/namespaces/{namespace}/pipelines/{name}/runs"),
                    &json!({"parameters": parameters}),
                )
                .await?;
            println!("pipelinerun/{} created", r["name"].as_str().unwrap_or("?"));
        }
    }
    Ok(0)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `capstan get secrets|pipelines|pipelineruns` as a table: None for other kinds (the
/// generic path handles them, and every kind's -o json/yaml).
pub async fn get_table(
    client: &Client,
    kind: &str,
    name: Option<&str>,
    ns: &str,
    all_ns: bool,
) -> Result<Option<Vec<Vec<String>>>> {
    let kind = kind.to_ascii_lowercase();
    let list = |v: Value| -> Vec<Value> {
        match v.get("items").and_then(Value::as_array) {
            Some(items) => items.clone(),
            None => vec![v],
        }
    };
    let ns_opt = (!all_ns).then_some(ns);
    let mut rows: Vec<Vec<String>> = Vec::new();
    match kind.as_str() {
        "secrets" | "secret" => {
            let path = match ns_opt {
                Some(ns) => format!("/api/v1/namespaces/{ns}/secrets"),
                None => "/api/v1/secrets".to_string(),
            };
            rows.push(vec!["NAMESPACE".into(), "NAME".into(), "KEYS".into()]);
            for it in list(client.get_path(&path).await?) {
                if name.is_some_and(|n| it["metadata"]["name"] != n) {
                    continue;
                }
                let keys: Vec<String> = it["keys"].as_array().into_iter().flatten().map(cell).collect();
                rows.push(vec![cell(&it["metadata"]["namespace"]), cell(&it["metadata"]["name"]), keys.join(",")]);
            }
        }
        "pipelines" | "pipeline" | "pl" => {
            let body = match name {
                Some(n) => client.get_one("pipelines", Some(ns), n).await?,
                None => client.list("pipelines", ns_opt).await?,
            };
            rows.push(vec!["NAMESPACE".into(), "NAME".into(), "STEPS".into(), "REPO".into()]);
            for it in list(body) {
                let steps: Vec<String> =
                    it["spec"]["steps"].as_array().into_iter().flatten().map(|s| cell(&s["name"])).collect();
                rows.push(vec![
                    cell(&it["metadata"]["namespace"]),
                    cell(&it["metadata"]["name"]),
                    steps.join(","),
                    cell(&it["spec"]["triggers"][0]["git"]["repo"]),
                ]);
            }
        }
        "pipelineruns" | "pipelinerun" | "plr" => {
            let body = match name {
                Some(n) => client.get_one("pipelineruns", Some(ns), n).await?,
                None => client.list("pipelineruns", ns_opt).await?,
            };
            rows.push(
                ["NAMESPACE", "NAME", "PIPELINE", "COMMIT", "BRANCH", "PHASE", "STEPS"].map(String::from).to_vec(),
            );
            for it in list(body) {
                let steps: Vec<String> = it["status"]["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| format!("{}={}", cell(&s["name"]), s["phase"].as_str().unwrap_or("Pending")))
                    .collect();
                let sha = it["spec"]["commit"]["sha"].as_str().unwrap_or("");
                rows.push(vec![
                    cell(&it["metadata"]["namespace"]),
                    cell(&it["metadata"]["name"]),
                    cell(&it["spec"]["pipelineRef"]),
                    sha.chars().take(7).collect(),
                    it["spec"]["commit"]["branch"].as_str().unwrap_or("").to_string(),
                    it["status"]["phase"].as_str().unwrap_or("Pending").to_string(),
                    steps.join(","),
                ]);
            }
        }
        _ => return Ok(None),
    }
    Ok(Some(rows))
}

/// `capstan describe pipelinerun NAME`: the audit chain, commit -> each step's job and
/// tracking run -> model version -> deployment, then conditions and events. None for other
/// kinds.
pub async fn describe(client: &Client, kind: &str, name: &str, ns: &str) -> Result<Option<String>> {
    if !matches!(kind.to_ascii_lowercase().as_str(), "pipelineruns" | "pipelinerun" | "plr") {
        return Ok(None);
    }
    let run = client.get_one("pipelineruns", Some(ns), name).await?;
    let spec = &run["spec"];
    let st = &run["status"];
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
    line(&mut out, "Name:", cell(&run["metadata"]["name"]));
    line(&mut out, "Namespace:", cell(&run["metadata"]["namespace"]));
    line(&mut out, "Pipeline:", cell(&spec["pipelineRef"]));
    let trig = &spec["trigger"];
    let mut by = trig["source"].as_str().unwrap_or("manual").to_string();
    if let Some(p) = trig["provider"].as_str() {
        by.push_str(&format!(" ({p}"));
        if let Some(d) = trig["deliveryId"].as_str() {
            by.push_str(&format!(", delivery {d}"));
        }
        by.push(')');
    }
    line(&mut out, "Started by:", by);
    let c = &spec["commit"];
    if c.is_object() {
        line(&mut out, "Commit:", format!("{} on {}", cell(&c["sha"]), c["branch"].as_str().unwrap_or("?")));
        if let Some(a) = c["author"].as_str() {
            line(&mut out, "Author:", a.to_string());
        }
        if let Some(m) = c["message"].as_str() {
            line(&mut out, "Message:", m.lines().next().unwrap_or("").to_string());
        }
        if let Some(r) = c["repo"].as_str() {
            line(&mut out, "Repository:", r.to_string());
        }
    }
    line(&mut out, "Phase:", st["phase"].as_str().unwrap_or("Pending").to_string());
    if let Some(m) = st["message"].as_str() {
        line(&mut out, "Message:", m.to_string());
    }
    let header = ["STEP", "PHASE", "ATTEMPTS", "JOB", "RUN", "PRODUCED", "REASON"];
    let mut table_rows = vec![header.map(String::from).to_vec()];
    for s in st["steps"].as_array().into_iter().flatten() {
        let mut produced = Vec::new();
        if let Some(mv) = s.get("modelVersion").filter(|v| v.is_object()) {
            produced.push(format!("{} v{}", cell(&mv["name"]), cell(&mv["version"])));
        }
        if let Some(a) = s["alias"].as_str() {
            produced.push(format!("@{a}"));
        }
        if let Some(d) = s["deployment"].as_str() {
            produced.push(format!("deployment {d}"));
        }
        let metrics: Vec<String> = s["metrics"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_f64().map(|x| format!("{x:.4}")).unwrap_or_default()))
            .collect();
        produced.extend(metrics);
        table_rows.push(vec![
            cell(&s["name"]),
            s["phase"].as_str().unwrap_or("Pending").to_string(),
            s["attempts"].as_u64().unwrap_or(0).to_string(),
            s["jobName"].as_str().unwrap_or("").to_string(),
            s["runId"].as_str().unwrap_or("").to_string(),
            produced.join(" "),
            s["reason"].as_str().unwrap_or("").to_string(),
        ]);
    }
    out.push_str("Steps:\n");
    out.push_str(&indent_table(&table_rows));
    let skipped: Vec<String> = st["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["phase"] == "Skipped" || s["phase"] == "Failed")
        .map(|s| format!("  {}: {}\n", cell(&s["name"]), s["message"].as_str().unwrap_or("")))
        .collect();
    if !skipped.is_empty() {
        out.push_str("Why skipped or failed:\n");
        out.push_str(&skipped.concat());
    }
    let events =
        client.get_path(&format!("/apis/capstan.dev/v1alpha1/namespaces/{ns}/pipelineruns/{name}/events")).await?;
    out.push_str("Events:\n");
    let items = events["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        out.push_str("  <none>\n");
    }
    for e in items {
        out.push_str(&format!(
            "  {:<8} {:<16} {}\n",
            cell(e.get("type_").unwrap_or(&e["type"])),
            cell(&e["reason"]),
            cell(&e["message"])
        ));
    }
    Ok(Some(out))
}

fn indent_table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r.iter().enumerate().map(|(i, v)| format!("{v:w$}", w = widths[i])).collect();
        out.push_str("  ");
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(key_value("a=b=c", "--param").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(key_value("a=", "--param").unwrap(), ("a".into(), "".into()));
        assert!(key_value("=b", "--param").unwrap_err().to_string().contains("expected KEY=VALUE"));
        assert!(key_value("ab", "--from-literal").is_err());
    }
}
