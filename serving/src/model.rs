//! An ONNX model run by tract (pure Rust, no native runtime): loading, what it declares
//! (inputs and outputs as [`TensorSpec`]s), and running one (possibly batched) request.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::DimLike;

use crate::tensor::{Datatype, Tensor, TensorData, TensorSpec};
use crate::{Result, ServingError};

/// A loaded, optimized ONNX model.
#[derive(Clone)]
pub struct OnnxModel {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    batchable: bool,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("batchable", &self.batchable)
            .finish()
    }
}

fn datatype_of(dt: DatumType) -> Option<Datatype> {
    Some(match dt {
        DatumType::Bool => Datatype::Bool,
        DatumType::U8 => Datatype::Uint8,
        DatumType::U16 => Datatype::Uint16,
        DatumType::U32 => Datatype::Uint32,
        DatumType::U64 => Datatype::Uint64,
        DatumType::I8 => Datatype::Int8,
        DatumType::I16 => Datatype::Int16,
        DatumType::I32 => Datatype::Int32,
        DatumType::I64 => Datatype::Int64,
        DatumType::F16 => Datatype::Fp16,
        DatumType::F32 => Datatype::Fp32,
        DatumType::F64 => Datatype::Fp64,
        DatumType::String => Datatype::Bytes,
        _ => return None,
    })
}

fn invalid(why: impl std::fmt::Display) -> ServingError {
    ServingError::InvalidModel(why.to_string())
}

impl OnnxModel {
    /// Loads a model from the bytes of an `.onnx` file: parse, type, optimize. Dynamic
    /// dimensions (`dim_param`) stay symbolic, so any batch size runs.
    pub fn from_bytes(bytes: &[u8]) -> Result<OnnxModel> {
        let inference = tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(bytes)).map_err(invalid)?;
        let typed = inference.into_typed().map_err(|e| invalid(format!("{e:#}")))?;
        let spec = |outlet: OutletId, fallback: String| -> Result<(TensorSpec, Option<String>)> {
            let fact = typed.outlet_fact(outlet).map_err(invalid)?;
            let name = typed.outlet_label(outlet).map(str::to_string).unwrap_or(fallback);
            let datatype = datatype_of(fact.datum_type).ok_or_else(|| {
                invalid(format!("'{name}' has datatype {:?}, which the protocol cannot carry", fact.datum_type))
            })?;
            let shape = fact.shape.iter().map(|d| d.to_usize().ok()).collect();
            let first_symbol = fact.shape.iter().next().filter(|d| d.to_usize().is_err()).map(|d| d.to_string());
            Ok((TensorSpec { name, datatype, shape }, first_symbol))
        };
        let mut inputs = Vec::new();
        let mut batch_dims = Vec::new();
        for &outlet in typed.input_outlets().map_err(invalid)? {
            let (s, sym) = spec(outlet, typed.node(outlet.node).name.clone())?;
            inputs.push(s);
            batch_dims.push(sym);
        }
        let mut outputs = Vec::new();
        for &outlet in typed.output_outlets().map_err(invalid)? {
            let (s, sym) = spec(outlet, typed.node(outlet.node).name.clone())?;
            outputs.push(s);
            batch_dims.push(sym);
        }
        // Requests can share a run when every input and output has the same symbolic first
        // dimension: rows concatenate going in and split coming out.
        let batchable =
            batch_dims.first().is_some_and(|first| first.is_some() && batch_dims.iter().all(|d| d == first));
        let plan = typed.into_optimized().map_err(|e| invalid(format!("{e:#}")))?.into_runnable().map_err(invalid)?;
        Ok(OnnxModel { plan, inputs, outputs, batchable })
    }

    /// What the model takes.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// What the model gives.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Whether requests may be concatenated along the first dimension into one run.
    pub fn batchable(&self) -> bool {
        self.batchable
    }

    /// A reusable execution state (one per worker thread).
    pub fn session(&self) -> Result<Session> {
        Ok(Session {
            state: self.plan.spawn().map_err(|e| ServingError::Inference(format!("{e:#}")))?,
            model: self.clone(),
        })
    }
}

