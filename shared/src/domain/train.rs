//! Training: L-BFGS for the linear families, mini-batch AdamW or SGD for the MLP.
//!
//! The linear families (logistic, softmax, linear regression) are convex and small, so
//! they are fitted full-batch by L-BFGS, as scikit-learn and PyTorch do: the objective is
//! the (class-weighted) mean loss plus `l2 / 2 · ‖W‖²` (bias not penalized), so
//! `l2 = 1 / (C · n)` matches scikit-learn's `LogisticRegression(C)`. The forward and
//! backward matrix products run on candle tensors; the per-row loss and the L-BFGS vectors
//! are accumulated in f64. The MLP is trained on mini-batches with AdamW (or SGD with
//! momentum) and early stopping on a validation slice of the training split.
//!
//! Everything random — initialization, shuffling, the validation slice, dropout masks — is
//! drawn from one seeded generator, so the same data and seed give the same weights on CPU.
//! A deadline (Lambda's invocation deadline) can stop training between epochs with a
//! [`Checkpoint`] to resume from in the next invocation. A non-finite loss stops training
//! with [`TrainError::Diverged`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::dataset::SplitMix64;
use crate::matrix::Matrix;
use crate::model::{
    Architecture, Model, ModelError, init_weights, tensors_to_safetensors, weights_to_safetensors,
};
use crate::spec::{ClassWeight, Family, Optimizer, TaskKind, TrainSection};

/// Training failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The loss became NaN or infinite.
    #[error(
        "training diverged at {unit} {at}: the loss is {loss}; lower the learning rate or check the features"
    )]
    Diverged {
        /// `epoch` or `iteration`.
        unit: &'static str,
        /// Where.
        at: u32,
        /// The loss value.
        loss: f64,
    },
    /// The data cannot be trained on.
    #[error("{0}")]
    Data(String),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// candle failed.
    #[error("candle error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// One progress report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Progress {
    /// Epoch (MLP) or iteration (L-BFGS), from 1.
    pub step: u32,
    /// The last step allowed.
    pub max_steps: u32,
    /// Training objective.
    pub loss: f64,
    /// Validation loss (MLP).
    pub validation_loss: Option<f64>,
}

/// Where a paused training run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Steps done.
    pub step: u32,
    /// Best validation loss so far (MLP).
    pub best_validation: Option<f64>,
    /// Epochs without improvement (MLP).
    pub stale: u32,
    /// The generator's state.
    pub rng: u64,
}

/// A paused run: state plus safetensors of the weights (and optimizer moments, and the
/// best weights so far for early stopping).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The counters.
    pub state: CheckpointState,
    /// Named tensors as safetensors bytes.
    pub tensors: Vec<u8>,
}

/// A finished model.
#[derive(Debug, Clone)]
pub struct Trained {
    /// Weights as safetensors bytes.
    pub weights: Vec<u8>,
    /// Steps run (iterations or epochs).
    pub steps: u32,
    /// Final training objective.
    pub loss: f64,
    /// Best validation loss (MLP).
    pub validation_loss: Option<f64>,
    /// Whether the optimizer converged (L-BFGS) or stopped early (MLP) rather than ran
    /// out of steps.
    pub converged: bool,
}

/// Finished, or paused at the deadline.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Done.
    Done(Trained),
    /// Stopped at the deadline; resume with this checkpoint.
    Paused(Checkpoint),
}

/// Options of [`train`].
pub struct Options<'a> {
    /// Stop (with a checkpoint) when the next step might not finish before this.
    pub deadline: Option<Instant>,
    /// Pause (with a checkpoint) after this many steps in this call, deadline or not.
    pub step_budget: Option<u32>,
    /// Resume from here.
    pub resume: Option<Checkpoint>,
    /// Called after each step.
    pub progress: &'a (dyn Fn(Progress) + Sync),
}

