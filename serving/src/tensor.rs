//! Tensors of the Open Inference Protocol v2 (JSON encoding), as plain values.
//!
//! Pure: decoding a request's `inputs[i]` ([`decode_input`]), checking tensors against what
//! the model declares ([`validate_inputs`]), and encoding outputs ([`encode_output`]). `data`
//! is row-major and may be flat or nested to any depth ([`nest`] builds the nested form);
//! every error names the input and the position it is about.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// An Open Inference Protocol tensor datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Datatype {
    /// `BOOL`: JSON `true` / `false`.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`: IEEE half precision, sent as JSON numbers.
    Fp16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: each element a JSON string.
    Bytes,
}

/// Every datatype, in the protocol's order.
pub const DATATYPES: [Datatype; 13] = [
    Datatype::Bool,
    Datatype::Uint8,
    Datatype::Uint16,
    Datatype::Uint32,
    Datatype::Uint64,
    Datatype::Int8,
    Datatype::Int16,
    Datatype::Int32,
    Datatype::Int64,
    Datatype::Fp16,
    Datatype::Fp32,
    Datatype::Fp64,
    Datatype::Bytes,
];

impl Datatype {
    /// The protocol's name (`FP32`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    /// Parses a protocol name (exact, upper case as the protocol spells it).
    pub fn parse(s: &str) -> Option<Datatype> {
        DATATYPES.into_iter().find(|d| d.as_str() == s)
    }
}

