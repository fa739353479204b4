//! Training: L-BFGS for the linear families, mini-batch AdamW or SGD for the MLP.
//!
//! The linear families (logistic, softmax, linear regression) are convex and small, so
//! they are fitted full-batch by L-BFGS, as scikit-learn and PyTorch do: the objective is
//! the (class-weighted) mean loss plus `l2 / 2 · ‖W‖²` (bias not penalized), so
//! `l2 = 1 / (C · n)` matches scikit-learn's `LogisticRegression(C)`. Each evaluation of
//! the objective is one fused pass over the rows (logits, loss, derivative and gradient per
//! row, in f64, on every core when the data is large); the L-BFGS vectors are f64 too. The MLP is trained on mini-batches with AdamW (or SGD with
//! momentum) and early stopping on a validation slice of the training split.
//!
//! Everything random — initialization, shuffling, the validation slice, dropout masks — is
//! drawn from one seeded generator, so the same data and seed give the same weights on CPU.
//! A deadline (Lambda's invocation deadline) can stop training between epochs with a
//! [`Checkpoint`] to resume from in the next invocation. A non-finite loss stops training
//! with [`TrainError::Diverged`].

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::matrix::Matrix;
use crate::model::{Architecture, ModelError};
use crate::spec::{ClassWeight, Family, Optimizer, TaskKind, TrainSection};

mod lbfgs;
mod minibatch;
#[cfg(test)]
mod tests;

use lbfgs::lbfgs_fit;
use minibatch::minibatch;

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

/// One row's loss at logits `z` against its label `y` (the class index for classification),
/// leaving in `z` the loss's derivative by each logit: log-loss through the sigmoid (binary,
/// computed stably) or the softmax (multiclass), half the squared error (regression). The
/// L-BFGS objective and the mini-batch trainer both use it.
#[inline]
fn row_loss(task: TaskKind, z: &mut [f64], y: f64) -> f64 {
    match task {
        TaskKind::Binary => {
            let zv = z[0];
            // log(1 + e^z) - y z.
            let softplus = zv.max(0.0) + (-zv.abs()).exp().ln_1p();
            z[0] = 1.0 / (1.0 + (-zv).exp()) - y;
            softplus - y * zv
        }
        TaskKind::Multiclass => {
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
            let lse = max + sum.ln();
            let yc = y as usize;
            let loss = lse - z[yc];
            for (c, zc) in z.iter_mut().enumerate() {
                *zc = (*zc - lse).exp() - if c == yc { 1.0 } else { 0.0 };
            }
            loss
        }
        TaskKind::Regression => {
            let r = z[0] - y;
            z[0] = r;
            0.5 * r * r
        }
    }
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