impl std::fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// Per-row weights: 1, or inversely proportional to class frequency ("balanced").
fn sample_weights(y: &[f32], task: TaskKind, classes: usize, scheme: ClassWeight) -> Vec<f64> {
    if task == TaskKind::Regression || scheme == ClassWeight::None {
        return vec![1.0; y.len()];
    }
    let mut counts = vec![0usize; classes.max(2)];
    for v in y {
        if let Some(c) = counts.get_mut(*v as usize) {
            *c += 1;
        }
    }
    let present = counts.iter().filter(|c| **c > 0).count().max(1);
    y.iter()
        .map(|v| y.len() as f64 / (present as f64 * counts[*v as usize].max(1) as f64))
        .collect()
}

/// Trains a model of `arch` on `data` with `params`.
pub fn train(
    arch: &Architecture,
    params: &TrainSection,
    optimizer: Optimizer,
    data: &Matrix,
    classes: usize,
    options: &Options<'_>,
) -> Result<Outcome, TrainError> {
    if data.rows == 0 {
        return Err(TrainError::Data("the training split is empty".into()));
    }
    if arch.task != TaskKind::Regression {
        let mut seen = vec![false; classes.max(2)];
        for v in &data.y {
            if let Some(s) = seen.get_mut(*v as usize) {
                *s = true;
            }
        }
        let present = seen.iter().filter(|s| **s).count();
        if present < 2 {
            return Err(TrainError::Data(format!(
                "the training split has {present} class; a classifier needs at least 2 (check the split or the label)"
            )));
        }
    }
    if data.y.iter().any(|v| !v.is_finite()) || data.x.iter().any(|v| !v.is_finite()) {
        return Err(TrainError::Data(
            "the training matrix has non-finite values".into(),
        ));
    }
    match (arch.family, optimizer) {
        (Family::Mlp, _) | (_, Optimizer::Adamw | Optimizer::Sgd) => {
            minibatch(arch, params, optimizer, data, classes, options)
        }
        _ => lbfgs_fit(arch, params, data, classes, options),
    }
}

// ---------------------------------------------------------------------------------------
// Full-batch L-BFGS for the linear families.

/// The objective of a linear model over a whole matrix: value and gradient with respect to
/// θ = (weight rows, bias), both in f64.
struct LinearObjective {
    task: TaskKind,
    x: Tensor,
    y: Vec<f32>,
    weights: Vec<f64>,
    weight_sum: f64,
    inputs: usize,
    outputs: usize,
    l2: f64,
}

