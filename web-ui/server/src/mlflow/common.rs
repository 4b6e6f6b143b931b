//! What the endpoints beyond the first run API share: reading any request (query string and
//! JSON body together), repeated fields, search parameters (filter, order_by, max_results,
//! page tokens) and the JSON shapes of registry objects, logged models and run inputs.

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, QueryRejection},
        Query,
    },
    http::{header, HeaderMap},
};
use capstan_search::{OrderBy, ParseError, SearchTarget};
use capstan_store::registry::{LoggedModelRecord, ModelVersionRecord, RegisteredModelRecord};
use capstan_store::runs_search::{decode_page_token, encode_page_token, RunIo, ViewType};
use serde_json::{json, Map, Value};

use super::{as_array, as_string, key_value, key_values_json, ApiError, Fields};

/// The query string of a request, as axum hands it over.
pub(super) type QueryParams = Result<Query<Vec<(String, String)>>, QueryRejection>;
/// The body of a request, as axum hands it over.
pub(super) type Body = Result<Bytes, BytesRejection>;

impl Fields {
    /// The fields of any request: the JSON body (if any) and the query string, the body
    /// winning where both name a field. DELETE and PATCH requests of the client carry JSON
    /// bodies, GETs query strings; either is accepted everywhere.
    pub(super) fn from_request(query: QueryParams, body: Body) -> Result<Fields, ApiError> {
        let mut fields = Fields::from_body(body)?;
        let from_query = Fields::from_query(query)?;
        for (k, v) in from_query.map {
            fields.map.entry(k).or_insert(v);
        }
        for (k, v) in from_query.lists {
            fields.lists.entry(k).or_insert(v);
        }
        Ok(fields)
    }

    /// A repeated string field: a JSON array of strings, or every occurrence of the key in
    /// the query string. Absent is empty.
    pub(super) fn str_list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let listed = self.lists.get(name).or_else(|| self.lists.get(&super::lower_camel(name)));
        let value = match (self.raw(name), listed) {
            (Some(Value::String(_)), Some(list)) => list,
            (Some(v), _) => v,
            (None, _) => return Ok(Vec::new()),
        };
        as_array(value, name)?.iter().enumerate().map(|(i, item)| as_string(item, &format!("{name}[{i}]"))).collect()
    }

    /// A boolean: JSON true/false or the strings "true"/"false" (any case).
    pub(super) fn opt_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::invalid(format!(
                "Invalid value {v} for parameter '{name}' supplied: expected true or false."
            ))),
        }
    }

    /// A list of `{key, value}` objects under `name` (tags, params), as the client sends
    /// them; absent is empty.
    pub(super) fn pairs(&self, name: &str) -> Result<Vec<(String, String)>, ApiError> {
        match self.raw(name) {
            None => Ok(Vec::new()),
            Some(v) => as_array(v, name)?
                .iter()
                .enumerate()
                .map(|(i, item)| key_value(item, &format!("{name}[{i}]")))
                .collect(),
        }
    }

    /// An optional string that is absent when empty (protobuf cannot tell them apart).
    pub(super) fn non_empty(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(self.opt_str(name)?.filter(|s| !s.is_empty()))
    }

    /// `max_results`: `default` when absent, else 1..=`limit`.
    pub(super) fn max_results(&self, default: usize, limit: usize) -> Result<usize, ApiError> {
        let Some(n) = self.opt_i64("max_results")? else {
            return Ok(default);
        };
        if n < 1 {
            return Err(ApiError::invalid(format!(
                "Invalid value {n} for parameter 'max_results' supplied. It must be a positive integer"
            )));
        }
        if n as u64 > limit as u64 {
            return Err(ApiError::invalid(format!(
                "Invalid value {n} for parameter 'max_results' supplied. It must be at most {limit}"
            )));
        }
        Ok(n as usize)
    }

    /// The offset in `page_token` (0 when absent).
    pub(super) fn page_offset(&self) -> Result<u64, ApiError> {
        match self.non_empty("page_token")? {
            None => Ok(0),
            Some(token) => decode_page_token(&token).ok_or_else(|| {
                ApiError::invalid(format!("Invalid page token '{token}': it was not made by this server."))
            }),
        }
    }

    /// A ViewType field (`ACTIVE_ONLY`, `DELETED_ONLY`, `ALL`, or 1, 2, 3); ACTIVE_ONLY when absent.
    pub(super) fn view_type(&self, name: &str) -> Result<ViewType, ApiError> {
        let Some(v) = self.raw(name) else {
            return Ok(ViewType::ActiveOnly);
        };
        let parsed = match v {
            Value::String(s) => match s.to_ascii_uppercase().as_str() {
                "ACTIVE_ONLY" | "1" => Some(ViewType::ActiveOnly),
                "DELETED_ONLY" | "2" => Some(ViewType::DeletedOnly),
                "ALL" | "3" => Some(ViewType::All),
                _ => None,
            },
            Value::Number(n) => match n.as_u64() {
                Some(1) => Some(ViewType::ActiveOnly),
                Some(2) => Some(ViewType::DeletedOnly),
                Some(3) => Some(ViewType::All),
                _ => None,
            },
            _ => None,
        };
        parsed.ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid value {v} for parameter '{name}' supplied: expected ACTIVE_ONLY, DELETED_ONLY or ALL."
            ))
        })
    }

    /// The parsed `filter` for `target` (None when absent or blank).
    pub(super) fn filter(&self, target: SearchTarget) -> Result<Option<capstan_search::Expr>, ApiError> {
        let text = self.opt_str("filter")?.unwrap_or_default();
        capstan_search::parse_filter_for(target, &text).map_err(|e| filter_error(&text, &e))
    }

    /// The parsed `order_by` entries for `target`; a field given twice is refused.
    pub(super) fn order_by(&self, target: SearchTarget) -> Result<Vec<OrderBy>, ApiError> {
        let items = self.str_list("order_by")?;
        let parsed = capstan_search::parse_order_by_for(target, &items)
            .map_err(|e| ApiError::invalid(format!("Invalid order_by clause: {e}")))?;
        for (i, o) in parsed.iter().enumerate() {
            if parsed[..i].iter().any(|p| p.entity == o.entity && p.key == o.key) {
                return Err(ApiError::invalid(format!("`order_by` contains duplicate fields: {items:?}")));
            }
        }
        Ok(parsed)
    }
}

