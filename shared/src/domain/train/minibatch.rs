//! Mini-batch training (the MLP, or any family with AdamW or SGD): a seeded validation
//! slice, shuffled batches, AdamW (or SGD with momentum) and early stopping on the
//! validation loss, with the weights, optimizer moments and best weights checkpointed.
//!
//! The dense stack's forward and backward passes are written out by hand: the matrix
//! products are candle's (its gemm picks the CPU's vector instructions at run time), and
//! everything else — bias, activation, dropout, loss and its derivative, bias gradients and
//! the optimizer — is a plain loop over flat `f32` buffers. Autograd built a graph of
//! some sixty small tensors per batch; this does five products and no graph.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::{
    Checkpoint, CheckpointState, Options, Outcome, Progress, TrainError, Trained, row_loss,
    sample_weights,
};
use crate::dataset::SplitMix64;
use crate::matrix::Matrix;
use crate::model::{Architecture, activate, dropout_mask, init_weights, tensors_to_safetensors};
use crate::spec::{Activation, Optimizer, TrainSection};

/// Rows as flat buffers: features (row-major), labels, sample weights.
struct Rows {
    x: Vec<f32>,
    y: Vec<f32>,
    w: Vec<f32>,
    len: usize,
}

impl Rows {
    fn gather(data: &Matrix, weights: &[f64], idx: &[usize]) -> Self {
        let mut x = Vec::with_capacity(idx.len() * data.cols);
        for &i in idx {
            x.extend_from_slice(data.row(i));
        }
        Rows {
            x,
            y: idx.iter().map(|&i| data.y[i]).collect(),
            w: idx.iter().map(|&i| weights[i] as f32).collect(),
            len: idx.len(),
        }
    }
}

/// The training and validation rows: a seeded sample of the training split is held out
/// (none when it would leave fewer than two rows to train on).
fn split(
    data: &Matrix,
    params: &TrainSection,
    weights: &[f64],
    rng: &mut SplitMix64,
) -> (Rows, Option<Rows>) {
    let mut order: Vec<usize> = (0..data.rows).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let n_val = ((data.rows as f64) * params.validation_fraction).round() as usize;
    let n_val = if data.rows - n_val < 2 { 0 } else { n_val };
    let (val_idx, train_idx) = order.split_at(n_val);
    let validation = (n_val > 0).then(|| Rows::gather(data, weights, val_idx));
    (Rows::gather(data, weights, train_idx), validation)
}