impl LinearObjective {
    fn eval(&self, theta: &[f64]) -> Result<(f64, Vec<f64>), TrainError> {
        let (d, k) = (self.inputs, self.outputs);
        let w: Vec<f32> = theta[..d * k].iter().map(|v| *v as f32).collect();
        let w = Tensor::from_vec(w, (k, d), &Device::Cpu)?;
        let b = &theta[d * k..];
        // One flat copy of the logits (row-major), not one vector per row.
        let z = self.x.matmul(&w.t()?)?.flatten_all()?.to_vec1::<f32>()?;
        let n = z.len() / k;
        let mut residual = vec![0f32; n * k];
        let mut loss = 0.0f64;
        for i in 0..n {
            let sw = self.weights[i] / self.weight_sum;
            let zi: Vec<f64> = (0..k).map(|c| f64::from(z[i * k + c]) + b[c]).collect();
            match self.task {
                TaskKind::Binary => {
                    let (zv, yv) = (zi[0], f64::from(self.y[i]));
                    // log(1 + e^z) - y z, computed stably.
                    let softplus = zv.max(0.0) + (-zv.abs()).exp().ln_1p();
                    loss += sw * (softplus - yv * zv);
                    let p = 1.0 / (1.0 + (-zv).exp());
                    residual[i] = (sw * (p - yv)) as f32;
                }
                TaskKind::Multiclass => {
                    let max = zi.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = zi.iter().map(|v| (v - max).exp()).sum();
                    let lse = max + sum.ln();
                    let yc = self.y[i] as usize;
                    loss += sw * (lse - zi[yc]);
                    for c in 0..k {
                        let p = (zi[c] - lse).exp();
                        residual[i * k + c] = (sw * (p - if c == yc { 1.0 } else { 0.0 })) as f32;
                    }
                }
                TaskKind::Regression => {
                    let r = zi[0] - f64::from(self.y[i]);
                    loss += sw * 0.5 * r * r;
                    residual[i] = (sw * r) as f32;
                }
            }
        }
        let bias_grad: Vec<f64> = (0..k)
            .map(|c| (0..n).map(|i| f64::from(residual[i * k + c])).sum())
            .collect();
        let r = Tensor::from_vec(residual, (n, k), &Device::Cpu)?;
        // ∂/∂W = Rᵀ X  (k × d), computed in f32 by candle, accumulated into f64.
        let gw = r.t()?.matmul(&self.x)?.flatten_all()?.to_vec1::<f32>()?;
        let mut grad: Vec<f64> = gw.iter().map(|v| f64::from(*v)).collect();
        for (g, t) in grad.iter_mut().zip(&theta[..d * k]) {
            *g += self.l2 * t;
        }
        grad.extend(bias_grad);
        loss += 0.5 * self.l2 * theta[..d * k].iter().map(|t| t * t).sum::<f64>();
        Ok((loss, grad))
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn lbfgs_fit(
    arch: &Architecture,
    params: &TrainSection,
    data: &Matrix,
    classes: usize,
    options: &Options<'_>,
) -> Result<Outcome, TrainError> {
    let weights = sample_weights(&data.y, arch.task, classes, params.class_weight);
    let objective = LinearObjective {
        task: arch.task,
        x: Tensor::from_slice(&data.x, (data.rows, data.cols), &Device::Cpu)?,
        y: data.y.clone(),
        weight_sum: weights.iter().sum(),
        weights,
        inputs: arch.inputs,
        outputs: arch.outputs,
        l2: params.l2,
    };
    let size = arch.inputs * arch.outputs + arch.outputs;
    let (mut theta, start) = match &options.resume {
        Some(cp) => (theta_from_tensors(&cp.tensors, size)?, cp.state.step),
        None => (vec![0.0; size], 0),
    };
    let max_iter = params.epochs;
    let memory = 10;
    let (mut fx, mut g) = objective.eval(&theta)?;
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let mut converged = false;
    let mut step = start;
    let mut slowest = Duration::ZERO;
    while step < max_iter {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) <= params.tolerance {
            converged = true;
            break;
        }
        let out_of_time = options
            .deadline
            .is_some_and(|d| Instant::now() + slowest * 2 >= d);
        let out_of_budget = options.step_budget.is_some_and(|b| step - start >= b);
        if out_of_time || out_of_budget {
            let tensors = theta_to_tensors(&theta)?;
            return Ok(Outcome::Paused(Checkpoint {
                state: CheckpointState {
                    step,
                    best_validation: None,
                    stale: 0,
                    rng: 0,
                },
                tensors,
            }));
        }
        let started = Instant::now();
        // Two-loop recursion: d = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(y) {
                *qi -= a * yi;
            }
            alphas.push(a);
        }
        if let Some((s, y, _)) = history.last() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += si * (a - b);
            }
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            history.clear();
            d = g.iter().map(|v| -v).collect();
            slope = dot(&g, &d);
        }
        // Backtracking line search (Armijo); the first step is scaled to the gradient.
        let mut t = if history.is_empty() {
            (1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt()).min(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..40 {
            let candidate: Vec<f64> = theta.iter().zip(&d).map(|(x, di)| x + t * di).collect();
            let (f_new, g_new) = objective.eval(&candidate)?;
            if f_new.is_finite() && f_new <= fx + 1e-4 * t * slope {
                accepted = Some((candidate, f_new, g_new));
                break;
            }
            t *= 0.5;
        }
        step += 1;
        let Some((next, f_new, g_new)) = accepted else {
            if !fx.is_finite() {
                return Err(TrainError::Diverged {
                    unit: "iteration",
                    at: step,
                    loss: fx,
                });
            }
            // No decrease possible along the direction: converged to machine precision.
            converged = true;
            break;
        };
        if !f_new.is_finite() {
            return Err(TrainError::Diverged {
                unit: "iteration",
                at: step,
                loss: f_new,
            });
        }
        let s: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            if history.len() == memory {
                history.remove(0);
            }
            history.push((s, y, 1.0 / sy));
        }
        let improvement = (fx - f_new) / fx.abs().max(f_new.abs()).max(1.0);
        theta = next;
        fx = f_new;
        g = g_new;
        (options.progress)(Progress {
            step,
            max_steps: max_iter,
            loss: fx,
            validation_loss: None,
        });
        slowest = slowest.max(started.elapsed());
        // scipy's L-BFGS-B stops on a relative reduction below factr·eps (factr = 1e7).
        if improvement <= 1e7 * f64::EPSILON {
            converged = true;
            break;
        }
    }
    Ok(Outcome::Done(Trained {
        weights: tensors_to_safetensors(&theta_tensors(&theta, arch)?)?,
        steps: step,
        loss: fx,
        validation_loss: None,
        converged,
    }))
}

