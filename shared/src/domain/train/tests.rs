//! The trainer's own behaviour: resuming is exact, early stopping stops and keeps the best
//! weights. (Parity with scikit-learn is tested end to end in functions/train/tests.)

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use super::*;
use crate::dataset::SplitMix64;
use crate::spec::Activation;

/// `rows` × `cols` features in [-2, 2) and a label from a fixed linear rule plus noise:
/// two classes, three classes, or a value.
fn data(task: TaskKind, rows: usize, cols: usize, seed: u64) -> Matrix {
    let mut rng = SplitMix64::new(seed);
    let mut x = Vec::with_capacity(rows * cols);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let row: Vec<f32> = (0..cols)
            .map(|_| (rng.next_f64() * 4.0 - 2.0) as f32)
            .collect();
        let score: f64 = row
            .iter()
            .enumerate()
            .map(|(j, v)| f64::from(*v) * (j as f64 - 1.5))
            .sum::<f64>()
            + rng.next_f64()
            - 0.5;
        y.push(match task {
            TaskKind::Binary => f32::from(u8::from(score > 0.0)),
            TaskKind::Multiclass => {
                if score < -1.0 {
                    0.0
                } else if score < 1.0 {
                    1.0
                } else {
                    2.0
                }
            }
            TaskKind::Regression => score as f32,
        });
        x.extend(row);
    }
    Matrix { rows, cols, x, y }
}

fn arch(family: Family, task: TaskKind, inputs: usize, outputs: usize) -> Architecture {
    Architecture {
        family,
        task,
        inputs,
        outputs,
        hidden: if family == Family::Mlp {
            vec![8]
        } else {
            vec![]
        },
        activation: Activation::Relu,
        dropout: 0.0,
    }
}

/// The optimizer a spec with these settings trains with.
fn optimizer(params: &TrainSection) -> Optimizer {
    params.optimizer.unwrap_or(match params.family {
        Family::Mlp => Optimizer::Adamw,
        _ => Optimizer::Lbfgs,
    })
}

fn run(
    arch: &Architecture,
    params: &TrainSection,
    data: &Matrix,
    classes: usize,
    budget: Option<u32>,
    resume: Option<Checkpoint>,
) -> Outcome {
    let options = Options {
        deadline: None,
        step_budget: budget,
        resume,
        progress: &|_| {},
    };
    train(arch, params, optimizer(params), data, classes, &options).unwrap()
}

fn done(outcome: Outcome) -> Trained {
    match outcome {
        Outcome::Done(t) => t,
        Outcome::Paused(_) => panic!("paused without a budget"),
    }
}

fn paused(outcome: Outcome) -> Checkpoint {
    match outcome {
        Outcome::Paused(c) => c,
        Outcome::Done(t) => panic!("finished in {} steps before the budget ran out", t.steps),
    }
}

#[test]
fn an_interrupted_lbfgs_fit_resumes_to_exactly_the_uninterrupted_weights() {
    let cases = [
        (Family::Logistic, TaskKind::Binary, 1, 2),
        (Family::Softmax, TaskKind::Multiclass, 3, 3),
        (Family::Linear, TaskKind::Regression, 1, 1),
    ];
    for (family, task, outputs, classes) in cases {
        let data = data(task, 300, 5, 11);
        let arch = arch(family, task, 5, outputs);
        let params = TrainSection {
            family,
            epochs: 200,
            l2: 1e-3,
            tolerance: 1e-9,
            ..TrainSection::default()
        };
        let whole = done(run(&arch, &params, &data, classes, None, None));
        assert!(
            whole.steps > 5,
            "{family:?}: too easy to test a resume ({} steps)",
            whole.steps
        );
        // Paused twice: after 2 steps, then 2 more.
        let first = paused(run(&arch, &params, &data, classes, Some(2), None));
        assert_eq!(first.state.step, 2);
        let kept = candle_core::safetensors::load_buffer(&first.tensors, &candle_core::Device::Cpu)
            .unwrap();
        assert!(
            kept.contains_key("lbfgs.s.00") && kept.contains_key("lbfgs.y.01"),
            "{family:?}: the checkpoint keeps the curvature pairs: {:?}",
            kept.keys().collect::<Vec<_>>()
        );
        let second = paused(run(&arch, &params, &data, classes, Some(2), Some(first)));
        assert_eq!(second.state.step, 4);
        let resumed = done(run(&arch, &params, &data, classes, None, Some(second)));
        assert_eq!(resumed.steps, whole.steps, "{family:?}");
        assert_eq!(resumed.loss.to_bits(), whole.loss.to_bits(), "{family:?}");
        assert_eq!(
            resumed.weights, whole.weights,
            "{family:?}: the same weights, bit for bit"
        );
    }
}

