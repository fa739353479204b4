//! Training's model: the families as candle modules (`candle_nn::Linear` layers from a
//! `VarBuilder`), deterministic initialization, and weights as safetensors bytes.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};

use super::{Architecture, DenseModel, ModelError, tensors_to_safetensors};
use crate::dataset::SplitMix64;
use crate::spec::{Activation, Family, TaskKind};

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

/// The scale of each of `n` units under dropout at `rate`, drawn in order from `rng`:
/// `1 / (1 - rate)` for a kept unit, 0 for a dropped one (inverted dropout).
pub(crate) fn dropout_mask(rng: &mut SplitMix64, n: usize, rate: f64) -> Vec<f32> {
    let keep = 1.0 - rate;
    (0..n)
        .map(|_| {
            if rng.next_f64() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect()
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
        let tensors = super::checked_tensors(&arch, bytes)?;
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
                    let mask = dropout_mask(rng, h.elem_count(), self.arch.dropout);
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