fn theta_tensors(
    theta: &[f64],
    arch: &Architecture,
) -> Result<HashMap<String, Tensor>, TrainError> {
    let (d, k) = (arch.inputs, arch.outputs);
    let w: Vec<f32> = theta[..d * k].iter().map(|v| *v as f32).collect();
    let b: Vec<f32> = theta[d * k..].iter().map(|v| *v as f32).collect();
    Ok(HashMap::from([
        (
            "out.weight".to_string(),
            Tensor::from_vec(w, (k, d), &Device::Cpu)?,
        ),
        (
            "out.bias".to_string(),
            Tensor::from_vec(b, k, &Device::Cpu)?,
        ),
    ]))
}

fn theta_to_tensors(theta: &[f64]) -> Result<Vec<u8>, TrainError> {
    let t = Tensor::from_vec(theta.to_vec(), theta.len(), &Device::Cpu)?;
    Ok(tensors_to_safetensors(&HashMap::from([(
        "theta".to_string(),
        t,
    )]))?)
}

fn theta_from_tensors(bytes: &[u8], size: usize) -> Result<Vec<f64>, TrainError> {
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
    let theta = tensors
        .get("theta")
        .ok_or_else(|| TrainError::Data("checkpoint has no theta".into()))?
        .to_vec1::<f64>()?;
    if theta.len() != size {
        return Err(TrainError::Data(format!(
            "checkpoint has {} parameters, the model {size}",
            theta.len()
        )));
    }
    Ok(theta)
}

// ---------------------------------------------------------------------------------------
// Mini-batch training (MLP, or any family with AdamW/SGD).

