//! Pure helpers of the pages: column defaults, CSV, the compare diff, formatting. No IO.

use std::collections::{BTreeMap, BTreeSet};

/// Metric columns shown by default in the runs table.
pub const DEFAULT_METRIC_COLUMNS: usize = 8;
/// Param columns shown by default in the runs table.
pub const DEFAULT_PARAM_COLUMNS: usize = 4;

/// The runs table's default columns: the first metric keys (system metrics last) and the
/// first param keys, as `metrics.<key>` / `params.<key>`.
pub fn default_columns(metric_keys: &BTreeSet<&str>, param_keys: &BTreeSet<&str>) -> Vec<String> {
    let mut metrics: Vec<&&str> = metric_keys.iter().collect();
    metrics.sort_by_key(|k| (k.starts_with("system/"), **k));
    metrics
        .into_iter()
        .take(DEFAULT_METRIC_COLUMNS)
        .map(|k| format!("metrics.{k}"))
        .chain(param_keys.iter().take(DEFAULT_PARAM_COLUMNS).map(|k| format!("params.{k}")))
        .collect()
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A CSV document: the header then one line per row (JSON strings unquoted, null empty).
pub fn csv(header: &[String], rows: &[Vec<serde_json::Value>]) -> String {
    let mut out = String::new();
    out.push_str(&header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(","));
    out.push_str("\r\n");
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .map(|v| match v {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => csv_field(s),
                other => csv_field(&other.to_string()),
            })
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// One row of the compare page's diff: a key and each run's value (None: not logged).
#[derive(Debug, Clone, PartialEq)]
pub struct DiffRow {
    /// Param or metric key.
    pub key: String,
    /// Value per run, in the runs' order.
    pub values: Vec<Option<String>>,
    /// True when the runs do not all have the same value.
    pub differs: bool,
}

/// The diff of a set of key/value maps (one per run): every key of any run, sorted, with
/// whether the values differ; `only_differences` keeps only those that do.
pub fn diff(runs: &[BTreeMap<String, String>], only_differences: bool) -> Vec<DiffRow> {
    let keys: BTreeSet<&String> = runs.iter().flat_map(|m| m.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let values: Vec<Option<String>> = runs.iter().map(|m| m.get(k).cloned()).collect();
            let differs = values.windows(2).any(|w| w[0] != w[1]);
            DiffRow { key: k.clone(), values, differs }
        })
        .filter(|r| !only_differences || r.differs)
        .collect()
}

/// A metric value for a table cell: integers without a fraction, others with up to 6
/// significant digits.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "0" || s == "-0" {
            format!("{v:.3e}")
        } else {
            s.to_string()
        }
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC (civil-from-days, no clock).
pub fn fmt_time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A duration in ms as `1h 2m`, `3m 4s` or `5.1s`.
pub fn fmt_duration(ms: i64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h {}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// Where a filter error points: the text before the offending byte and the rest, split at a
/// char boundary (positions past the end point at the end).
pub fn split_at_error(filter: &str, position: usize) -> (String, String) {
    let mut p = position.min(filter.len());
    while !filter.is_char_boundary(p) {
        p -= 1;
    }
    (filter[..p].to_string(), filter[p..].to_string())
}

/// Percent-encoding of a query-string value (everything but unreserved characters).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-encoding of a path (each segment encoded, `/` kept).
pub fn urlencode_path(s: &str) -> String {
    s.split('/').map(urlencode).collect::<Vec<_>>().join("/")
}

/// A heat-map colour class (0 to 9) for a utilization percentage.
pub fn heat_class(util: f64) -> u8 {
    if util.is_nan() {
        return 0;
    }
    (util.clamp(0.0, 100.0) / 10.0).floor().min(9.0) as u8
}

/// Whether an artifact's name suggests a preview: `text`, `image`, `json` or None.
pub fn preview_kind(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" | "jpg" | "jpeg" | "gif" | "svg" | "webp" => Some("image"),
        "json" => Some("json"),
        "txt" | "log" | "md" | "yaml" | "yml" | "csv" | "py" | "toml" | "cfg" | "ini" | "mlmodel" | "sh" => {
            Some("text")
        }
        _ if name == "MLmodel" || name.ends_with("requirements.txt") => Some("text"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_columns_put_system_metrics_last() {
        let m: BTreeSet<&str> = ["system/gpu_0_util", "acc", "loss"].into_iter().collect();
        let p: BTreeSet<&str> = ["lr"].into_iter().collect();
        assert_eq!(
            default_columns(&m, &p),
            vec!["metrics.acc", "metrics.loss", "metrics.system/gpu_0_util", "params.lr"]
        );
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let rows = vec![vec![serde_json::json!("a,b"), serde_json::json!(1.5), serde_json::Value::Null]];
        assert_eq!(csv(&["x".into(), "y\"".into(), "z".into()], &rows), "x,\"y\"\"\",z\r\n\"a,b\",1.5,\r\n");
    }

    #[test]
    fn diff_only_differences() {
        let a: BTreeMap<String, String> = [("lr", "0.1"), ("bs", "32")].map(|(k, v)| (k.into(), v.into())).into();
        let b: BTreeMap<String, String> = [("lr", "0.2"), ("bs", "32")].map(|(k, v)| (k.into(), v.into())).into();
        let all = diff(&[a.clone(), b.clone()], false);
        assert_eq!(all.len(), 2);
        let only = diff(&[a, b], true);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].key, "lr");
        assert_eq!(only[0].values, vec![Some("0.1".into()), Some("0.2".into())]);
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(0.123456789), "0.123457");
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(fmt_time(0), "-");
        assert_eq!(fmt_time(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(fmt_duration(3_723_000), "1h 2m");
        assert_eq!(urlencode("a b&c"), "a%20b%26c");
        assert_eq!(heat_class(100.0), 9);
        assert_eq!(preview_kind("x/metrics.JSON"), Some("json"));
        assert_eq!(preview_kind("model.pkl"), None);
    }

    proptest! {
        #[test]
        fn split_at_error_never_panics_and_rejoins(s in ".{0,40}", p in 0usize..60) {
            let (a, b) = split_at_error(&s, p);
            prop_assert_eq!(format!("{a}{b}"), s);
        }

        #[test]
        fn diff_keeps_every_key_once(maps in proptest::collection::vec(
            proptest::collection::btree_map("[a-c]", "[xy]", 0..3), 1..4)) {
            let rows = diff(&maps, false);
            let keys: BTreeSet<&String> = maps.iter().flat_map(|m| m.keys()).collect();
            prop_assert_eq!(rows.len(), keys.len());
            for r in diff(&maps, true) {
                prop_assert!(r.differs);
            }
        }
    }
}
