//! The fast path of `runs/log-batch`: the request body parsed straight into typed, borrowed
//! structs (no `serde_json::Value` tree, no per-item path strings), for the bodies clients
//! actually send: an object with `run_id` (or `run_uuid`), and `metrics`, `params`, `tags`
//! lists of objects whose strings have no escapes.
//!
//! It decides nothing on its own: [`parse`] answers `None` for anything unusual (a
//! lowerCamelCase alias of the run id, a duplicate field, a string with an escape, a wrong
//! type, a missing or empty key or a missing value, an array where an object belongs), and
//! the handler then parses the same body the general way ([`super::Fields`]), which gives
//! the answer or the error with its field path. Where it answers `Some`, the items are the
//! ones the general way reads (the numbers by the same protobuf JSON rules: int64 as number,
//! integral float or string; doubles as numbers or strings, `"NaN"` and the infinities
//! included); a property test checks both ways agree.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// The items of a log-batch body, as borrowed from it.
#[derive(Debug)]
pub(super) struct BatchBody<'a> {
    /// The run id (`run_id`, else `run_uuid`; never empty).
    pub run_id: &'a str,
    /// The metrics, in order.
    pub metrics: Vec<Metric<'a>>,
    /// The params as `(key, value)`, in order (keys never empty).
    pub params: Vec<(&'a str, &'a str)>,
    /// The tags as `(key, value)`, in order (keys never empty).
    pub tags: Vec<(&'a str, &'a str)>,
}

/// One metric of a log-batch body.
#[derive(Debug, Clone, Copy)]
pub(super) struct Metric<'a> {
    /// Key (never empty).
    pub key: &'a str,
    /// Value.
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Step (0 when absent).
    pub step: i64,
}

/// The body's items, or `None` where the general parse must decide (see the module docs).
pub(super) fn parse<'a>(body: &'a [u8]) -> Option<BatchBody<'a>> {
    let MapOnly(raw) = serde_json::from_slice::<MapOnly<RawBody<'_>>>(body).ok()?;
    if raw.run_id_camel.is_some() || raw.run_uuid_camel.is_some() {
        return None;
    }
    let run_id = [raw.run_id, raw.run_uuid].into_iter().flatten().find(|id| !id.is_empty())?;
    let metrics = raw
        .metrics
        .unwrap_or_default()
        .into_iter()
        .map(|MapOnly(m)| {
            Some(Metric {
                key: m.key.filter(|k| !k.is_empty())?,
                value: m.value?.0,
                timestamp: m.timestamp?.0,
                step: m.step.map_or(0, |s| s.0),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let pairs = |list: Option<Vec<MapOnly<RawKeyValue<'a>>>>| {
        list.unwrap_or_default()
            .into_iter()
            .map(|MapOnly(kv)| Some((kv.key.filter(|k| !k.is_empty())?, kv.value.unwrap_or(""))))
            .collect::<Option<Vec<_>>>()
    };
    Some(BatchBody { run_id, metrics, params: pairs(raw.params)?, tags: pairs(raw.tags)? })
}

/// The body as serde reads it; `null` reads as absent, as in the general parse.
#[derive(Deserialize)]
struct RawBody<'a> {
    #[serde(default, borrow)]
    run_id: Option<&'a str>,
    #[serde(default, borrow)]
    run_uuid: Option<&'a str>,
    /// Present at all (even `null`): left to the general parse, which gives the proto name
    /// precedence in its own way.
    #[serde(rename = "runId", default, deserialize_with = "present")]
    run_id_camel: Option<()>,
    #[serde(rename = "runUuid", default, deserialize_with = "present")]
    run_uuid_camel: Option<()>,
    #[serde(default, borrow)]
    metrics: Option<Vec<MapOnly<RawMetric<'a>>>>,
    #[serde(default, borrow)]
    params: Option<Vec<MapOnly<RawKeyValue<'a>>>>,
    #[serde(default, borrow)]
    tags: Option<Vec<MapOnly<RawKeyValue<'a>>>>,
}

#[derive(Deserialize)]
struct RawMetric<'a> {
    #[serde(default, borrow)]
    key: Option<&'a str>,
    #[serde(default)]
    value: Option<Double>,
    #[serde(default)]
    timestamp: Option<Int64>,
    #[serde(default)]
    step: Option<Int64>,
}