/// INVALID_PARAMETER_VALUE for a filter that does not parse, with the position.
pub(super) fn filter_error(text: &str, e: &ParseError) -> ApiError {
    let mut shown: String = text.chars().take(200).collect();
    if shown.len() < text.len() {
        shown.push_str("...");
    }
    ApiError::invalid(format!("Invalid filter '{shown}': {e}"))
}

/// Put `next_page_token` into a search answer when there is a next page.
pub(super) fn with_token(mut answer: Value, next_offset: Option<u64>) -> Value {
    if let Some(offset) = next_offset {
        answer["next_page_token"] = json!(encode_page_token(offset));
    }
    answer
}

/// Who made a request, for audit records: the user name of HTTP basic auth (the mlflow
/// client sends MLFLOW_TRACKING_USERNAME that way), else "unknown".
pub(super) fn request_user(headers: &HeaderMap) -> String {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| base64_decode(b.trim()))
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|s| s.split_once(':').map(|(user, _)| user.to_owned()))
        .filter(|u| !u.is_empty());
    basic.unwrap_or_else(|| "unknown".to_owned())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => continue,
            _ => return None,
        } as u32;
        buf = ((buf << 6) | v) & 0xFFFF;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// JSON shapes
// ---------------------------------------------------------------------------------------

fn set_opt(obj: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        obj.insert(key.to_owned(), json!(v));
    }
}

