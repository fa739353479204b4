//! Model families as candle modules: logistic regression, softmax regression, linear
//! regression and the multi-layer perceptron.
//!
//! Every family is a stack of `candle_nn::Linear` layers built from a `VarBuilder`: the
//! linear families have one (`out`), the MLP has `hidden.<i>` layers with an activation
//! (and dropout while training) before `out`. Weights are saved and loaded as safetensors
//! bytes. A binary model has one output (the logit of the positive class), a multiclass
//! model one per class, a regression model one (the value).

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::dataset::SplitMix64;
use crate::spec::{Activation, Family, ModelSpec, TaskKind};

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

/// Deterministic initialization (PyTorch's default for `nn.Linear`: uniform in
/// ±1/sqrt(fan_in)) from a seed, so the same seed gives the same starting weights on any
/// machine. Linear families start at zero, as scikit-learn's solvers do.
pub fn init_weights(arch: &Architecture, seed: u64) -> Result<VarMap, ModelError> {
    let varmap = VarMap::new();
    let mut rng = SplitMix64::new(seed);
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Weights("poisoned".into()))?;
        for (name, fan_in, fan_out) in arch.layers() {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let mut draw = |n: usize| -> Vec<f32> {
                if arch.family == Family::Mlp {
                    (0..n)
                        .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                        .collect()
                } else {
                    vec![0.0; n]
                }
            };
            let w = Tensor::from_vec(draw(fan_in * fan_out), (fan_out, fan_in), &Device::Cpu)?;
            let b = Tensor::from_vec(draw(fan_out), fan_out, &Device::Cpu)?;
            data.insert(format!("{name}.weight"), candle_core::Var::from_tensor(&w)?);
            data.insert(format!("{name}.bias"), candle_core::Var::from_tensor(&b)?);
        }
    }
    Ok(varmap)
}

/// A model: its architecture and layers.
#[derive(Debug, Clone)]
pub struct Model {
    /// The architecture.
    pub arch: Architecture,
    layers: Vec<Linear>,
}

impl Model {
    /// Builds the layers from `vb` (which must hold every `<layer>.weight`/`.bias`).
    pub fn new(arch: Architecture, vb: VarBuilder<'_>) -> Result<Self, ModelError> {
        let layers = arch
            .layers()
            .into_iter()
            .map(|(name, i, o)| candle_nn::linear(i, o, vb.pp(name)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Model { arch, layers })
    }

    /// A model over the variables of `varmap` (training).
    pub fn from_varmap(arch: Architecture, varmap: &VarMap) -> Result<Self, ModelError> {
        Self::new(
            arch,
            VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu),
        )
    }

    /// Loads weights written by [`weights_to_safetensors`].
    pub fn from_safetensors(arch: Architecture, bytes: &[u8]) -> Result<Self, ModelError> {
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
        Self::new(
            arch,
            VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
        )
    }