#[test]
fn a_checkpoint_without_curvature_pairs_still_resumes_to_a_fit() {
    // Checkpoints written before the pairs were kept hold θ alone: the fit restarts its
    // curvature from there and still converges to the same optimum (convex problem).
    let data = data(TaskKind::Binary, 300, 5, 12);
    let arch = arch(Family::Logistic, TaskKind::Binary, 5, 1);
    let params = TrainSection {
        epochs: 200,
        l2: 1e-3,
        tolerance: 1e-9,
        ..TrainSection::default()
    };
    let whole = done(run(&arch, &params, &data, 2, None, None));
    let cp = paused(run(&arch, &params, &data, 2, Some(3), None));
    let tensors =
        candle_core::safetensors::load_buffer(&cp.tensors, &candle_core::Device::Cpu).unwrap();
    let theta_only = crate::model::tensors_to_safetensors(
        &tensors.into_iter().filter(|(k, _)| k == "theta").collect(),
    )
    .unwrap();
    let resumed = done(run(
        &arch,
        &params,
        &data,
        2,
        None,
        Some(Checkpoint {
            state: cp.state,
            tensors: theta_only,
        }),
    ));
    assert!(
        (resumed.loss - whole.loss).abs() <= 1e-7 * whole.loss.abs().max(1.0),
        "{} vs {}",
        resumed.loss,
        whole.loss
    );
}

#[test]
fn early_stopping_stops_after_patience_and_keeps_the_best_validation_weights() {
    // Few rows and a large learning rate: the validation loss bottoms out early.
    let data = data(TaskKind::Binary, 120, 4, 13);
    let arch = arch(Family::Mlp, TaskKind::Binary, 4, 1);
    let params = TrainSection {
        family: Family::Mlp,
        epochs: 500,
        learning_rate: 0.05,
        batch_size: 16,
        patience: 3,
        validation_fraction: 0.25,
        seed: 5,
        ..TrainSection::default()
    };
    let seen = Mutex::new(Vec::new());
    let record = |p: Progress| seen.lock().unwrap().push(p.validation_loss.unwrap());
    let options = Options {
        deadline: None,
        step_budget: None,
        resume: None,
        progress: &record,
    };
    let trained = match train(&arch, &params, optimizer(&params), &data, 2, &options).unwrap() {
        Outcome::Done(t) => t,
        Outcome::Paused(_) => panic!("paused"),
    };
    let seen = seen.into_inner().unwrap();
    assert!(trained.converged, "stopped early, not at the epoch limit");
    assert!(trained.steps < params.epochs, "{} epochs", trained.steps);
    assert_eq!(seen.len(), trained.steps as usize);
    // The rule: an epoch is the new best when it beats the best by more than 1e-6.
    let (mut best, mut best_at) = (f64::INFINITY, 0);
    for (i, v) in seen.iter().enumerate() {
        if *v < best - 1e-6 {
            (best, best_at) = (*v, i);
        }
    }
    assert_eq!(
        trained.validation_loss,
        Some(best),
        "the best loss is reported"
    );
    assert_eq!(
        trained.steps as usize,
        best_at + 1 + params.patience as usize,
        "stopped exactly `patience` epochs after the best one: {seen:?}"
    );
    assert!(
        seen[best_at + 1..].iter().all(|v| *v >= best - 1e-6),
        "no later epoch beat it"
    );
}