#[derive(Deserialize)]
struct RawKeyValue<'a> {
    #[serde(default, borrow)]
    key: Option<&'a str>,
    #[serde(default, borrow)]
    value: Option<&'a str>,
}

/// Whether a field is there, whatever its value.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    IgnoredAny::deserialize(d).map(|_| Some(()))
}

/// A JSON object only: serde's derived structs would also take an array of the fields in
/// order, which the general parse refuses.
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectVisitor(PhantomData)).map(MapOnly)
    }
}

/// An int64 by protobuf JSON's rules (see [`super::int64_of_f64`] and [`super::int64_of_str`]).
struct Int64(i64);

impl<'de> Deserialize<'de> for Int64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int64, E> {
                Ok(Int64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int64, E> {
                i64::try_from(v).map(Int64).map_err(|_| E::custom("out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int64, E> {
                super::int64_of_f64(v).map(Int64).ok_or_else(|| E::custom("not an integer"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int64, E> {
                super::int64_of_str(v).map(Int64).ok_or_else(|| E::custom("not an integer"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A double by protobuf JSON's rules (see [`super::double_of_str`]).
struct Double(f64);

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Double;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Double, E> {
                Ok(Double(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Double, E> {
                super::double_of_str(v).map(Double).ok_or_else(|| E::custom("not a number"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_log_batch, parse_log_batch_general, Fields, LogBatch};
    use super::*;
    use proptest::prelude::*;

    /// The general parse of a body (the reference the fast path must agree with).
    fn general(body: &[u8]) -> Result<LogBatch, crate::mlflow::ApiError> {
        parse_log_batch_general(Fields::from_bytes(body)?)
    }

    /// Equal, NaN values included (bit for bit).
    fn same(a: &Result<LogBatch, crate::mlflow::ApiError>, b: &Result<LogBatch, crate::mlflow::ApiError>) -> bool {
        match (a, b) {
            (Ok(a), Ok(b)) => {
                a.run_id == b.run_id
                    && a.params == b.params
                    && a.tags == b.tags
                    && a.metrics.len() == b.metrics.len()
                    && a.metrics.iter().zip(&b.metrics).all(|(x, y)| {
                        x.key == y.key
                            && x.step == y.step
                            && x.timestamp == y.timestamp
                            && x.value.to_bits() == y.value.to_bits()
                    })
            }
            (Err(a), Err(b)) => a == b,
            _ => false,
        }
    }

    #[test]
    fn typical_bodies_take_the_fast_path() {
        let body =
            br#"{"run_id": "r1", "metrics": [{"key": "loss", "value": 0.5, "timestamp": 1700000000000, "step": 3},
            {"key": "loss", "value": "NaN", "timestamp": "1700000000001"}],
            "params": [{"key": "lr", "value": "0.1"}], "tags": [{"key": "t", "value": "x"}, {"key": "e"}]}"#;
        let fast = parse(body).expect("fast path");
        assert_eq!(fast.run_id, "r1");
        assert_eq!(fast.metrics.len(), 2);
        assert_eq!((fast.metrics[0].key, fast.metrics[0].value, fast.metrics[0].step), ("loss", 0.5, 3));
        assert!(fast.metrics[1].value.is_nan());
        assert_eq!((fast.metrics[1].timestamp, fast.metrics[1].step), (1_700_000_000_001, 0));
        assert_eq!(fast.params, vec![("lr", "0.1")]);
        assert_eq!(fast.tags, vec![("t", "x"), ("e", "")]);
        assert!(same(&parse_log_batch(body), &general(body)));
    }

    #[test]
    fn unusual_bodies_are_left_to_the_general_parse() {
        for body in [
            &br#"{"runId": "r1", "metrics": []}"#[..],
            br#"{"run_id": null, "runId": "r1"}"#,
            br#"{"run_id": "r1", "run_id": "r2"}"#,
            br#"{"run_id": "r\u0031"}"#,
            br#"{"run_id": "r1", "metrics": [["loss", 1.0, 5, 1]]}"#,
            br#"{"run_id": "r1", "metrics": [{"key": "", "value": 1, "timestamp": 1}]}"#,
            br#"{"run_id": "r1", "metrics": [{"key": "a", "timestamp": 1}]}"#,
            br#"{"run_id": "r1", "metrics": [{"key": "a", "value": 1.5, "timestamp": 1.5}]}"#,
            br#"{"run_id": "r1", "params": [{"value": "x"}]}"#,
            br#"{"run_id": "r1", "tags": {"key": "a"}}"#,
            br#"["r1"]"#,
            b"",
            b"{",
        ] {
            assert!(parse(body).is_none(), "{}", String::from_utf8_lossy(body));
            assert!(same(&parse_log_batch(body), &general(body)), "{}", String::from_utf8_lossy(body));
        }
    }

    /// A JSON value for a field: mostly well-formed, sometimes of another type or null.
    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            30 => (-5i64..5).prop_map(|n| n.to_string()),
            6 => any::<i64>().prop_map(|n| n.to_string()),
            1 => Just("18446744073709551615".to_owned()),
            1 => Just("9.1e18".to_owned()),
            2 => (-100.0f64..100.0).prop_map(|f| format!("{f:?}")),
            1 => Just("3.0".to_owned()),
            1 => prop_oneof![Just("\"NaN\""), Just("\"Infinity\""), Just("\"-Infinity\""), Just("\" 7 \""),
                Just("\"1.5\""), Just("\"x\""), Just("\"12\"")].prop_map(str::to_owned),
            1 => prop_oneof![Just("null"), Just("true"), Just("[]"), Just("{}")].prop_map(str::to_owned),
        ]
    }

    fn string() -> impl Strategy<Value = String> {
        prop_oneof![
            40 => "[a-c]{1,3}".prop_map(|s| format!("\"{s}\"")),
            1 => Just("\"\"".to_owned()),
            1 => Just("\"a\\u0062\"".to_owned()),
            1 => Just(format!("\"{}\"", "k".repeat(251))),
            1 => prop_oneof![Just("null"), Just("1"), Just("[]")].prop_map(str::to_owned),
        ]
    }

    /// An object with some of `fields` (each with a value from its strategy), in any order,
    /// sometimes with an unknown field or a field twice.
    fn object(fields: Vec<(&'static str, f64, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
        let parts: Vec<BoxedStrategy<Option<String>>> = fields
            .into_iter()
            .map(|(name, p, value)| {
                proptest::option::weighted(p, value.prop_map(move |v| format!("\"{name}\": {v}"))).boxed()
            })
            .collect();
        let extra = proptest::option::weighted(0.1, Just("\"extra\": {\"a\": [1, 2]}".to_owned()));
        (parts, extra, any::<bool>(), proptest::bool::weighted(0.03))
            .prop_map(|(parts, extra, reverse, twice)| {
                let mut items: Vec<String> = parts.into_iter().flatten().chain(extra).collect();
                if reverse {
                    items.reverse();
                }
                if twice && !items.is_empty() {
                    items.push(items[0].clone());
                }
                format!("{{{}}}", items.join(", "))
            })
            .boxed()
    }

    fn list(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
        prop_oneof![
            20 => proptest::collection::vec(item, 0..max).prop_map(|items| format!("[{}]", items.join(", "))),
            1 => Just("null".to_owned()),
            1 => Just("{}".to_owned()),
        ]
        .boxed()
    }

    fn body() -> impl Strategy<Value = String> {
        let metric = object(vec![
            ("key", 0.98, string().boxed()),
            ("value", 0.98, scalar().boxed()),
            ("timestamp", 0.98, scalar().boxed()),
            ("step", 0.8, scalar().boxed()),
        ]);
        let kv = || object(vec![("key", 0.98, string().boxed()), ("value", 0.9, string().boxed())]);
        object(vec![
            ("run_id", 0.9, string().boxed()),
            ("run_uuid", 0.3, string().boxed()),
            ("runId", 0.05, string().boxed()),
            ("metrics", 0.9, list(metric, 5)),
            ("params", 0.7, list(kv(), 3)),
            ("tags", 0.7, list(kv(), 3)),
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the body, the fast path (where it applies) gives exactly the general
        /// parse's batch or error.
        #[test]
        fn fast_path_agrees_with_the_general_parse(body in body()) {
            let bytes = body.as_bytes();
            prop_assert!(same(&parse_log_batch(bytes), &general(bytes)), "{}", body);
        }
    }
}