/// A ModelVersion.
pub(super) fn model_version_json(v: &ModelVersionRecord) -> Value {
    let mut obj = Map::new();
    obj.insert("name".into(), json!(v.name));
    obj.insert("version".into(), json!(v.version.to_string()));
    obj.insert("creation_timestamp".into(), json!(v.creation_timestamp));
    obj.insert("last_updated_timestamp".into(), json!(v.last_updated_timestamp));
    if !v.user_id.is_empty() {
        obj.insert("user_id".into(), json!(v.user_id));
    }
    obj.insert("current_stage".into(), json!(v.current_stage));
    set_opt(&mut obj, "description", v.description.as_deref());
    obj.insert("source".into(), json!(v.source));
    set_opt(&mut obj, "run_id", v.run_id.as_deref());
    obj.insert("status".into(), json!(v.status));
    set_opt(&mut obj, "status_message", v.status_message.as_deref());
    obj.insert("tags".into(), key_values_json(&v.tags));
    set_opt(&mut obj, "run_link", v.run_link.as_deref());
    obj.insert("aliases".into(), json!(v.aliases));
    set_opt(&mut obj, "model_id", v.model_id.as_deref());
    Value::Object(obj)
}

/// A RegisteredModel.
pub(super) fn registered_model_json(m: &RegisteredModelRecord) -> Value {
    let mut obj = Map::new();
    obj.insert("name".into(), json!(m.name));
    obj.insert("creation_timestamp".into(), json!(m.creation_timestamp));
    obj.insert("last_updated_timestamp".into(), json!(m.last_updated_timestamp));
    set_opt(&mut obj, "description", m.description.as_deref());
    obj.insert("latest_versions".into(), m.latest_versions.iter().map(model_version_json).collect());
    obj.insert("tags".into(), key_values_json(&m.tags));
    obj.insert(
        "aliases".into(),
        m.aliases.iter().map(|(alias, version)| json!({ "alias": alias, "version": version.to_string() })).collect(),
    );
    Value::Object(obj)
}

/// A LoggedModel.
pub(super) fn logged_model_json(m: &LoggedModelRecord) -> Value {
    let mut info = Map::new();
    info.insert("model_id".into(), json!(m.model_id));
    info.insert("experiment_id".into(), json!(m.experiment_id));
    info.insert("name".into(), json!(m.name));
    info.insert("creation_timestamp_ms".into(), json!(m.creation_timestamp_ms));
    info.insert("last_updated_timestamp_ms".into(), json!(m.last_updated_timestamp_ms));
    info.insert("artifact_uri".into(), json!(m.artifact_location));
    info.insert("status".into(), json!(m.status));
    set_opt(&mut info, "model_type", m.model_type.as_deref());
    set_opt(&mut info, "source_run_id", m.source_run_id.as_deref());
    set_opt(&mut info, "status_message", m.status_message.as_deref());
    info.insert("tags".into(), key_values_json(&m.tags));
    let registrations: Vec<Value> = m
        .tags
        .iter()
        .find(|(k, _)| k == capstan_store::registry::TAG_MODEL_VERSIONS)
        .and_then(|(_, v)| serde_json::from_str::<Vec<Value>>(v).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            let name = r.get("name")?.as_str()?.to_owned();
            let version = match r.get("version")? {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return None,
            };
            Some(json!({ "name": name, "version": version }))
        })
        .collect();
    if !registrations.is_empty() {
        info.insert("registrations".into(), Value::Array(registrations));
    }
    json!({ "info": info, "data": { "params": key_values_json(&m.params), "metrics": [] } })
}