/// `a` (`m × k`, row-major) times `b`, where `b` is `k × n` row-major, or with
/// `b_transposed` the row-major `n × k` matrix whose transpose is meant; `a_transposed`
/// likewise reads `a` as the transpose of a row-major `k × m`. Row-major `m × n` out.
fn product(
    (a, a_transposed): (&[f32], bool),
    (b, b_transposed): (&[f32], bool),
    (m, k, n): (usize, usize, usize),
) -> Result<Vec<f32>, TrainError> {
    let a = if a_transposed {
        Tensor::from_slice(a, (k, m), &Device::Cpu)?.t()?
    } else {
        Tensor::from_slice(a, (m, k), &Device::Cpu)?
    };
    let b = if b_transposed {
        Tensor::from_slice(b, (n, k), &Device::Cpu)?.t()?
    } else {
        Tensor::from_slice(b, (k, n), &Device::Cpu)?
    };
    Ok(a.matmul(&b)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The activation's derivative at `z`.
fn activation_slope(activation: Activation, z: f32) -> f32 {
    match activation {
        Activation::Relu => {
            if z > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Tanh => 1.0 - z.tanh().powi(2),
        Activation::Gelu => {
            let cdf =
                0.5 * (1.0 + candle_core::cpu::erf::erf_f32(z * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * z * z).exp() / (2.0 * std::f32::consts::PI).sqrt();
            cdf + z * pdf
        }
    }
}

/// One layer's parameters: weights (`outputs × inputs`, row-major) and bias, with their
/// gradients and the optimizer's moments.
#[derive(Clone)]
struct Layer {
    name: String,
    inputs: usize,
    outputs: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
    grad_weight: Vec<f32>,
    grad_bias: Vec<f32>,
    /// First and second moments (momentum for SGD), weight then bias.
    m: [Vec<f32>; 2],
    v: [Vec<f32>; 2],
}

impl Layer {
    /// The weights (0) or the bias (1).
    fn param(&self, i: usize) -> &[f32] {
        if i == 0 { &self.weight } else { &self.bias }
    }
}

/// What a forward pass keeps for the backward pass: per layer its input and, for hidden
/// layers, the pre-activations and the dropout scale of each unit (1 without dropout).
struct Pass {
    inputs: Vec<Vec<f32>>,
    pre: Vec<Vec<f32>>,
    keep: Vec<Vec<f32>>,
    out: Vec<f32>,
}

/// One layer's weights and bias.
type LayerWeights = (Vec<f32>, Vec<f32>);

/// The network under training, the optimizer's step count and the best weights so far.
struct State {
    arch: Architecture,
    layers: Vec<Layer>,
    /// Optimizer steps taken (AdamW's bias correction).
    t: i32,
    best: Option<(f64, Vec<LayerWeights>)>,
    /// Epochs without improvement.
    stale: u32,
}

impl State {
    /// Starting weights from [`init_weights`] (the same draws as the candle model's).
    fn new(arch: &Architecture, seed: u64) -> Result<Self, TrainError> {
        let varmap = init_weights(arch, seed)?;
        let data = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Data("poisoned".into()))?;
        let flat = |name: String| -> Result<Vec<f32>, TrainError> {
            let var = data
                .get(&name)
                .ok_or_else(|| TrainError::Data(format!("no initial {name}")))?;
            Ok(var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
        };
        let mut layers = Vec::new();
        for (name, inputs, outputs) in arch.layers() {
            let weight = flat(format!("{name}.weight"))?;
            let bias = flat(format!("{name}.bias"))?;
            let zeros = |v: &Vec<f32>| vec![0.0f32; v.len()];
            layers.push(Layer {
                grad_weight: zeros(&weight),
                grad_bias: zeros(&bias),
                m: [zeros(&weight), zeros(&bias)],
                v: [zeros(&weight), zeros(&bias)],
                name,
                inputs,
                outputs,
                weight,
                bias,
            });
        }
        Ok(State {
            arch: arch.clone(),
            layers,
            t: 0,
            best: None,
            stale: 0,
        })
    }

    /// The tensors `pick` chooses (by layer number and layer; 0 for the weights, 1 for the
    /// bias) added to `out` as `<prefix><layer>.weight` and `<prefix><layer>.bias`.
    fn tensors<'a>(
        &'a self,
        prefix: &str,
        pick: impl Fn(usize, &'a Layer, usize) -> &'a [f32],
        out: &mut HashMap<String, Tensor>,
    ) -> Result<(), TrainError> {
        for (n, l) in self.layers.iter().enumerate() {
            let w = Tensor::from_slice(pick(n, l, 0), (l.outputs, l.inputs), &Device::Cpu)?;
            let b = Tensor::from_slice(pick(n, l, 1), l.outputs, &Device::Cpu)?;
            out.insert(format!("{prefix}{}.weight", l.name), w);
            out.insert(format!("{prefix}{}.bias", l.name), b);
        }
        Ok(())
    }

    /// Restores weights, moments and the best weights from a checkpoint; `batches` per
    /// epoch gives the optimizer's step count.
    fn restore(&mut self, cp: &Checkpoint, batches: usize) -> Result<(), TrainError> {
        let saved = candle_core::safetensors::load_buffer(&cp.tensors, &Device::Cpu)?;
        let get = |k: String, len: usize| -> Result<Vec<f32>, TrainError> {
            let t = saved
                .get(&k)
                .ok_or_else(|| TrainError::Data(format!("checkpoint has no {k}")))?;
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            if v.len() != len {
                return Err(TrainError::Data(format!(
                    "checkpoint's {k} has {} values, the model {len}",
                    v.len()
                )));
            }
            Ok(v)
        };
        let mut best = Vec::new();
        for l in &mut self.layers {
            let (w, b) = (format!("{}.weight", l.name), format!("{}.bias", l.name));
            let (nw, nb) = (l.weight.len(), l.bias.len());
            l.weight = get(format!("w.{w}"), nw)?;
            l.bias = get(format!("w.{b}"), nb)?;
            l.m = [get(format!("m.{w}"), nw)?, get(format!("m.{b}"), nb)?];
            l.v = [get(format!("v.{w}"), nw)?, get(format!("v.{b}"), nb)?];
            if cp.state.best_validation.is_some() {
                best.push((get(format!("best.{w}"), nw)?, get(format!("best.{b}"), nb)?));
            }
        }
        if let Some(loss) = cp.state.best_validation {
            self.best = Some((loss, best));
        }
        self.t = cp.state.step as i32 * batches as i32;
        self.stale = cp.state.stale;
        Ok(())
    }

    /// A checkpoint after `epoch` epochs, the generator at `rng`.
    fn checkpoint(&self, epoch: u32, rng: &SplitMix64) -> Result<Checkpoint, TrainError> {
        let mut tensors = HashMap::new();
        self.tensors("w.", |_, l, i| l.param(i), &mut tensors)?;
        self.tensors("m.", |_, l, i| &l.m[i], &mut tensors)?;
        self.tensors("v.", |_, l, i| &l.v[i], &mut tensors)?;
        if let Some((_, best)) = &self.best {
            let pick = |n: usize, _: &Layer, i| {
                let (w, b) = &best[n];
                if i == 0 { w.as_slice() } else { b.as_slice() }
            };
            self.tensors("best.", pick, &mut tensors)?;
        }
        Ok(Checkpoint {
            state: CheckpointState {
                step: epoch,
                best_validation: self.best.as_ref().map(|b| b.0),
                stale: self.stale,
                rng: rng.state(),
            },
            tensors: tensors_to_safetensors(&tensors)?,
        })
    }

    /// The weights as the model's safetensors (`<layer>.weight`, `<layer>.bias`).
    fn weights(&self) -> Result<Vec<u8>, TrainError> {
        let mut tensors = HashMap::new();
        self.tensors("", |_, l, i| l.param(i), &mut tensors)?;
        Ok(tensors_to_safetensors(&tensors)?)
    }

    /// The forward pass over `rows` rows of `x`; with `dropout`, hidden units are dropped
    /// with the architecture's rate, the masks drawn from it row-major, layer by layer.
    fn forward(
        &self,
        x: &[f32],
        rows: usize,
        mut dropout: Option<&mut SplitMix64>,
    ) -> Result<Pass, TrainError> {
        let last = self.layers.len() - 1;
        let mut pass = Pass {
            inputs: Vec::with_capacity(self.layers.len()),
            pre: Vec::new(),
            keep: Vec::new(),
            out: Vec::new(),
        };
        let mut h = x.to_vec();
        for (i, l) in self.layers.iter().enumerate() {
            let mut z = product((&h, false), (&l.weight, true), (rows, l.inputs, l.outputs))?;
            for row in z.chunks_exact_mut(l.outputs) {
                for (v, b) in row.iter_mut().zip(&l.bias) {
                    *v += b;
                }
            }
            pass.inputs.push(std::mem::take(&mut h));
            if i == last {
                pass.out = z;
                break;
            }
            let activation = self.arch.activation;
            let mut a: Vec<f32> = z.iter().map(|&v| activate(activation, v)).collect();
            let mut keep = Vec::new();
            if let Some(rng) = dropout.as_deref_mut()
                && self.arch.dropout > 0.0
            {
                keep = dropout_mask(rng, a.len(), self.arch.dropout);
                for (v, k) in a.iter_mut().zip(&keep) {
                    *v *= k;
                }
            }
            pass.pre.push(z);
            pass.keep.push(keep);
            h = a;
        }
        Ok(pass)
    }

    /// The weighted mean loss of `out` against `y` and its derivative by each output
    /// (scaled by the weights and their sum, so the gradients are those of the mean).
    fn loss(&self, out: &[f32], y: &[f32], w: &[f32]) -> (f64, Vec<f32>) {
        let k = self.arch.outputs;
        let total: f64 = w.iter().map(|v| f64::from(*v)).sum();
        let mut grad = vec![0.0f32; out.len()];
        let mut z = vec![0.0f64; k];
        let mut loss = 0.0f64;
        for (i, (zi, g)) in out
            .chunks_exact(k)
            .zip(grad.chunks_exact_mut(k))
            .enumerate()
        {
            let wi = f64::from(w[i]) / total;
            for (a, b) in z.iter_mut().zip(zi) {
                *a = f64::from(*b);
            }
            loss += wi * row_loss(self.arch.task, &mut z, f64::from(y[i]));
            for (gc, d) in g.iter_mut().zip(&z) {
                *gc = (wi * d) as f32;
            }
        }
        (loss, grad)
    }

    /// Fills every layer's gradients from `pass` and the loss's derivative `dz` by the
    /// outputs.
    fn backward(&mut self, pass: &Pass, mut dz: Vec<f32>, rows: usize) -> Result<(), TrainError> {
        for i in (0..self.layers.len()).rev() {
            let l = &mut self.layers[i];
            let (n_in, n_out) = (l.inputs, l.outputs);
            // ∂W = dZᵀ H (outputs × inputs), ∂b = Σ rows of dZ.
            l.grad_weight = product((&dz, true), (&pass.inputs[i], false), (n_out, rows, n_in))?;
            l.grad_bias.iter_mut().for_each(|g| *g = 0.0);
            for row in dz.chunks_exact(n_out) {
                for (g, d) in l.grad_bias.iter_mut().zip(row) {
                    *g += d;
                }
            }
            if i == 0 {
                break;
            }
            // ∂H = dZ W (rows × inputs), then through the dropout and the activation.
            let mut dh = product((&dz, false), (&l.weight, false), (rows, n_out, n_in))?;
            let (pre, keep) = (&pass.pre[i - 1], &pass.keep[i - 1]);
            let activation = self.arch.activation;
            for (j, d) in dh.iter_mut().enumerate() {
                let k = keep.get(j).copied().unwrap_or(1.0);
                *d *= k * activation_slope(activation, pre[j]);
            }
            dz = dh;
        }
        Ok(())
    }

    /// One optimizer step from the layers' gradients: AdamW, or SGD with momentum 0.9; L2
    /// as weight decay.
    fn step(&mut self, optimizer: Optimizer, params: &TrainSection) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let (lr, l2) = (params.learning_rate as f32, params.l2 as f32);
        self.t += 1;
        let c1 = (1.0 - 0.9f64.powi(self.t)) as f32;
        let c2 = (1.0 - 0.999f64.powi(self.t)) as f32;
        for l in &mut self.layers {
            let Layer {
                weight,
                bias,
                grad_weight,
                grad_bias,
                m,
                v,
                ..
            } = l;
            for (j, (p, g)) in [(weight, grad_weight), (bias, grad_bias)]
                .into_iter()
                .enumerate()
            {
                let (m, v) = (&mut m[j], &mut v[j]);
                match optimizer {
                    Optimizer::Sgd => {
                        for ((p, g), m) in p.iter_mut().zip(g.iter()).zip(m.iter_mut()) {
                            *m = *m * 0.9 + g;
                            *p -= (*m + *p * l2) * lr;
                        }
                    }
                    _ => {
                        for (((p, g), m), v) in p
                            .iter_mut()
                            .zip(g.iter())
                            .zip(m.iter_mut())
                            .zip(v.iter_mut())
                        {
                            *m = *m * b1 + g * (1.0 - b1);
                            *v = *v * b2 + g * g * (1.0 - b2);
                            let update = (*m / c1) / ((*v / c2).sqrt() + eps) + *p * l2;
                            *p -= update * lr;
                        }
                    }
                }
            }
        }
    }

    /// The weighted mean loss over `rows` without dropout, in chunks of rows.
    fn evaluate(&self, rows: &Rows) -> Result<f64, TrainError> {
        const CHUNK: usize = 8192;
        let d = self.arch.inputs;
        let total: f64 = rows.w.iter().map(|v| f64::from(*v)).sum();
        let mut loss = 0.0;
        let mut start = 0;
        while start < rows.len {
            let end = (start + CHUNK).min(rows.len);
            let pass = self.forward(&rows.x[start * d..end * d], end - start, None)?;
            let w = &rows.w[start..end];
            let part: f64 = w.iter().map(|v| f64::from(*v)).sum();
            let (l, _) = self.loss(&pass.out, &rows.y[start..end], w);
            loss += l * part / total;
            start = end;
        }
        Ok(loss)
    }

    /// Keeps the weights if `loss` is the best validation loss so far; returns whether
    /// patience ran out.
    fn judge(&mut self, loss: f64, patience: u32) -> bool {
        if self.best.as_ref().is_none_or(|(b, _)| loss < b - 1e-6) {
            let weights = self
                .layers
                .iter()
                .map(|l| (l.weight.clone(), l.bias.clone()))
                .collect();
            self.best = Some((loss, weights));
            self.stale = 0;
            false
        } else {
            self.stale += 1;
            self.stale >= patience
        }
    }
}

/// One epoch over shuffled batches of `train`; returns the mean batch loss.
fn epoch(
    state: &mut State,
    train: &Rows,
    (optimizer, params): (Optimizer, &TrainSection),
    rng: &mut SplitMix64,
    number: u32,
) -> Result<f64, TrainError> {
    let mut perm: Vec<u32> = (0..train.len as u32).collect();
    for i in (1..perm.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    let d = state.arch.inputs;
    let (mut total, mut batches) = (0.0, 0usize);
    let (mut xb, mut yb, mut wb) = (Vec::new(), Vec::new(), Vec::new());
    for batch in perm.chunks(params.batch_size.max(1)) {
        xb.clear();
        yb.clear();
        wb.clear();
        for &i in batch {
            let i = i as usize;
            xb.extend_from_slice(&train.x[i * d..(i + 1) * d]);
            yb.push(train.y[i]);
            wb.push(train.w[i]);
        }
        let pass = state.forward(&xb, batch.len(), Some(rng))?;
        let (value, dz) = state.loss(&pass.out, &yb, &wb);
        if !value.is_finite() {
            return Err(TrainError::Diverged {
                unit: "epoch",
                at: number,
                loss: value,
            });
        }
        total += value;
        batches += 1;
        state.backward(&pass, dz, batch.len())?;
        state.step(optimizer, params);
    }
    Ok(total / batches.max(1) as f64)
}

pub(super) fn minibatch(
    arch: &Architecture,
    params: &TrainSection,
    optimizer: Optimizer,
    data: &Matrix,
    classes: usize,
    options: &Options<'_>,
) -> Result<Outcome, TrainError> {
    let mut rng = SplitMix64::new(params.seed);
    let weights = sample_weights(&data.y, arch.task, classes, params.class_weight);
    let (train, validation) = split(data, params, &weights, &mut rng);
    let mut state = State::new(arch, params.seed)?;
    let mut start = 0u32;
    if let Some(cp) = &options.resume {
        state.restore(cp, train.len.div_ceil(params.batch_size))?;
        start = cp.state.step;
        rng = SplitMix64::new(cp.state.rng);
    }
    let mut epoch_no = start;
    let mut last_loss = f64::NAN;
    let mut slowest = Duration::ZERO;
    let mut stopped_early = false;
    while epoch_no < params.epochs {
        let out_of_time = options
            .deadline
            .is_some_and(|d| Instant::now() + slowest * 2 >= d);
        let out_of_budget = options.step_budget.is_some_and(|b| epoch_no - start >= b);
        if out_of_time || out_of_budget {
            return Ok(Outcome::Paused(state.checkpoint(epoch_no, &rng)?));
        }
        let started = Instant::now();
        last_loss = epoch(
            &mut state,
            &train,
            (optimizer, params),
            &mut rng,
            epoch_no + 1,
        )?;
        epoch_no += 1;
        let validation_loss = match &validation {
            Some(v) => Some(state.evaluate(v)?),
            None => None,
        };
        (options.progress)(Progress {
            step: epoch_no,
            max_steps: params.epochs,
            loss: last_loss,
            validation_loss,
        });
        slowest = slowest.max(started.elapsed());
        if let Some(v) = validation_loss {
            if !v.is_finite() {
                return Err(TrainError::Diverged {
                    unit: "epoch",
                    at: epoch_no,
                    loss: v,
                });
            }
            if state.judge(v, params.patience) {
                stopped_early = true;
                break;
            }
        }
    }
    // Keep the weights that did best on the validation slice.
    let mut validation_loss = None;
    if let Some((loss, best)) = state.best.take() {
        for (l, (w, b)) in state.layers.iter_mut().zip(best) {
            l.weight = w;
            l.bias = b;
        }
        validation_loss = Some(loss);
    }
    Ok(Outcome::Done(Trained {
        weights: state.weights()?,
        steps: epoch_no,
        loss: last_loss,
        validation_loss,
        converged: stopped_early,
    }))
}

#[cfg(test)]
mod tests {
    use candle_core::{D, DType, Var};

    use super::*;
    use crate::model::Model;
    use crate::spec::{Family, TaskKind};

    /// The weighted mean loss by candle's autograd, as the trainer computed it before its
    /// backward pass was written out.
    fn candle_loss(model: &Model, x: &Tensor, y: &Tensor, w: &Tensor) -> Tensor {
        let z = model.forward(x, None).unwrap();
        let per_row = match model.arch.task {
            TaskKind::Binary => {
                let z = z.flatten_all().unwrap();
                let softplus = (z.relu().unwrap()
                    + (z.abs().unwrap().neg().unwrap().exp().unwrap() + 1.0)
                        .unwrap()
                        .log()
                        .unwrap())
                .unwrap();
                (softplus - y.mul(&z).unwrap()).unwrap()
            }
            TaskKind::Multiclass => {
                let logp = candle_nn::ops::log_softmax(&z, D::Minus1).unwrap();
                let idx = y.to_dtype(DType::U32).unwrap().unsqueeze(1).unwrap();
                logp.gather(&idx, 1)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .neg()
                    .unwrap()
            }
            TaskKind::Regression => {
                let r = (z.flatten_all().unwrap() - y).unwrap();
                (r.sqr().unwrap() * 0.5).unwrap()
            }
        };
        let total = w.sum_all().unwrap().to_scalar::<f32>().unwrap();
        (per_row.mul(w).unwrap().sum_all().unwrap() / f64::from(total)).unwrap()
    }

    #[test]
    fn the_written_out_backward_pass_equals_candle_autograd() {
        let cases = [
            (TaskKind::Binary, 1, Activation::Relu),
            (TaskKind::Multiclass, 4, Activation::Tanh),
            (TaskKind::Regression, 1, Activation::Gelu),
        ];
        let mut rng = SplitMix64::new(5);
        for (task, outputs, activation) in cases {
            let arch = Architecture {
                family: Family::Mlp,
                task,
                inputs: 6,
                outputs,
                hidden: vec![9, 5],
                activation,
                dropout: 0.0,
            };
            let rows = 37;
            let x: Vec<f32> = (0..rows * 6)
                .map(|_| (rng.next_f64() * 4.0 - 2.0) as f32)
                .collect();
            let y: Vec<f32> = (0..rows)
                .map(|_| match task {
                    TaskKind::Regression => (rng.next_f64() * 3.0) as f32,
                    _ => rng.below(outputs.max(2) as u64) as f32,
                })
                .collect();
            let w: Vec<f32> = (0..rows).map(|_| (0.5 + rng.next_f64()) as f32).collect();

            let mut state = State::new(&arch, 3).unwrap();
            let pass = state.forward(&x, rows, None).unwrap();
            let (loss, dz) = state.loss(&pass.out, &y, &w);
            state.backward(&pass, dz, rows).unwrap();

            let varmap = init_weights(&arch, 3).unwrap();
            let model = Model::from_varmap(arch.clone(), &varmap).unwrap();
            let t =
                |v: &[f32], shape: &[usize]| Tensor::from_slice(v, shape, &Device::Cpu).unwrap();
            let expected =
                candle_loss(&model, &t(&x, &[rows, 6]), &t(&y, &[rows]), &t(&w, &[rows]));
            let value = f64::from(expected.to_scalar::<f32>().unwrap());
            assert!(
                (loss - value).abs() < 1e-5 * value.abs().max(1.0),
                "{task:?}: loss {loss} vs {value}"
            );
            let grads = expected.backward().unwrap();
            let vars: HashMap<String, Var> = varmap.data().lock().unwrap().clone();
            for l in &state.layers {
                for (name, got) in [("weight", &l.grad_weight), ("bias", &l.grad_bias)] {
                    let var = &vars[&format!("{}.{name}", l.name)];
                    let want = grads
                        .get(var.as_tensor())
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    assert_eq!(got.len(), want.len());
                    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                    for (g, e) in got.iter().zip(&want) {
                        assert!(
                            (g - e).abs() <= 1e-4 * scale,
                            "{task:?} {}.{name}: {g} vs {e}",
                            l.name
                        );
                    }
                }
            }
        }
    }
}
