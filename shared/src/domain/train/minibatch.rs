//! Mini-batch training (the MLP, or any family with AdamW or SGD): a seeded validation
//! slice, shuffled batches, AdamW (or SGD with momentum) and early stopping on the
//! validation loss, with the weights, optimizer moments and best weights checkpointed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::VarMap;

use super::{
    Checkpoint, CheckpointState, Options, Outcome, Progress, TrainError, Trained, sample_weights,
};
use crate::dataset::SplitMix64;
use crate::matrix::Matrix;
use crate::model::{
    Architecture, Model, init_weights, tensors_to_safetensors, weights_to_safetensors,
};
use crate::spec::{Optimizer, TaskKind, TrainSection};

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

/// Rows as tensors: features, labels, sample weights.
struct Rows {
    x: Tensor,
    y: Tensor,
    w: Tensor,
    len: usize,
}

impl Rows {
    fn gather(data: &Matrix, weights: &[f64], idx: &[usize]) -> Result<Self, TrainError> {
        let mut x = Vec::with_capacity(idx.len() * data.cols);
        for &i in idx {
            x.extend_from_slice(data.row(i));
        }
        let y: Vec<f32> = idx.iter().map(|&i| data.y[i]).collect();
        let w: Vec<f32> = idx.iter().map(|&i| weights[i] as f32).collect();
        Ok(Rows {
            x: Tensor::from_vec(x, (idx.len(), data.cols), &Device::Cpu)?,
            y: Tensor::from_vec(y, idx.len(), &Device::Cpu)?,
            w: Tensor::from_vec(w, idx.len(), &Device::Cpu)?,
            len: idx.len(),
        })
    }
}

/// The training and validation rows: a seeded sample of the training split is held out
/// (none when it would leave fewer than two rows to train on).
fn split(
    data: &Matrix,
    params: &TrainSection,
    weights: &[f64],
    rng: &mut SplitMix64,
) -> Result<(Rows, Option<Rows>), TrainError> {
    let mut order: Vec<usize> = (0..data.rows).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let n_val = ((data.rows as f64) * params.validation_fraction).round() as usize;
    let n_val = if data.rows - n_val < 2 { 0 } else { n_val };
    let (val_idx, train_idx) = order.split_at(n_val);
    let validation = if n_val > 0 {
        Some(Rows::gather(data, weights, val_idx)?)
    } else {
        None
    };
    Ok((Rows::gather(data, weights, train_idx)?, validation))
}

/// The trainable variables (sorted by name), the optimizer's moments and the best weights
/// so far.
struct State {
    varmap: VarMap,
    names: Vec<String>,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Optimizer steps taken (AdamW's bias correction).
    t: i32,
    best: Option<(f64, Vec<Tensor>)>,
    /// Epochs without improvement.
    stale: u32,
}

impl State {
    fn new(arch: &Architecture, seed: u64) -> Result<Self, TrainError> {
        let varmap: VarMap = init_weights(arch, seed)?;
        let (names, vars) = {
            let data = varmap
                .data()
                .lock()
                .map_err(|_| TrainError::Data("poisoned".into()))?;
            let mut names: Vec<String> = data.keys().cloned().collect();
            names.sort();
            let vars: Vec<Var> = names.iter().map(|n| data[n].clone()).collect();
            (names, vars)
        };
        let zeros = |vars: &[Var]| -> Result<Vec<Tensor>, TrainError> {
            Ok(vars
                .iter()
                .map(|v| v.zeros_like())
                .collect::<Result<_, _>>()?)
        };
        Ok(State {
            m: zeros(&vars)?,
            v: zeros(&vars)?,
            varmap,
            names,
            vars,
            t: 0,
            best: None,
            stale: 0,
        })
    }

    /// Restores weights, moments and the best weights from a checkpoint; `batches` per
    /// epoch gives the optimizer's step count.
    fn restore(&mut self, cp: &Checkpoint, batches: usize) -> Result<(), TrainError> {
        let saved = candle_core::safetensors::load_buffer(&cp.tensors, &Device::Cpu)?;
        let get = |k: &str| {
            saved
                .get(k)
                .cloned()
                .ok_or_else(|| TrainError::Data(format!("checkpoint has no {k}")))
        };
        for (i, name) in self.names.iter().enumerate() {
            self.vars[i].set(&get(&format!("w.{name}"))?)?;
            self.m[i] = get(&format!("m.{name}"))?;
            self.v[i] = get(&format!("v.{name}"))?;
        }
        if let Some(loss) = cp.state.best_validation {
            let best = self
                .names
                .iter()
                .map(|n| get(&format!("best.{n}")))
                .collect::<Result<_, _>>()?;
            self.best = Some((loss, best));
        }
        self.t = cp.state.step as i32 * batches as i32;
        self.stale = cp.state.stale;
        Ok(())
    }