impl std::fmt::Display for Datatype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The elements of a tensor, row-major, one variant per datatype.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// BOOL.
    Bool(Vec<bool>),
    /// UINT8.
    U8(Vec<u8>),
    /// UINT16.
    U16(Vec<u16>),
    /// UINT32.
    U32(Vec<u32>),
    /// UINT64.
    U64(Vec<u64>),
    /// INT8.
    I8(Vec<i8>),
    /// INT16.
    I16(Vec<i16>),
    /// INT32.
    I32(Vec<i32>),
    /// INT64.
    I64(Vec<i64>),
    /// FP16.
    F16(Vec<half::f16>),
    /// FP32.
    F32(Vec<f32>),
    /// FP64.
    F64(Vec<f64>),
    /// BYTES.
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any [`TensorData`] variant.
macro_rules! each_variant {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::U16($v) => $body,
            TensorData::U32($v) => $body,
            TensorData::U64($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I16($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

/// Rebuilds the same variant as `$data` from an expression over its vector.
macro_rules! map_variant {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::U8($v) => TensorData::U8($body),
            TensorData::U16($v) => TensorData::U16($body),
            TensorData::U32($v) => TensorData::U32($body),
            TensorData::U64($v) => TensorData::U64($body),
            TensorData::I8($v) => TensorData::I8($body),
            TensorData::I16($v) => TensorData::I16($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::I64($v) => TensorData::I64($body),
            TensorData::F16($v) => TensorData::F16($body),
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::F64($v) => TensorData::F64($body),
            TensorData::Bytes($v) => TensorData::Bytes($body),
        }
    };
}

impl TensorData {
    /// The datatype of the elements.
    pub fn datatype(&self) -> Datatype {
        match self {
            TensorData::Bool(_) => Datatype::Bool,
            TensorData::U8(_) => Datatype::Uint8,
            TensorData::U16(_) => Datatype::Uint16,
            TensorData::U32(_) => Datatype::Uint32,
            TensorData::U64(_) => Datatype::Uint64,
            TensorData::I8(_) => Datatype::Int8,
            TensorData::I16(_) => Datatype::Int16,
            TensorData::I32(_) => Datatype::Int32,
            TensorData::I64(_) => Datatype::Int64,
            TensorData::F16(_) => Datatype::Fp16,
            TensorData::F32(_) => Datatype::Fp32,
            TensorData::F64(_) => Datatype::Fp64,
            TensorData::Bytes(_) => Datatype::Bytes,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_variant!(self, v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements `[start, end)` (by element index) as a new tensor body.
    pub fn slice(&self, start: usize, end: usize) -> TensorData {
        map_variant!(self, v => v[start..end].to_vec())
    }

    /// Concatenates bodies of one datatype (row-major along the first dimension); `None`
    /// when the datatypes differ or `parts` is empty.
    pub fn concat(parts: &[&TensorData]) -> Option<TensorData> {
        let first = *parts.first()?;
        if parts.iter().any(|p| p.datatype() != first.datatype()) {
            return None;
        }
        let total = parts.iter().map(|p| p.len()).sum();
        let mut out = map_variant!(first, _v => Vec::with_capacity(total));
        for part in parts {
            extend(&mut out, part);
        }
        Some(out)
    }
}

fn extend(out: &mut TensorData, part: &TensorData) {
    match (out, part) {
        (TensorData::Bool(o), TensorData::Bool(p)) => o.extend_from_slice(p),
        (TensorData::U8(o), TensorData::U8(p)) => o.extend_from_slice(p),
        (TensorData::U16(o), TensorData::U16(p)) => o.extend_from_slice(p),
        (TensorData::U32(o), TensorData::U32(p)) => o.extend_from_slice(p),
        (TensorData::U64(o), TensorData::U64(p)) => o.extend_from_slice(p),
        (TensorData::I8(o), TensorData::I8(p)) => o.extend_from_slice(p),
        (TensorData::I16(o), TensorData::I16(p)) => o.extend_from_slice(p),
        (TensorData::I32(o), TensorData::I32(p)) => o.extend_from_slice(p),
        (TensorData::I64(o), TensorData::I64(p)) => o.extend_from_slice(p),
        (TensorData::F16(o), TensorData::F16(p)) => o.extend_from_slice(p),
        (TensorData::F32(o), TensorData::F32(p)) => o.extend_from_slice(p),
        (TensorData::F64(o), TensorData::F64(p)) => o.extend_from_slice(p),
        (TensorData::Bytes(o), TensorData::Bytes(p)) => o.extend_from_slice(p),
        _ => unreachable!("concat checks the datatypes first"),
    }
}

/// A named tensor with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Name of the input or output.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements, row-major; `data.len()` is the product of `shape`.
    pub data: TensorData,
}

/// One entry of a request's `inputs`, as sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestInput {
    /// Input name.
    pub name: String,
    /// Dimensions (non-negative).
    pub shape: Vec<i64>,
    /// Datatype name.
    pub datatype: String,
    /// Per-input parameters (accepted; `binary_data_size` is refused).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Elements: row-major, flat or nested.
    pub data: Value,
}

/// What the model declares for one input or output: `None` dimensions are dynamic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name.
    pub name: String,
    /// Datatype.
    pub datatype: Datatype,
    /// Dimensions; `None` where any size is accepted (`-1` in metadata).
    pub shape: Vec<Option<usize>>,
}

impl TensorSpec {
    /// The shape as the protocol's metadata writes it (`-1` for dynamic).
    pub fn metadata_shape(&self) -> Vec<i64> {
        self.shape.iter().map(|d| d.map(|n| n as i64).unwrap_or(-1)).collect()
    }

    /// The metadata object `{name, datatype, shape}`.
    pub fn metadata(&self) -> Value {
        serde_json::json!({ "name": self.name, "datatype": self.datatype.as_str(), "shape": self.metadata_shape() })
    }
}

/// Decodes `inputs[index]` of a request: datatype, shape, and data (flat or nested), with
/// every element checked against the datatype. Errors name the input and the element.
pub fn decode_input(index: usize, input: &RequestInput) -> Result<Tensor, String> {
    let at = format!("inputs[{index}] '{}'", input.name);
    if input.name.is_empty() {
        return Err(format!("inputs[{index}].name: must not be empty"));
    }
    if let Some(params) = &input.parameters {
        if params.contains_key("binary_data_size") {
            return Err(format!(
                "{at}: parameters.binary_data_size: the binary tensor data extension is not supported; send JSON data"
            ));
        }
    }
    let datatype = Datatype::parse(&input.datatype).ok_or_else(|| {
        format!(
            "{at}: datatype '{}' is not one of {}",
            input.datatype,
            DATATYPES.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
        )
    })?;
    let mut shape = Vec::with_capacity(input.shape.len());
    let mut count: usize = 1;
    for (i, &d) in input.shape.iter().enumerate() {
        let d = usize::try_from(d).map_err(|_| format!("{at}: shape[{i}] is {d}; dimensions must be >= 0"))?;
        count = count.checked_mul(d).ok_or_else(|| format!("{at}: shape {:?} has too many elements", input.shape))?;
        shape.push(d);
    }
    let data = decode_data(&at, datatype, &input.data, count)?;
    if data.len() != count {
        return Err(format!("{at}: data has {} elements but shape {:?} needs {count}", data.len(), input.shape));
    }
    Ok(Tensor { name: input.name.clone(), shape, data })
}

/// Flattens `data` (a JSON array, nested to any depth, or a single scalar) into elements of
/// `datatype`. `expected` only sizes the buffer and stops runaway inputs early.
pub fn decode_data(at: &str, datatype: Datatype, data: &Value, expected: usize) -> Result<TensorData, String> {
    fn collect<T>(
        at: &str,
        data: &Value,
        expected: usize,
        conv: impl Fn(&Value) -> Option<T>,
        what: &str,
    ) -> Result<Vec<T>, String> {
        let mut out = Vec::with_capacity(expected.min(1 << 24));
        walk(at, data, &mut out, expected, &conv, what)?;
        Ok(out)
    }
    fn walk<T>(
        at: &str,
        v: &Value,
        out: &mut Vec<T>,
        expected: usize,
        conv: &impl Fn(&Value) -> Option<T>,
        what: &str,
    ) -> Result<(), String> {
        match v {
            Value::Array(items) => {
                for item in items {
                    walk(at, item, out, expected, conv, what)?;
                }
                Ok(())
            }
            leaf => {
                if out.len() >= expected {
                    return Err(format!("{at}: data has more elements than the shape allows ({expected})"));
                }
                match conv(leaf) {
                    Some(x) => {
                        out.push(x);
                        Ok(())
                    }
                    None => Err(format!("{at}: data element {} is {}, expected {what}", out.len(), brief(leaf))),
                }
            }
        }
    }
    fn int<T: TryFrom<i64> + TryFrom<u64>>(v: &Value) -> Option<T> {
        let n = v.as_number()?;
        if let Some(i) = n.as_i64() {
            T::try_from(i).ok()
        } else {
            n.as_u64().and_then(|u| T::try_from(u).ok())
        }
    }
    use Datatype as D;
    let range = |lo: &str, hi: &str| format!("an integer in [{lo}, {hi}]");
    Ok(match datatype {
        D::Bool => TensorData::Bool(collect(at, data, expected, |v| v.as_bool(), "true or false")?),
        D::Uint8 => TensorData::U8(collect(at, data, expected, int::<u8>, &range("0", "255"))?),
        D::Uint16 => TensorData::U16(collect(at, data, expected, int::<u16>, &range("0", "65535"))?),
        D::Uint32 => TensorData::U32(collect(at, data, expected, int::<u32>, &range("0", "4294967295"))?),
        D::Uint64 => TensorData::U64(collect(at, data, expected, int::<u64>, &range("0", "18446744073709551615"))?),
        D::Int8 => TensorData::I8(collect(at, data, expected, int::<i8>, &range("-128", "127"))?),
        D::Int16 => TensorData::I16(collect(at, data, expected, int::<i16>, &range("-32768", "32767"))?),
        D::Int32 => TensorData::I32(collect(at, data, expected, int::<i32>, &range("-2147483648", "2147483647"))?),
        D::Int64 => TensorData::I64(collect(at, data, expected, int::<i64>, "a 64-bit signed integer")?),
        D::Fp16 => TensorData::F16(collect(
            at,
            data,
            expected,
            |v| v.as_f64().map(half::f16::from_f64).filter(|h| h.is_finite()),
            "a number within FP16 range",
        )?),
        D::Fp32 => TensorData::F32(collect(
            at,
            data,
            expected,
            |v| v.as_f64().map(|f| f as f32).filter(|f| f.is_finite()),
            "a number within FP32 range",
        )?),
        D::Fp64 => TensorData::F64(collect(at, data, expected, |v| v.as_f64(), "a number")?),
        D::Bytes => {
            TensorData::Bytes(collect(at, data, expected, |v| v.as_str().map(|s| s.as_bytes().to_vec()), "a string")?)
        }
    })
}

/// A short description of a JSON value for error messages.
fn brief(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.len() <= 32 => format!("the string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Checks decoded inputs against the model's declared inputs: none missing, none unknown,
/// none twice, datatypes equal, ranks equal, fixed dimensions equal.
pub fn validate_inputs(specs: &[TensorSpec], tensors: &[Tensor]) -> Result<(), String> {
    let names = || specs.iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ");
    for (i, t) in tensors.iter().enumerate() {
        if tensors[..i].iter().any(|o| o.name == t.name) {
            return Err(format!("inputs[{i}]: input '{}' is given twice", t.name));
        }
        let Some(spec) = specs.iter().find(|s| s.name == t.name) else {
            return Err(format!("inputs[{i}]: the model has no input '{}' (its inputs: {})", t.name, names()));
        };
        if t.data.datatype() != spec.datatype {
            return Err(format!(
                "inputs[{i}] '{}': datatype {} does not match the model's {}",
                t.name,
                t.data.datatype(),
                spec.datatype
            ));
        }
        let fits = t.shape.len() == spec.shape.len()
            && t.shape.iter().zip(&spec.shape).all(|(have, want)| want.is_none_or(|w| w == *have));
        if !fits {
            return Err(format!(
                "inputs[{i}] '{}': shape {:?} does not match the model's {:?} (-1: any size)",
                t.name,
                t.shape,
                spec.metadata_shape()
            ));
        }
    }
    if let Some(missing) = specs.iter().find(|s| !tensors.iter().any(|t| t.name == s.name)) {
        return Err(format!("inputs: missing input '{}' (the model's inputs: {})", missing.name, names()));
    }
    Ok(())
}

/// Encodes an output tensor as the protocol's JSON `{name, datatype, shape, data}` (flat).
pub fn encode_output(t: &Tensor) -> Value {
    fn num(f: f64) -> Value {
        Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
    }
    let data: Vec<Value> = match &t.data {
        TensorData::Bool(v) => v.iter().map(|&b| Value::Bool(b)).collect(),
        TensorData::U8(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::U16(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::U32(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::U64(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::I8(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::I16(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::I32(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::I64(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::F16(v) => v.iter().map(|&x| num(x.to_f64())).collect(),
        TensorData::F32(v) => v.iter().map(|&x| num(x as f64)).collect(),
        TensorData::F64(v) => v.iter().map(|&x| num(x)).collect(),
        TensorData::Bytes(v) => v.iter().map(|b| Value::String(String::from_utf8_lossy(b).into_owned())).collect(),
    };
    serde_json::json!({
        "name": t.name,
        "datatype": t.data.datatype().as_str(),
        "shape": t.shape,
        "data": data,
    })
}

/// Nests flat row-major `data` by `shape` (the inverse of flattening); `None` when the
/// element count does not match. A rank-0 shape gives the single element itself.
pub fn nest(data: &[Value], shape: &[usize]) -> Option<Value> {
    if data.len() != shape.iter().product::<usize>() {
        return None;
    }
    fn build(data: &[Value], shape: &[usize]) -> Value {
        match shape {
            [] => data[0].clone(),
            [_] => Value::Array(data.to_vec()),
            [n, rest @ ..] => {
                let stride: usize = rest.iter().product();
                Value::Array((0..*n).map(|i| build(&data[i * stride..(i + 1) * stride], rest)).collect())
            }
        }
    }
    if shape.is_empty() {
        return data.first().cloned();
    }
    Some(build(data, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn input(name: &str, shape: &[i64], datatype: &str, data: Value) -> RequestInput {
        RequestInput { name: name.into(), shape: shape.to_vec(), datatype: datatype.into(), parameters: None, data }
    }

    #[test]
    fn every_datatype_decodes() {
        let cases = [
            ("BOOL", json!([true, false]), TensorData::Bool(vec![true, false])),
            ("UINT8", json!([0, 255]), TensorData::U8(vec![0, 255])),
            ("UINT16", json!([0, 65535]), TensorData::U16(vec![0, 65535])),
            ("UINT32", json!([0, 4294967295u64]), TensorData::U32(vec![0, u32::MAX])),
            ("UINT64", json!([0, u64::MAX]), TensorData::U64(vec![0, u64::MAX])),
            ("INT8", json!([-128, 127]), TensorData::I8(vec![-128, 127])),
            ("INT16", json!([-32768, 32767]), TensorData::I16(vec![i16::MIN, i16::MAX])),
            ("INT32", json!([i32::MIN, i32::MAX]), TensorData::I32(vec![i32::MIN, i32::MAX])),
            ("INT64", json!([i64::MIN, i64::MAX]), TensorData::I64(vec![i64::MIN, i64::MAX])),
            ("FP16", json!([1.5, -2]), TensorData::F16(vec![half::f16::from_f32(1.5), half::f16::from_f32(-2.0)])),
            ("FP32", json!([1.5, 3]), TensorData::F32(vec![1.5, 3.0])),
            ("FP64", json!([1e300, -1]), TensorData::F64(vec![1e300, -1.0])),
            ("BYTES", json!(["ab", ""]), TensorData::Bytes(vec![b"ab".to_vec(), vec![]])),
        ];
        for (dt, data, want) in cases {
            let t = decode_input(0, &input("x", &[2], dt, data)).unwrap_or_else(|e| panic!("{dt}: {e}"));
            assert_eq!(t.data, want, "{dt}");
            assert_eq!(t.data.datatype().as_str(), dt);
            let back = encode_output(&t);
            assert_eq!(back["datatype"], dt);
            assert_eq!(back["shape"], json!([2]));
        }
    }

    #[test]
    fn out_of_range_and_wrong_kind_name_the_element() {
        let e = decode_input(1, &input("x", &[2], "UINT8", json!([1, 256]))).unwrap_err();
        assert!(e.contains("inputs[1] 'x'") && e.contains("element 1") && e.contains("256"), "{e}");
        let e = decode_input(0, &input("x", &[2], "INT32", json!([1, 1.5]))).unwrap_err();
        assert!(e.contains("element 1") && e.contains("1.5"), "{e}");
        let e = decode_input(0, &input("x", &[1], "UINT16", json!([-1]))).unwrap_err();
        assert!(e.contains("element 0"), "{e}");
        let e = decode_input(0, &input("x", &[1], "FP32", json!(["a"]))).unwrap_err();
        assert!(e.contains("expected a number"), "{e}");
        let e = decode_input(0, &input("x", &[1], "FP16", json!([1e6]))).unwrap_err();
        assert!(e.contains("FP16"), "{e}");
        let e = decode_input(0, &input("x", &[1], "FP32", json!([1e300]))).unwrap_err();
        assert!(e.contains("FP32"), "{e}");
        let e = decode_input(0, &input("x", &[1], "BOOL", json!([1]))).unwrap_err();
        assert!(e.contains("true or false"), "{e}");
        let e = decode_input(0, &input("x", &[1], "BYTES", json!([{}]))).unwrap_err();
        assert!(e.contains("an object"), "{e}");
    }

    #[test]
    fn shape_and_count_mismatches_are_refused() {
        let e = decode_input(0, &input("x", &[2, 2], "FP32", json!([1, 2, 3]))).unwrap_err();
        assert!(e.contains("3 elements") && e.contains("needs 4"), "{e}");
        let e = decode_input(0, &input("x", &[1], "FP32", json!([1, 2, 3]))).unwrap_err();
        assert!(e.contains("more elements"), "{e}");
        let e = decode_input(0, &input("x", &[-1, 2], "FP32", json!([1, 2]))).unwrap_err();
        assert!(e.contains("shape[0] is -1"), "{e}");
        let e = decode_input(0, &input("x", &[i64::MAX, i64::MAX], "FP32", json!([]))).unwrap_err();
        assert!(e.contains("too many"), "{e}");
        let e = decode_input(0, &input("x", &[1], "FLOAT", json!([1]))).unwrap_err();
        assert!(e.contains("datatype 'FLOAT'"), "{e}");
        let e = decode_input(0, &input("", &[1], "FP32", json!([1]))).unwrap_err();
        assert!(e.contains("inputs[0].name"), "{e}");
        let t = decode_input(0, &input("x", &[], "INT64", json!(7))).unwrap();
        assert_eq!(t.data, TensorData::I64(vec![7]));
        let t = decode_input(0, &input("x", &[0, 3], "FP32", json!([]))).unwrap();
        assert!(t.data.is_empty());
    }

    #[test]
    fn binary_extension_is_refused_clearly() {
        let mut i = input("x", &[1], "FP32", json!([1]));
        i.parameters = Some(json!({"binary_data_size": 4}).as_object().unwrap().clone());
        let e = decode_input(0, &i).unwrap_err();
        assert!(e.contains("binary_data_size"), "{e}");
    }

    fn spec(name: &str, datatype: Datatype, shape: &[Option<usize>]) -> TensorSpec {
        TensorSpec { name: name.into(), datatype, shape: shape.to_vec() }
    }

    #[test]
    fn validation_names_the_input() {
        let specs = vec![spec("a", Datatype::Fp32, &[None, Some(4)]), spec("b", Datatype::Int64, &[None])];
        let t = |name: &str, shape: &[usize], data: TensorData| Tensor { name: name.into(), shape: shape.into(), data };
        let a = t("a", &[1, 4], TensorData::F32(vec![0.0; 4]));
        let b = t("b", &[1], TensorData::I64(vec![1]));
        assert!(validate_inputs(&specs, &[a.clone(), b.clone()]).is_ok());
        let e = validate_inputs(&specs, std::slice::from_ref(&a)).unwrap_err();
        assert!(e.contains("missing input 'b'"), "{e}");
        let e = validate_inputs(&specs, &[a.clone(), b.clone(), t("c", &[1], TensorData::I64(vec![1]))]).unwrap_err();
        assert!(e.contains("inputs[2]") && e.contains("no input 'c'"), "{e}");
        let e = validate_inputs(&specs, &[t("a", &[1, 4], TensorData::F64(vec![0.0; 4])), b.clone()]).unwrap_err();
        assert!(e.contains("datatype FP64") && e.contains("FP32"), "{e}");
        let e = validate_inputs(&specs, &[t("a", &[1, 5], TensorData::F32(vec![0.0; 5])), b.clone()]).unwrap_err();
        assert!(e.contains("shape [1, 5]") && e.contains("[-1, 4]"), "{e}");
        let e = validate_inputs(&specs, &[t("a", &[4], TensorData::F32(vec![0.0; 4])), b.clone()]).unwrap_err();
        assert!(e.contains("shape [4]"), "{e}");
        let e = validate_inputs(&specs, &[a.clone(), a, b]).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn concat_and_slice() {
        let a = TensorData::I32(vec![1, 2]);
        let b = TensorData::I32(vec![3]);
        let c = TensorData::concat(&[&a, &b]).unwrap();
        assert_eq!(c, TensorData::I32(vec![1, 2, 3]));
        assert_eq!(c.slice(1, 3), TensorData::I32(vec![2, 3]));
        assert!(TensorData::concat(&[&a, &TensorData::F32(vec![1.0])]).is_none());
        assert!(TensorData::concat(&[]).is_none());
    }

    proptest! {
        /// Nested data decodes to the same elements as flat data, and nesting the encoded
        /// output by its shape gives back the nested request.
        #[test]
        fn nested_and_flat_agree(shape in prop::collection::vec(0usize..4, 0..4), seed in any::<i64>()) {
            let count: usize = shape.iter().product();
            let flat: Vec<Value> = (0..count as i64).map(|i| json!(seed.wrapping_add(i * 7919))).collect();
            let nested = nest(&flat, &shape).unwrap();
            let shape_i: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let from_flat = decode_input(0, &input("x", &shape_i, "INT64", Value::Array(flat.clone()))).unwrap();
            let from_nested = decode_input(0, &input("x", &shape_i, "INT64", nested.clone())).unwrap();
            prop_assert_eq!(&from_flat, &from_nested);
            let out = encode_output(&from_nested);
            let data = out["data"].as_array().unwrap();
            prop_assert_eq!(data, &flat);
            prop_assert_eq!(nest(data, &shape).unwrap(), nested);
        }

        /// Floats survive decode -> encode -> decode exactly.
        #[test]
        fn fp32_round_trips(values in prop::collection::vec(-1e30f32..1e30f32, 0..32)) {
            let data = Value::Array(values.iter().map(|&f| json!(f as f64)).collect());
            let t = decode_input(0, &input("x", &[values.len() as i64], "FP32", data)).unwrap();
            let back = encode_output(&t);
            let again = decode_input(0, &input("x", &[values.len() as i64], "FP32", back["data"].clone())).unwrap();
            prop_assert_eq!(&t.data, &TensorData::F32(values));
            prop_assert_eq!(again, t);
        }

        /// Concatenating then slicing at the part boundaries gives the parts back.
        #[test]
        fn concat_then_slice(parts in prop::collection::vec(prop::collection::vec(any::<i16>(), 0..8), 1..6)) {
            let bodies: Vec<TensorData> = parts.iter().map(|p| TensorData::I16(p.clone())).collect();
            let refs: Vec<&TensorData> = bodies.iter().collect();
            let all = TensorData::concat(&refs).unwrap();
            let mut at = 0;
            for b in &bodies {
                prop_assert_eq!(&all.slice(at, at + b.len()), b);
                at += b.len();
            }
        }
    }
}
