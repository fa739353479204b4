//! Model families: logistic regression, softmax regression, linear regression and the
//! multi-layer perceptron — their manifest and architecture, and [`DenseModel`], the
//! forward pass serving uses (candle-core only). Training's candle modules (`Model`,
//! `init_weights`) are behind the `train` feature.
//!
//! Every family is a stack of `candle_nn::Linear` layers built from a `VarBuilder`: the
//! linear families have one (`out`), the MLP has `hidden.<i>` layers with an activation
//! (and dropout while training) before `out`. Weights are saved and loaded as safetensors
//! bytes. A binary model has one output (the logit of the positive class), a multiclass
//! model one per class, a regression model one (the value).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::spec::{Activation, Family, ModelSpec, TaskKind};

#[cfg(feature = "train")]
mod net;
#[cfg(feature = "train")]
pub(crate) use net::dropout_mask;
#[cfg(feature = "train")]
pub use net::{Model, init_weights, weights_to_safetensors};

/// A hidden unit's activation of its pre-activation `z` (serving's dense forward pass and
/// the MLP trainer's).
#[inline]
pub(crate) fn activate(activation: Activation, z: f32) -> f32 {
    match activation {
        Activation::Relu => z.max(0.0),
        Activation::Tanh => z.tanh(),
        Activation::Gelu => {
            (candle_core::cpu::erf::erf_f32(z * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * z
        }
    }
}

/// Model failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// candle failed (shapes, or a bad weights file).
    #[error("model error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The weights file is not valid safetensors, or misses a tensor.
    #[error("invalid model weights: {0}")]
    Weights(String),
    /// Input of the wrong width.
    #[error("the model takes {expected} features, got {found}")]
    Width {
        /// Expected width.
        expected: usize,
        /// Given width.
        found: usize,
    },
}

/// `models/<model>/<version>/manifest.json`: everything a version is and needs, written
/// after its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelManifest {
    /// The model.
    pub model: String,
    /// The version id (derived from the run).
    pub version: String,
    /// The architecture.
    pub architecture: Architecture,
    /// The hyper-parameters, as validated from the spec.
    pub hyper_parameters: crate::spec::TrainSection,
    /// The optimizer used.
    pub optimizer: crate::spec::Optimizer,
    /// The fitted feature pipeline this model needs (its input contract).
    pub pipeline: crate::features::FeaturePipeline,
    /// The dataset schema's key.
    pub schema: String,
    /// The run trained on.
    pub run_id: String,
    /// The dataset.
    pub dataset: String,
    /// The dataset version.
    pub dataset_version: String,
    /// SHA-256 of the spec.
    pub spec_sha256: String,
    /// Training summary.
    pub training: TrainingSummary,
    /// Artifact keys (`weights`).
    pub artifacts: std::collections::BTreeMap<String, String>,
    /// The spec snapshot it was trained with (`specs/history/…`); older manifests name
    /// only the run's ([`crate::run::RunManifest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// The pipeline run that wrote it (`runs/<run>/record.json`), when it ran in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<String>,
    /// The lambdaml version.
    pub lambdaml_version: String,
    /// The git revision it was built from, when known.
    pub git_revision: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// How training went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Training rows.
    pub rows: usize,
    /// Iterations (L-BFGS) or epochs.
    pub steps: u32,
    /// Final training objective.
    pub loss: f64,
    /// Best validation loss (mini-batch training).
    pub validation_loss: Option<f64>,
    /// Converged (or stopped early) rather than ran out of steps.
    pub converged: bool,
    /// Wall time of the training itself, all invocations together.
    pub seconds: f64,
    /// Invocations it took (more than one when it hit the deadline).
    pub invocations: u32,
    /// With `train.refit = "all"`: the rows the served weights were fitted again on (the
    /// training split and the holdout); the evaluation is of the split fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refit_rows: Option<usize>,
}

/// The shape of a model: everything needed to rebuild it around its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// The family.
    pub family: Family,
    /// The task.
    pub task: TaskKind,
    /// Input width (the pipeline's output dimension).
    pub inputs: usize,
    /// Output width: 1 (binary, regression) or the class count.
    pub outputs: usize,
    /// Hidden layer sizes (MLP only).
    pub hidden: Vec<usize>,
    /// Hidden activation (MLP only).
    pub activation: Activation,
    /// Dropout after each hidden layer while training (MLP only).
    pub dropout: f64,
}

impl Architecture {
    /// The architecture a spec asks for, for `inputs` features and `classes` classes.
    pub fn from_spec(spec: &ModelSpec, inputs: usize, classes: usize) -> Self {
        let outputs = match spec.task.kind {
            TaskKind::Multiclass => classes,
            _ => 1,
        };
        let mlp = spec.train.family == Family::Mlp;
        Architecture {
            family: spec.train.family,
            task: spec.task.kind,
            inputs,
            outputs,
            hidden: if mlp {
                spec.train.hidden.clone()
            } else {
                Vec::new()
            },
            activation: spec.train.activation,
            dropout: if mlp { spec.train.dropout } else { 0.0 },
        }
    }

    /// Layer names and (inputs, outputs), in order.
    pub fn layers(&self) -> Vec<(String, usize, usize)> {
        let mut out = Vec::new();
        let mut width = self.inputs;
        for (i, h) in self.hidden.iter().enumerate() {
            out.push((format!("hidden.{i}"), width, *h));
            width = *h;
        }
        out.push(("out".to_string(), width, self.outputs));
        out
    }
}

