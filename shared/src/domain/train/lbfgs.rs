//! Full-batch L-BFGS for the linear families (logistic, softmax, linear regression), with
//! the curvature pairs kept in checkpoints so a resumed fit takes exactly the steps an
//! uninterrupted one takes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::{
    Checkpoint, CheckpointState, Options, Outcome, Progress, TrainError, Trained, sample_weights,
};
use crate::matrix::Matrix;
use crate::model::{Architecture, tensors_to_safetensors};
use crate::spec::{TaskKind, TrainSection};

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

/// The last curvature pairs `(s, y, 1 / sᵀy)`, oldest first: L-BFGS's picture of the
/// inverse Hessian.
#[derive(Debug, Clone, Default, PartialEq)]
struct History {
    pairs: Vec<(Vec<f64>, Vec<f64>, f64)>,
}

impl History {
    /// Pairs kept (scipy's and PyTorch's default).
    const MEMORY: usize = 10;

    /// Remembers a step `s` and its gradient change `y` when the curvature is positive.
    fn push(&mut self, s: Vec<f64>, y: Vec<f64>) {
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            if self.pairs.len() == Self::MEMORY {
                self.pairs.remove(0);
            }
            self.pairs.push((s, y, 1.0 / sy));
        }
    }

    /// `-H g` by the two-loop recursion.
    fn direction(&self, g: &[f64]) -> Vec<f64> {
        let mut q = g.to_vec();
        let mut alphas = Vec::with_capacity(self.pairs.len());
        for (s, y, rho) in self.pairs.iter().rev() {
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(y) {
                *qi -= a * yi;
            }
            alphas.push(a);
        }
        if let Some((s, y, _)) = self.pairs.last() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, y, rho), a) in self.pairs.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += si * (a - b);
            }
        }
        q.iter().map(|v| -v).collect()
    }
}

/// A point accepted by the line search: parameters, objective, gradient.
type Point = (Vec<f64>, f64, Vec<f64>);

/// Backtracking (Armijo) along `d` from `theta`, starting at step `t`; `None` when no step
/// decreases the objective enough.
fn line_search(
    objective: &LinearObjective,
    theta: &[f64],
    (fx, slope): (f64, f64),
    d: &[f64],
    mut t: f64,
) -> Result<Option<Point>, TrainError> {
    for _ in 0..40 {
        let candidate: Vec<f64> = theta.iter().zip(d).map(|(x, di)| x + t * di).collect();
        let (f_new, g_new) = objective.eval(&candidate)?;
        if f_new.is_finite() && f_new <= fx + 1e-4 * t * slope {
            return Ok(Some((candidate, f_new, g_new)));
        }
        t *= 0.5;
    }
    Ok(None)
}

pub(super) fn lbfgs_fit(
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
    let (mut theta, mut history, start) = match &options.resume {
        Some(cp) => {
            let (theta, history) = from_checkpoint(&cp.tensors, size)?;
            (theta, history, cp.state.step)
        }
        None => (vec![0.0; size], History::default(), 0),
    };
    let max_iter = params.epochs;
    let (mut fx, mut g) = objective.eval(&theta)?;
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
            return Ok(Outcome::Paused(Checkpoint {
                state: CheckpointState {
                    step,
                    best_validation: None,
                    stale: 0,
                    rng: 0,
                },
                tensors: to_checkpoint(&theta, &history)?,
            }));
        }
        let started = Instant::now();
        let mut d = history.direction(&g);
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction: forget the curvature and go down the gradient.
            history = History::default();
            d = g.iter().map(|v| -v).collect();
            slope = dot(&g, &d);
        }
        // The first step is scaled to the gradient.
        let t = if history.pairs.is_empty() {
            (1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt()).min(1.0)
        } else {
            1.0
        };
        let accepted = line_search(&objective, &theta, (fx, slope), &d, t)?;
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
        history.push(s, y);
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

/// θ and the curvature pairs as safetensors (`theta`, `lbfgs.s.<i>`, `lbfgs.y.<i>`, oldest
/// first, in f64).
fn to_checkpoint(theta: &[f64], history: &History) -> Result<Vec<u8>, TrainError> {
    let f64s = |v: &[f64]| Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu);
    let mut tensors = HashMap::from([("theta".to_string(), f64s(theta)?)]);
    for (i, (s, y, _)) in history.pairs.iter().enumerate() {
        tensors.insert(format!("lbfgs.s.{i:02}"), f64s(s)?);
        tensors.insert(format!("lbfgs.y.{i:02}"), f64s(y)?);
    }
    Ok(tensors_to_safetensors(&tensors)?)
}

/// θ and the curvature pairs of a checkpoint (none in checkpoints written before they were
/// kept: the fit then resumes as a fresh L-BFGS from θ).
fn from_checkpoint(bytes: &[u8], size: usize) -> Result<(Vec<f64>, History), TrainError> {
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
    let vector = |name: &str| -> Result<Option<Vec<f64>>, TrainError> {
        let Some(t) = tensors.get(name) else {
            return Ok(None);
        };
        let v = t.to_vec1::<f64>()?;
        if v.len() != size {
            return Err(TrainError::Data(format!(
                "checkpoint's {name} has {} parameters, the model {size}",
                v.len()
            )));
        }
        Ok(Some(v))
    };
    let theta =
        vector("theta")?.ok_or_else(|| TrainError::Data("checkpoint has no theta".into()))?;
    let mut history = History::default();
    for i in 0..History::MEMORY {
        match (
            vector(&format!("lbfgs.s.{i:02}"))?,
            vector(&format!("lbfgs.y.{i:02}"))?,
        ) {
            (Some(s), Some(y)) => history.push(s, y),
            _ => break,
        }
    }
    Ok((theta, history))
}