    /// A checkpoint after `epoch` epochs, the generator at `rng`.
    fn checkpoint(&self, epoch: u32, rng: &SplitMix64) -> Result<Checkpoint, TrainError> {
        let mut tensors = HashMap::new();
        for (i, name) in self.names.iter().enumerate() {
            tensors.insert(format!("w.{name}"), self.vars[i].as_tensor().clone());
            tensors.insert(format!("m.{name}"), self.m[i].clone());
            tensors.insert(format!("v.{name}"), self.v[i].clone());
            if let Some((_, b)) = &self.best {
                tensors.insert(format!("best.{name}"), b[i].clone());
            }
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

    /// One optimizer step from `grads`: AdamW, or SGD with momentum 0.9; L2 as weight decay.
    fn step(
        &mut self,
        grads: &GradStore,
        optimizer: Optimizer,
        params: &TrainSection,
    ) -> Result<(), TrainError> {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let lr = params.learning_rate;
        self.t += 1;
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let p = var.as_tensor();
            let next = match optimizer {
                Optimizer::Sgd => {
                    self.m[i] = ((&self.m[i] * 0.9)? + g)?;
                    (p - ((&self.m[i] + (p * params.l2)?)? * lr)?)?
                }
                _ => {
                    self.m[i] = ((&self.m[i] * b1)? + (g * (1.0 - b1))?)?;
                    self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let mhat = (&self.m[i] / (1.0 - b1.powi(self.t)))?;
                    let vhat = (&self.v[i] / (1.0 - b2.powi(self.t)))?;
                    let update = ((mhat / (vhat.sqrt()? + eps)?)? + (p * params.l2)?)?;
                    (p - (update * lr)?)?
                }
            };
            var.set(&next)?;
        }
        Ok(())
    }

    /// Keeps the weights if `loss` is the best validation loss so far; returns whether
    /// patience ran out.
    fn judge(&mut self, loss: f64, patience: u32) -> Result<bool, TrainError> {
        if self.best.as_ref().is_none_or(|(b, _)| loss < b - 1e-6) {
            let weights = self
                .vars
                .iter()
                .map(|x| x.as_tensor().copy())
                .collect::<Result<_, _>>()?;
            self.best = Some((loss, weights));
            self.stale = 0;
            Ok(false)
        } else {
            self.stale += 1;
            Ok(self.stale >= patience)
        }
    }
}

/// One epoch over shuffled batches of `train`; returns the mean batch loss.
fn epoch(
    model: &Model,
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
    let perm = Tensor::from_vec(perm, train.len, &Device::Cpu)?;
    let (xs, ys, ws) = (
        train.x.index_select(&perm, 0)?,
        train.y.index_select(&perm, 0)?,
        train.w.index_select(&perm, 0)?,
    );
    let (mut total, mut batches, mut offset) = (0.0, 0usize, 0);
    while offset < train.len {
        let len = params.batch_size.min(train.len - offset);
        let (xb, yb, wb) = (
            xs.narrow(0, offset, len)?,
            ys.narrow(0, offset, len)?,
            ws.narrow(0, offset, len)?,
        );
        offset += len;
        let loss = batch_loss(model, &xb, &yb, &wb, Some(rng))?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        if !value.is_finite() {
            return Err(TrainError::Diverged {
                unit: "epoch",
                at: number,
                loss: value,
            });
        }
        total += value;
        batches += 1;
        state.step(&loss.backward()?, optimizer, params)?;
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
    let (train, validation) = split(data, params, &weights, &mut rng)?;
    let mut state = State::new(arch, params.seed)?;
    let mut start = 0u32;
    if let Some(cp) = &options.resume {
        state.restore(cp, train.len.div_ceil(params.batch_size))?;
        start = cp.state.step;
        rng = SplitMix64::new(cp.state.rng);
    }
    let model = Model::from_varmap(arch.clone(), &state.varmap)?;
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
            &model,
            &mut state,
            &train,
            (optimizer, params),
            &mut rng,
            epoch_no + 1,
        )?;
        epoch_no += 1;
        let validation_loss = match &validation {
            Some(v) => Some(f64::from(
                batch_loss(&model, &v.x, &v.y, &v.w, None)?.to_scalar::<f32>()?,
            )),
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
            if state.judge(v, params.patience)? {
                stopped_early = true;
                break;
            }
        }
    }
    // Keep the weights that did best on the validation slice.
    if let Some((_, tensors)) = &state.best {
        for (var, t) in state.vars.iter().zip(tensors) {
            var.set(t)?;
        }
    }
    Ok(Outcome::Done(Trained {
        weights: weights_to_safetensors(&state.varmap)?,
        steps: epoch_no,
        loss: last_loss,
        validation_loss: state.best.map(|b| b.0),
        converged: stopped_early,
    }))
}