fn batch_loss(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    sw: &Tensor,
    rng: Option<&mut SplitMix64>,
) -> Result<Tensor, TrainError> {
    let z = model.forward(x, rng)?;
    let per_row = match model.arch.task {
        TaskKind::Binary => {
            let z = z.flatten_all()?;
            // softplus(z) - y z, stably: relu(z) + log(1 + e^-|z|) - y z.
            let softplus = (z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
            (softplus - y.mul(&z)?)?
        }
        TaskKind::Multiclass => {
            let logp = candle_nn::ops::log_softmax(&z, D::Minus1)?;
            let idx = y.to_dtype(DType::U32)?.unsqueeze(1)?;
            logp.gather(&idx, 1)?.flatten_all()?.neg()?
        }
        TaskKind::Regression => {
            let r = (z.flatten_all()? - y)?;
            (r.sqr()? * 0.5)?
        }
    };
    Ok((per_row.mul(sw)?.sum_all()? / sw.sum_all()?.to_scalar::<f32>()? as f64)?)
}

struct Moments {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
}

fn minibatch(
    arch: &Architecture,
    params: &TrainSection,
    optimizer: Optimizer,
    data: &Matrix,
    classes: usize,
    options: &Options<'_>,
) -> Result<Outcome, TrainError> {
    let mut rng = SplitMix64::new(params.seed);
    // The validation slice: a seeded sample of the training split.
    let mut order: Vec<usize> = (0..data.rows).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let n_val = ((data.rows as f64) * params.validation_fraction).round() as usize;
    let n_val = if data.rows - n_val < 2 { 0 } else { n_val };
    let (val_idx, train_idx) = order.split_at(n_val);
    let weights = sample_weights(&data.y, arch.task, classes, params.class_weight);
    let gather = |idx: &[usize]| -> Result<(Tensor, Tensor, Tensor), TrainError> {
        let mut x = Vec::with_capacity(idx.len() * data.cols);
        for &i in idx {
            x.extend_from_slice(data.row(i));
        }
        let y: Vec<f32> = idx.iter().map(|&i| data.y[i]).collect();
        let w: Vec<f32> = idx.iter().map(|&i| weights[i] as f32).collect();
        Ok((
            Tensor::from_vec(x, (idx.len(), data.cols), &Device::Cpu)?,
            Tensor::from_vec(y, idx.len(), &Device::Cpu)?,
            Tensor::from_vec(w, idx.len(), &Device::Cpu)?,
        ))
    };
    let (x_train, y_train, w_train) = gather(train_idx)?;
    let validation = if n_val > 0 {
        Some(gather(val_idx)?)
    } else {
        None
    };

    let varmap: VarMap = init_weights(arch, params.seed)?;
    let names: Vec<String> = {
        let mut n: Vec<String> = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Data("poisoned".into()))?
            .keys()
            .cloned()
            .collect();
        n.sort();
        n
    };
    let vars: Vec<Var> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Data("poisoned".into()))?;
        names.iter().map(|n| data[n].clone()).collect()
    };
    let mut moments = Moments {
        m: vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<Result<_, _>>()?,
        v: vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<Result<_, _>>()?,
        t: 0,
    };
    let mut best: Option<(f64, Vec<Tensor>)> = None;
    let mut stale = 0u32;
    let mut start = 0u32;
    if let Some(cp) = &options.resume {
        let saved = candle_core::safetensors::load_buffer(&cp.tensors, &Device::Cpu)?;
        let get = |k: &str| {
            saved
                .get(k)
                .cloned()
                .ok_or_else(|| TrainError::Data(format!("checkpoint has no {k}")))
        };
        for (i, name) in names.iter().enumerate() {
            vars[i].set(&get(&format!("w.{name}"))?)?;
            moments.m[i] = get(&format!("m.{name}"))?;
            moments.v[i] = get(&format!("v.{name}"))?;
        }
        if let Some(loss) = cp.state.best_validation {
            best = Some((
                loss,
                names
                    .iter()
                    .map(|n| get(&format!("best.{n}")))
                    .collect::<Result<_, _>>()?,
            ));
        }
        moments.t = cp.state.step as i32 * (train_idx.len().div_ceil(params.batch_size)) as i32;
        stale = cp.state.stale;
        start = cp.state.step;
        rng = SplitMix64::new(cp.state.rng);
    }
    let model = Model::from_varmap(arch.clone(), &varmap)?;
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let lr = params.learning_rate;
    let mut epoch = start;
    let mut last_loss = f64::NAN;
    let mut slowest = Duration::ZERO;
    let mut stopped_early = false;
    while epoch < params.epochs {
        let out_of_time = options
            .deadline
            .is_some_and(|d| Instant::now() + slowest * 2 >= d);
        let out_of_budget = options.step_budget.is_some_and(|b| epoch - start >= b);
        if out_of_time || out_of_budget {
            let mut tensors = HashMap::new();
            for (i, name) in names.iter().enumerate() {
                tensors.insert(format!("w.{name}"), vars[i].as_tensor().clone());
                tensors.insert(format!("m.{name}"), moments.m[i].clone());
                tensors.insert(format!("v.{name}"), moments.v[i].clone());
                if let Some((_, b)) = &best {
                    tensors.insert(format!("best.{name}"), b[i].clone());
                }
            }
            return Ok(Outcome::Paused(Checkpoint {
                state: CheckpointState {
                    step: epoch,
                    best_validation: best.as_ref().map(|b| b.0),
                    stale,
                    rng: rng.state(),
                },
                tensors: tensors_to_safetensors(&tensors)?,
            }));
        }
        let started = Instant::now();
        // Shuffle the training rows for this epoch.
        let mut perm: Vec<u32> = (0..train_idx.len() as u32).collect();
        for i in (1..perm.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            perm.swap(i, j);
        }
        let perm = Tensor::from_vec(perm, train_idx.len(), &Device::Cpu)?;
        let (xs, ys, ws) = (
            x_train.index_select(&perm, 0)?,
            y_train.index_select(&perm, 0)?,
            w_train.index_select(&perm, 0)?,
        );
        let mut total = 0.0;
        let mut batches = 0usize;
        let mut offset = 0;
        while offset < train_idx.len() {
            let len = params.batch_size.min(train_idx.len() - offset);
            let (xb, yb, wb) = (
                xs.narrow(0, offset, len)?,
                ys.narrow(0, offset, len)?,
                ws.narrow(0, offset, len)?,
            );
            offset += len;
            let loss = batch_loss(&model, &xb, &yb, &wb, Some(&mut rng))?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(TrainError::Diverged {
                    unit: "epoch",
                    at: epoch + 1,
                    loss: value,
                });
            }
            total += value;
            batches += 1;
            let grads = loss.backward()?;
            moments.t += 1;
            for (i, var) in vars.iter().enumerate() {
                let Some(g) = grads.get(var.as_tensor()) else {
                    continue;
                };
                let p = var.as_tensor();
                let next = match optimizer {
                    Optimizer::Sgd => {
                        // Momentum 0.9, L2 as weight decay.
                        moments.m[i] = ((&moments.m[i] * 0.9)? + g)?;
                        (p - ((&moments.m[i] + (p * params.l2)?)? * lr)?)?
                    }
                    _ => {
                        moments.m[i] = ((&moments.m[i] * b1)? + (g * (1.0 - b1))?)?;
                        moments.v[i] = ((&moments.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                        let mhat = (&moments.m[i] / (1.0 - b1.powi(moments.t)))?;
                        let vhat = (&moments.v[i] / (1.0 - b2.powi(moments.t)))?;
                        let update = ((mhat / (vhat.sqrt()? + eps)?)? + (p * params.l2)?)?;
                        (p - (update * lr)?)?
                    }
                };
                var.set(&next)?;
            }
        }
        epoch += 1;
        last_loss = total / batches.max(1) as f64;
        let validation_loss = match &validation {
            Some((x, y, w)) => Some(f64::from(
                batch_loss(&model, x, y, w, None)?.to_scalar::<f32>()?,
            )),
            None => None,
        };
        (options.progress)(Progress {
            step: epoch,
            max_steps: params.epochs,
            loss: last_loss,
            validation_loss,
        });
        slowest = slowest.max(started.elapsed());
        if let Some(v) = validation_loss {
            if !v.is_finite() {
                return Err(TrainError::Diverged {
                    unit: "epoch",
                    at: epoch,
                    loss: v,
                });
            }
            if best.as_ref().is_none_or(|(b, _)| v < b - 1e-6) {
                best = Some((
                    v,
                    vars.iter()
                        .map(|x| x.as_tensor().copy())
                        .collect::<Result<_, _>>()?,
                ));
                stale = 0;
            } else {
                stale += 1;
                if stale >= params.patience {
                    stopped_early = true;
                    break;
                }
            }
        }
    }
    // Keep the weights that did best on the validation slice.
    if let Some((_, tensors)) = &best {
        for (var, t) in vars.iter().zip(tensors) {
            var.set(t)?;
        }
    }
    Ok(Outcome::Done(Trained {
        weights: weights_to_safetensors(&varmap)?,
        steps: epoch,
        loss: last_loss,
        validation_loss: best.map(|b| b.0),
        converged: stopped_early,
    }))
}