/// A model compiled for serving: the same weights as plain row-major `f32` arrays and a
/// forward pass with no tensor allocation, for the few rows a scoring request carries
/// (candle's per-op overhead dominates at that size). Its outputs equal `Model::predict`
/// to float rounding; a test checks it on every family.
#[derive(Debug, Clone)]
pub struct DenseModel {
    /// The architecture.
    pub arch: Architecture,
    /// Per layer: (weights out×in row-major, bias, in, out).
    layers: Vec<(Vec<f32>, Vec<f32>, usize, usize)>,
    widest: usize,
}

impl DenseModel {
    /// Loads weights written by training (`<layer>.weight` out×in, `<layer>.bias`), with
    /// candle-core only: serving links no trainer.
    pub fn from_safetensors(arch: Architecture, bytes: &[u8]) -> Result<Self, ModelError> {
        let tensors = checked_tensors(&arch, bytes)?;
        let mut layers = Vec::new();
        let mut widest = arch.inputs;
        for (name, i, o) in arch.layers() {
            let get = |suffix: &str| -> Result<Vec<f32>, ModelError> {
                let t = &tensors[&format!("{name}.{suffix}")];
                Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
            };
            widest = widest.max(o);
            layers.push((get("weight")?, get("bias")?, i, o));
        }
        Ok(DenseModel {
            arch,
            layers,
            widest,
        })
    }

    /// Values per prediction: the class count (binary: 2) or 1 (regression).
    pub fn output_width(&self) -> usize {
        match self.arch.task {
            TaskKind::Binary => 2,
            TaskKind::Multiclass => self.arch.outputs,
            TaskKind::Regression => 1,
        }
    }

    /// Appends the predictions for the row-major `x` (`rows` × inputs) to `out`, laid out
    /// as `Model::predict` lays them out.
    pub fn predict_into(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut Vec<f64>,
    ) -> Result<(), ModelError> {
        if x.len() != rows * self.arch.inputs {
            return Err(ModelError::Width {
                expected: self.arch.inputs,
                found: x.len().checked_div(rows).unwrap_or(0),
            });
        }
        let mut a = vec![0.0f32; self.widest];
        let mut b = vec![0.0f32; self.widest];
        let last = self.layers.len().saturating_sub(1);
        for row in x.chunks_exact(self.arch.inputs.max(1)).take(rows) {
            a[..row.len()].copy_from_slice(row);
            for (l, (w, bias, i, o)) in self.layers.iter().enumerate() {
                for (j, out_j) in b[..*o].iter_mut().enumerate() {
                    let wj = &w[j * i..(j + 1) * i];
                    let dot: f32 = wj.iter().zip(&a[..*i]).map(|(w, x)| w * x).sum();
                    let z = dot + bias[j];
                    *out_j = if l < last {
                        activate(self.arch.activation, z)
                    } else {
                        z
                    };
                }
                std::mem::swap(&mut a, &mut b);
            }
            let z = &a[..self.arch.outputs];
            match self.arch.task {
                TaskKind::Binary => {
                    let p = 1.0 / (1.0 + (-z[0]).exp());
                    out.push(1.0 - f64::from(p));
                    out.push(f64::from(p));
                }
                TaskKind::Multiclass => {
                    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
                    out.extend(z.iter().map(|v| f64::from((v - max).exp() / sum)));
                }
                TaskKind::Regression => out.push(f64::from(z[0])),
            }
        }
        Ok(())
    }
}

/// Checks that `dense` and a version's fitted `pipeline` belong together — the weights
/// take the pipeline's output width, and give one output per class — and answers the
/// classes in output order (`None` for regression). The score function and batch scoring
/// load a version through it, so a manifest that does not match its weights is refused at
/// load, not at a request.
pub fn check_pairing(
    dense: &DenseModel,
    pipeline: &crate::features::FeaturePipeline,
) -> Result<Option<Vec<String>>, String> {
    if dense.arch.inputs != pipeline.output_dim {
        return Err(format!(
            "the weights take {} inputs but the pipeline makes {}",
            dense.arch.inputs, pipeline.output_dim
        ));
    }
    let classes = match &pipeline.label {
        crate::features::LabelEncoding::Classes { classes, .. } => Some(classes.clone()),
        crate::features::LabelEncoding::Regression { .. } => None,
    };
    if let Some(classes) = &classes
        && classes.len() != dense.output_width()
    {
        return Err(format!(
            "the label has {} classes but the model gives {} outputs",
            classes.len(),
            dense.output_width()
        ));
    }
    Ok(classes)
}

/// The tensors of a weights file, checked against `arch`: every `<layer>.weight` (out×in)
/// and `<layer>.bias` (out) present with its shape.
pub(crate) fn checked_tensors(
    arch: &Architecture,
    bytes: &[u8],
) -> Result<HashMap<String, Tensor>, ModelError> {
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
        .map_err(|e| ModelError::Weights(e.to_string()))?;
    for (name, i, o) in arch.layers() {
        for (suffix, shape) in [("weight", vec![o, i]), ("bias", vec![o])] {
            let key = format!("{name}.{suffix}");
            match tensors.get(&key) {
                Some(t) if t.dims() == shape.as_slice() => {}
                Some(t) => {
                    return Err(ModelError::Weights(format!(
                        "{key} has shape {:?}, expected {shape:?}",
                        t.dims()
                    )));
                }
                None => return Err(ModelError::Weights(format!("{key} is missing"))),
            }
        }
    }
    Ok(tensors)
}

/// Serializes named tensors as safetensors bytes (sorted by name, so the bytes are
/// deterministic).
pub fn tensors_to_safetensors(tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>, ModelError> {
    let mut named: Vec<(&String, &Tensor)> = tensors.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::tensor::serialize(named, None).map_err(|e| ModelError::Weights(e.to_string()))
}
