//! Full-batch L-BFGS for the linear families (logistic, softmax, linear regression), with
//! the curvature pairs kept in checkpoints so a resumed fit takes exactly the steps an
//! uninterrupted one takes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::{
    Checkpoint, CheckpointState, Options, Outcome, Progress, TrainError, Trained, row_loss,
    sample_weights,
};
use crate::matrix::Matrix;
use crate::model::{Architecture, tensors_to_safetensors};
use crate::spec::{TaskKind, TrainSection};

/// The objective of a linear model over a whole matrix: value and gradient with respect to
/// θ = (weight rows, bias), both in f64.
///
/// One fused pass over the rows per evaluation: each row's logits, its loss and the
/// derivative, and its share of the gradient are computed together while the row is in
/// cache (no logits matrix, no residual matrix, no copies between them). The rows are cut
/// into fixed blocks whose partial sums are added in block order, so the result is the same
/// whatever the number of threads that computed the blocks.
struct LinearObjective<'a> {
    task: TaskKind,
    /// Row-major features, `rows × inputs`.
    x: &'a [f32],
    y: &'a [f32],
    /// Each row's weight divided by the weights' sum (the loss is a weighted mean).
    weights: Vec<f64>,
    inputs: usize,
    outputs: usize,
    l2: f64,
    /// Threads for the pass (1 on small data).
    threads: usize,
}

/// The smallest block of rows whose partial loss and gradient are summed on their own.
const BLOCK_ROWS: usize = 4096;

/// Multiply-adds per evaluation below which one thread does the pass: spawning costs more
/// than it saves on small data.
const PARALLEL_WORK: usize = 1 << 20;

/// `Σ a_j b_j` in f64 with four independent sums (which the compiler keeps in vector lanes).
fn dot_f32_f64(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (a4.remainder(), b4.remainder());
    for (x, w) in a4.zip(b4) {
        for l in 0..4 {
            acc[l] += f64::from(x[l]) * w[l];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, w)| f64::from(*x) * w).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

impl<'a> LinearObjective<'a> {
    fn new(
        task: TaskKind,
        data: &'a Matrix,
        weights: Vec<f64>,
        (inputs, outputs): (usize, usize),
        l2: f64,
    ) -> Self {
        let sum: f64 = weights.iter().sum();
        let weights = weights.into_iter().map(|w| w / sum).collect();
        let work = data.rows.saturating_mul(inputs).saturating_mul(outputs);
        let threads = if work >= PARALLEL_WORK {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
        } else {
            1
        };
        Self {
            task,
            x: &data.x,
            y: &data.y,
            weights,
            inputs,
            outputs,
            l2,
            threads,
        }
    }

    fn rows(&self) -> usize {
        self.y.len()
    }

    /// Rows per block: fixed by the row count alone (at most 32 blocks, so the partial
    /// gradients held at once stay a small multiple of the model).
    fn block_rows(&self) -> usize {
        BLOCK_ROWS.max(self.rows().div_ceil(32))
    }

    /// The weighted loss of rows `rows` (without the penalty), their gradient added to
    /// `grad` (`k × d` weights, then `k` biases).
    fn block(&self, w: &[f64], b: &[f64], rows: std::ops::Range<usize>, grad: &mut [f64]) -> f64 {
        let (d, k) = (self.inputs, self.outputs);
        let (gw, gb) = grad.split_at_mut(d * k);
        let mut z = vec![0.0f64; k];
        let mut loss = 0.0f64;
        for i in rows {
            let xi = &self.x[i * d..(i + 1) * d];
            for (c, zc) in z.iter_mut().enumerate() {
                *zc = b[c] + dot_f32_f64(xi, &w[c * d..(c + 1) * d]);
            }
            let sw = self.weights[i];
            let yv = f64::from(self.y[i]);
            // Each z[c] becomes the loss's derivative by logit c, weighted.
            loss += sw * row_loss(self.task, &mut z, yv);
            z.iter_mut().for_each(|v| *v *= sw);
            for (c, r) in z.iter().enumerate() {
                for (g, xj) in gw[c * d..(c + 1) * d].iter_mut().zip(xi) {
                    *g += r * f64::from(*xj);
                }
                gb[c] += r;
            }
        }
        loss
    }

    fn eval(&self, theta: &[f64]) -> Result<(f64, Vec<f64>), TrainError> {
        let (d, k) = (self.inputs, self.outputs);
        let size = d * k + k;
        let (w, b) = theta.split_at(d * k);
        let (n, per_block) = (self.rows(), self.block_rows());
        let blocks = n.div_ceil(per_block);
        let run = |range: std::ops::Range<usize>| -> Vec<(f64, Vec<f64>)> {
            range
                .map(|j| {
                    let mut grad = vec![0.0; size];
                    let rows = j * per_block..((j + 1) * per_block).min(n);
                    (self.block(w, b, rows, &mut grad), grad)
                })
                .collect()
        };
        let threads = self.threads.min(blocks).max(1);
        let partials: Vec<(f64, Vec<f64>)> = if threads == 1 {
            run(0..blocks)
        } else {
            let per_thread = blocks.div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let range = t * per_thread..((t + 1) * per_thread).min(blocks);
                        scope.spawn(move || run(range))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join())
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|_| TrainError::Data("a thread of the L-BFGS pass panicked".into()))?
            .into_iter()
            .flatten()
            .collect()
        };
        let mut loss = 0.0;
        let mut grad = vec![0.0; size];
        for (l, g) in &partials {
            loss += l;
            for (a, v) in grad.iter_mut().zip(g) {
                *a += v;
            }
        }
        for (g, t) in grad[..d * k].iter_mut().zip(w) {
            *g += self.l2 * t;
        }
        loss += 0.5 * self.l2 * w.iter().map(|t| t * t).sum::<f64>();
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
    let objective = LinearObjective::new(
        arch.task,
        data,
        weights,
        (arch.inputs, arch.outputs),
        params.l2,
    );
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