/// One worker's execution state over a model.
pub struct Session {
    state: TypedSimpleState,
    model: OnnxModel,
}

impl Session {
    /// Runs the model on inputs already checked by
    /// [`validate_inputs`](crate::tensor::validate_inputs), in any order; outputs come in the
    /// model's order.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let mut values = TVec::new();
        for spec in &self.model.inputs {
            let t = inputs
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| ServingError::Inference(format!("input '{}' is missing", spec.name)))?;
            values.push(to_tract(t)?.into_tvalue());
        }
        let state = &mut self.state;
        let outs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.run(values)))
            .map_err(|_| ServingError::Inference("the model runtime panicked".into()))?
            .map_err(|e| ServingError::Inference(format!("{e:#}")))?;
        outs.iter().zip(&self.model.outputs).map(|(v, spec)| from_tract(&spec.name, v)).collect()
    }
}

fn to_tract(t: &Tensor) -> Result<tract_onnx::prelude::Tensor> {
    fn arr<T: Datum>(shape: &[usize], v: Vec<T>) -> Result<tract_onnx::prelude::Tensor> {
        tract_ndarray::ArrayD::from_shape_vec(tract_ndarray::IxDyn(shape), v)
            .map(Into::into)
            .map_err(|e| ServingError::Inference(e.to_string()))
    }
    let s = &t.shape;
    match &t.data {
        TensorData::Bool(v) => arr(s, v.clone()),
        TensorData::U8(v) => arr(s, v.clone()),
        TensorData::U16(v) => arr(s, v.clone()),
        TensorData::U32(v) => arr(s, v.clone()),
        TensorData::U64(v) => arr(s, v.clone()),
        TensorData::I8(v) => arr(s, v.clone()),
        TensorData::I16(v) => arr(s, v.clone()),
        TensorData::I32(v) => arr(s, v.clone()),
        TensorData::I64(v) => arr(s, v.clone()),
        TensorData::F16(v) => arr(s, v.iter().map(|h| tract_onnx::prelude::f16::from_bits(h.to_bits())).collect()),
        TensorData::F32(v) => arr(s, v.clone()),
        TensorData::F64(v) => arr(s, v.clone()),
        TensorData::Bytes(v) => {
            let strings = v
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b.clone()).map_err(|_| {
                        ServingError::BadInput(format!("input '{}': BYTES element {i} is not UTF-8 text", t.name))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            arr(s, strings)
        }
    }
}

fn from_tract(name: &str, v: &TValue) -> Result<Tensor> {
    fn vec<T: Datum>(v: &TValue) -> Result<Vec<T>> {
        Ok(v.to_plain_array_view::<T>()
            .map_err(|e| ServingError::Inference(format!("{e:#}")))?
            .iter()
            .cloned()
            .collect())
    }
    let data = match v.datum_type() {
        DatumType::Bool => TensorData::Bool(vec(v)?),
        DatumType::U8 => TensorData::U8(vec(v)?),
        DatumType::U16 => TensorData::U16(vec(v)?),
        DatumType::U32 => TensorData::U32(vec(v)?),
        DatumType::U64 => TensorData::U64(vec(v)?),
        DatumType::I8 => TensorData::I8(vec(v)?),
        DatumType::I16 => TensorData::I16(vec(v)?),
        DatumType::I32 => TensorData::I32(vec(v)?),
        DatumType::I64 => TensorData::I64(vec(v)?),
        DatumType::F16 => TensorData::F16(
            vec::<tract_onnx::prelude::f16>(v)?.into_iter().map(|h| half::f16::from_bits(h.to_bits())).collect(),
        ),
        DatumType::F32 => TensorData::F32(vec(v)?),
        DatumType::F64 => TensorData::F64(vec(v)?),
        DatumType::String => TensorData::Bytes(vec::<String>(v)?.into_iter().map(String::into_bytes).collect()),
        other => {
            return Err(ServingError::Inference(format!(
                "output '{name}' has datatype {other:?}, which the protocol cannot carry"
            )))
        }
    };
    Ok(Tensor { name: name.to_string(), shape: v.shape().to_vec(), data })
}