    /// Logits (or values) for a batch `x` of shape (rows, inputs). With `dropout`, hidden
    /// activations are dropped with the architecture's rate using masks drawn from it.
    pub fn forward(
        &self,
        x: &Tensor,
        mut dropout: Option<&mut SplitMix64>,
    ) -> Result<Tensor, ModelError> {
        let mut h = x.clone();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i < last {
                h = match self.arch.activation {
                    Activation::Relu => h.relu()?,
                    Activation::Tanh => h.tanh()?,
                    Activation::Gelu => h.gelu_erf()?,
                };
                if let Some(rng) = dropout.as_deref_mut()
                    && self.arch.dropout > 0.0
                {
                    let keep = 1.0 - self.arch.dropout;
                    let n = h.elem_count();
                    let mask: Vec<f32> = (0..n)
                        .map(|_| {
                            if rng.next_f64() < keep {
                                (1.0 / keep) as f32
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    h = h.mul(&Tensor::from_vec(mask, h.dims(), &Device::Cpu)?)?;
                }
            }
        }
        Ok(h)
    }

    /// Class probabilities (rows × classes, row-major; binary gives `[1 - p, p]`) or, for
    /// regression, one value per row.
    pub fn predict(&self, x: &Tensor) -> Result<Vec<f64>, ModelError> {
        let (_, width) = x.dims2()?;
        if width != self.arch.inputs {
            return Err(ModelError::Width {
                expected: self.arch.inputs,
                found: width,
            });
        }
        let out = self.forward(x, None)?;
        Ok(match self.arch.task {
            TaskKind::Binary => {
                let p = candle_nn::ops::sigmoid(&out)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                p.into_iter()
                    .flat_map(|p| [1.0 - f64::from(p), f64::from(p)])
                    .collect()
            }
            TaskKind::Multiclass => candle_nn::ops::softmax_last_dim(&out)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect(),
            TaskKind::Regression => out
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect(),
        })
    }

    /// Predictions for a row-major f32 matrix.
    pub fn predict_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f64>, ModelError> {
        let t = Tensor::from_slice(x, (rows, x.len() / rows.max(1)), &Device::Cpu)?;
        self.predict(&t)
    }
}

/// A model compiled for serving: the same weights as plain row-major `f32` arrays and a
/// forward pass with no tensor allocation, for the few rows a scoring request carries
/// (candle's per-op overhead dominates at that size). Its outputs equal [`Model::predict`]
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
    /// Copies the weights out of `model`.
    pub fn from_model(model: &Model) -> Result<Self, ModelError> {
        let mut layers = Vec::with_capacity(model.layers.len());
        let mut widest = model.arch.inputs;
        for ((_, i, o), layer) in model.arch.layers().into_iter().zip(&model.layers) {
            let w = layer.weight().flatten_all()?.to_vec1::<f32>()?;
            let b = match layer.bias() {
                Some(b) => b.to_vec1::<f32>()?,
                None => vec![0.0; o],
            };
            widest = widest.max(o);
            layers.push((w, b, i, o));
        }
        Ok(DenseModel {
            arch: model.arch.clone(),
            layers,
            widest,
        })
    }

    /// Loads weights written by [`weights_to_safetensors`].
    pub fn from_safetensors(arch: Architecture, bytes: &[u8]) -> Result<Self, ModelError> {
        Self::from_model(&Model::from_safetensors(arch, bytes)?)
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
    /// as [`Model::predict`] lays them out.
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
                        match self.arch.activation {
                            Activation::Relu => z.max(0.0),
                            Activation::Tanh => z.tanh(),
                            Activation::Gelu => {
                                (candle_core::cpu::erf::erf_f32(
                                    z * std::f32::consts::FRAC_1_SQRT_2,
                                ) + 1.0)
                                    * 0.5
                                    * z
                            }
                        }
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

/// Serializes the variables of `varmap` as safetensors bytes.
pub fn weights_to_safetensors(varmap: &VarMap) -> Result<Vec<u8>, ModelError> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Weights("poisoned".into()))?;
    let tensors: HashMap<String, Tensor> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    drop(data);
    tensors_to_safetensors(&tensors)
}

/// Serializes named tensors as safetensors bytes (sorted by name, so the bytes are
/// deterministic).
pub fn tensors_to_safetensors(tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>, ModelError> {
    let mut named: Vec<(&String, &Tensor)> = tensors.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::tensor::serialize(named, None).map_err(|e| ModelError::Weights(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch(
        family: Family,
        task: TaskKind,
        outputs: usize,
        activation: Activation,
    ) -> Architecture {
        Architecture {
            family,
            task,
            inputs: 7,
            outputs,
            hidden: if family == Family::Mlp {
                vec![9, 5]
            } else {
                vec![]
            },
            activation,
            dropout: 0.0,
        }
    }

    #[test]
    fn the_dense_serving_model_equals_the_candle_model() {
        let cases = [
            arch(Family::Logistic, TaskKind::Binary, 1, Activation::Relu),
            arch(Family::Softmax, TaskKind::Multiclass, 3, Activation::Relu),
            arch(Family::Linear, TaskKind::Regression, 1, Activation::Relu),
            arch(Family::Mlp, TaskKind::Binary, 1, Activation::Relu),
            arch(Family::Mlp, TaskKind::Multiclass, 4, Activation::Tanh),
            arch(Family::Mlp, TaskKind::Regression, 1, Activation::Gelu),
        ];
        let mut rng = SplitMix64::new(3);
        for a in cases {
            let varmap = init_weights(&a, 11).unwrap();
            let bytes = weights_to_safetensors(&varmap).unwrap();
            let model = Model::from_safetensors(a.clone(), &bytes).unwrap();
            let dense = DenseModel::from_safetensors(a.clone(), &bytes).unwrap();
            let rows = 13;
            let x: Vec<f32> = (0..rows * a.inputs)
                .map(|_| (rng.next_f64() * 6.0 - 3.0) as f32)
                .collect();
            let expected = model.predict_rows(&x, rows).unwrap();
            let mut got = Vec::new();
            dense.predict_into(&x, rows, &mut got).unwrap();
            assert_eq!(got.len(), rows * dense.output_width(), "{a:?}");
            assert_eq!(got.len(), expected.len());
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() < 1e-5, "{a:?}: {g} vs {e}");
            }
            assert!(
                dense.predict_into(&x[..5], 1, &mut got).is_err(),
                "wrong width is refused"
            );
        }
    }
}