/// A run's `inputs` and `outputs`.
pub(super) fn run_io_json(io: &RunIo) -> (Value, Value) {
    let datasets: Vec<Value> = io
        .dataset_inputs
        .iter()
        .map(|d| {
            let mut dataset = Map::new();
            dataset.insert("name".into(), json!(d.dataset.name));
            dataset.insert("digest".into(), json!(d.dataset.digest));
            dataset.insert("source_type".into(), json!(d.dataset.source_type));
            dataset.insert("source".into(), json!(d.dataset.source));
            set_opt(&mut dataset, "schema", d.dataset.schema.as_deref());
            set_opt(&mut dataset, "profile", d.dataset.profile.as_deref());
            json!({ "tags": key_values_json(&d.tags), "dataset": dataset })
        })
        .collect();
    let mut inputs = Map::new();
    if !datasets.is_empty() {
        inputs.insert("dataset_inputs".into(), Value::Array(datasets));
    }
    if !io.model_inputs.is_empty() {
        inputs.insert("model_inputs".into(), io.model_inputs.iter().map(|m| json!({ "model_id": m })).collect());
    }
    let mut outputs = Map::new();
    if !io.model_outputs.is_empty() {
        outputs.insert(
            "model_outputs".into(),
            io.model_outputs.iter().map(|(m, step)| json!({ "model_id": m, "step": step })).collect(),
        );
    }
    (Value::Object(inputs), Value::Object(outputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_user_or_unknown() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_user(&headers), "unknown");
        headers.insert(header::AUTHORIZATION, "Basic YWxpY2U6c2VjcmV0".parse().unwrap()); // alice:secret
        assert_eq!(request_user(&headers), "alice");
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(request_user(&headers), "unknown");
    }

    #[test]
    fn repeated_query_keys_are_lists() {
        let query: QueryParams = Ok(Query(vec![
            ("run_ids".to_owned(), "a".to_owned()),
            ("run_ids".to_owned(), "b".to_owned()),
            ("metric_key".to_owned(), "loss".to_owned()),
        ]));
        let f = Fields::from_request(query, Ok(Bytes::new())).unwrap();
        assert_eq!(f.str_list("run_ids").unwrap(), ["a", "b"]);
        assert_eq!(f.str_list("metric_key").unwrap(), ["loss"]);
        assert!(f.str_list("order_by").unwrap().is_empty());
        let body: Body = Ok(Bytes::from_static(br#"{"order_by": ["name ASC", "version_number DESC"]}"#));
        let f = Fields::from_request(Ok(Query(Vec::new())), body).unwrap();
        assert_eq!(f.str_list("order_by").unwrap(), ["name ASC", "version_number DESC"]);
        let body: Body = Ok(Bytes::from_static(br#"{"order_by": [1]}"#));
        let e = Fields::from_request(Ok(Query(Vec::new())), body).unwrap().str_list("order_by").unwrap_err();
        assert!(e.message.contains("order_by[0]"), "{}", e.message);
    }

    #[test]
    fn max_results_bounds() {
        let f = |v: Value| {
            Fields::from_request(Ok(Query(Vec::new())), Ok(Bytes::from(json!({ "max_results": v }).to_string())))
                .unwrap()
        };
        assert_eq!(f(json!(5)).max_results(100, 1000).unwrap(), 5);
        assert_eq!(f(json!("1000")).max_results(100, 1000).unwrap(), 1000);
        for bad in [json!(0), json!(-1), json!(1001), json!("x")] {
            let e = f(bad).max_results(100, 1000).unwrap_err();
            assert_eq!(e.error_code, "INVALID_PARAMETER_VALUE");
            assert!(e.message.contains("max_results"), "{}", e.message);
        }
        let empty = Fields::from_request(Ok(Query(Vec::new())), Ok(Bytes::new())).unwrap();
        assert_eq!(empty.max_results(100, 1000).unwrap(), 100);
    }

    #[test]
    fn page_tokens_and_view_types() {
        let f = |v: Value| Fields::from_request(Ok(Query(Vec::new())), Ok(Bytes::from(v.to_string()))).unwrap();
        assert_eq!(f(json!({ "page_token": encode_page_token(42) })).page_offset().unwrap(), 42);
        assert_eq!(f(json!({})).page_offset().unwrap(), 0);
        assert_eq!(f(json!({ "page_token": "nope" })).page_offset().unwrap_err().error_code, "INVALID_PARAMETER_VALUE");
        assert_eq!(f(json!({ "view_type": "ALL" })).view_type("view_type").unwrap(), ViewType::All);
        assert_eq!(f(json!({ "view_type": 2 })).view_type("view_type").unwrap(), ViewType::DeletedOnly);
        assert_eq!(f(json!({})).view_type("view_type").unwrap(), ViewType::ActiveOnly);
        assert!(f(json!({ "view_type": "SOME" })).view_type("view_type").is_err());
    }

    #[test]
    fn filter_errors_carry_the_position() {
        let f = Fields::from_request(
            Ok(Query(Vec::new())),
            Ok(Bytes::from(json!({ "filter": "metrics.acc >> 1" }).to_string())),
        )
        .unwrap();
        let e = f.filter(SearchTarget::Runs).unwrap_err();
        assert_eq!(e.error_code, "INVALID_PARAMETER_VALUE");
        assert!(e.message.contains("column"), "{}", e.message);
    }
}
