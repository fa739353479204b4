#![allow(clippy::unwrap_used, clippy::float_cmp)]

use std::io::{Read, Write};

use super::pca::{Cell, FitColumn, Reconstruction};
use super::*;

const EXPECTED: &str = include_str!("testdata/expected.json");

fn csv_gz(bytes: &[u8]) -> Vec<Vec<f64>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse::<f64>().unwrap()).collect())
        .collect()
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: lambdaml {got} vs NannyML {want} (tolerance {tol})"
    );
}

/// Rows as (truth, probabilities, predicted) from a file of `truth, p…, predicted`.
fn split_rows(rows: &[Vec<f64>], binary: bool) -> (Vec<usize>, Vec<Vec<f64>>, Vec<usize>) {
    let truth = rows.iter().map(|r| r[0] as usize).collect();
    let proba = rows
        .iter()
        .map(|r| {
            if binary {
                vec![1.0 - r[1], r[1]]
            } else {
                r[1..r.len() - 1].to_vec()
            }
        })
        .collect();
    let predicted = rows.iter().map(|r| r[r.len() - 1] as usize).collect();
    (truth, proba, predicted)
}

fn check_against_nannyml(kind: &str, reference: &[u8], analysis: &[u8], names: &[(&str, &str)]) {
    let expected: serde_json::Value = serde_json::from_str(EXPECTED).unwrap();
    let e = &expected[kind];
    let binary = kind == "binary";
    let (truth, proba, predicted) = split_rows(&csv_gz(reference), binary);
    let k = proba[0].len();
    let flat: Vec<f64> = proba.iter().flatten().copied().collect();
    let cbpe = Cbpe::fit(&truth, &flat, &predicted, k);
    // The calibration decision matches NannyML's (made with its own random splits).
    let needs: Vec<bool> = cbpe.calibrators.iter().map(Option::is_some).collect();
    let want: Vec<bool> = if binary {
        vec![e["needs_calibration"].as_bool().unwrap()]
    } else {
        e["needs_calibration"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect()
    };
    assert_eq!(needs, want, "{kind}: calibration decision");
    let (_, a_proba, a_pred) = split_rows(&csv_gz(analysis), binary);
    let size = e["chunk_size"].as_u64().unwrap() as usize;
    let chunks = e["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), a_proba.len().div_ceil(size));
    for (i, chunk) in chunks.iter().enumerate() {
        let rows = &a_proba[i * size..((i + 1) * size).min(a_proba.len())];
        let pred = &a_pred[i * size..((i + 1) * size).min(a_pred.len())];
        let mut acc = cbpe.accumulator();
        for (r, p) in rows.iter().zip(pred) {
            assert!(cbpe.add(&mut acc, r, *p));
        }
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let est = cbpe.estimate(&acc, &refs);
        for (ours, theirs) in names {
            let got = est.get(*ours).unwrap();
            let want = &chunk[*theirs];
            // A multiclass ROC AUC orders rows by one class's raw score; rows tied on it
            // differ in their renormalised calibrated probabilities, and NumPy's unstable
            // argsort orders ties its own way (with kind="stable" NumPy gives ours).
            let tol = if *ours == "roc_auc" && !binary {
                5e-6
            } else {
                1e-9
            };
            close(
                got.value,
                want["value"].as_f64().unwrap(),
                tol,
                &format!("{kind} chunk {i} {ours}"),
            );
            // Sampling errors: NannyML sorts tied scores with an unstable sort for ROC AUC;
            // everything else is the same arithmetic.
            let tol = if *ours == "roc_auc" { 2e-5 } else { 1e-12 };
            close(
                got.sampling_error.unwrap(),
                want["sampling_error"].as_f64().unwrap(),
                tol,
                &format!("{kind} chunk {i} {ours} sampling error"),
            );
            close(
                got.lower.unwrap(),
                want["lower_confidence_boundary"].as_f64().unwrap(),
                1e-4,
                &format!("{kind} chunk {i} {ours} lower"),
            );
        }
    }
}

#[test]
fn binary_cbpe_equals_nannyml_on_its_synthetic_dataset() {
    check_against_nannyml(
        "binary",
        include_bytes!("testdata/binary_reference.csv.gz"),
        include_bytes!("testdata/binary_analysis.csv.gz"),
        &[
            ("accuracy", "accuracy"),
            ("roc_auc", "roc_auc"),
            ("f1", "f1"),
            ("precision", "precision"),
            ("recall", "recall"),
            ("specificity", "specificity"),
        ],
    );
}

#[test]
fn multiclass_cbpe_equals_nannyml_on_its_synthetic_dataset() {
    check_against_nannyml(
        "multiclass",
        include_bytes!("testdata/multiclass_reference.csv.gz"),
        include_bytes!("testdata/multiclass_analysis.csv.gz"),
        &[
            ("accuracy", "accuracy"),
            ("roc_auc", "roc_auc"),
            ("f1_macro", "f1"),
            ("precision_macro", "precision"),
            ("recall_macro", "recall"),
        ],
    );
}

#[test]
fn estimates_follow_a_shift_the_labels_would_show() {
    // A calibrated binary model: truth drawn with the stated probability. Estimated
    // accuracy on confident rows is high, on uncertain rows near one half, with no labels.
    let mut rng = crate::dataset::SplitMix64::new(7);
    let mut draw = |p: f64| usize::from((rng.below(1_000_000) as f64) / 1e6 < p);
    let reference: Vec<f64> = (0..4000)
        .map(|i| (i % 100) as f64 / 100.0 + 0.005)
        .collect();
    let truth: Vec<usize> = reference.iter().map(|p| draw(*p)).collect();
    let proba: Vec<f64> = reference.iter().flat_map(|p| [1.0 - p, *p]).collect();
    let predicted = predicted_classes(&proba, 2);
    let cbpe = Cbpe::fit(&truth, &proba, &predicted, 2);
    let window = |ps: &[f64]| {
        let mut acc = cbpe.accumulator();
        let rows: Vec<Vec<f64>> = ps.iter().map(|p| vec![1.0 - p, *p]).collect();
        for r in &rows {
            cbpe.add(&mut acc, r, argmax(r).0);
        }
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        cbpe.estimate(&acc, &refs)["accuracy"].value
    };
    let confident: Vec<f64> = (0..500)
        .map(|i| if i % 2 == 0 { 0.02 } else { 0.98 })
        .collect();
    let uncertain: Vec<f64> = (0..500).map(|i| 0.45 + (i % 10) as f64 / 100.0).collect();
    let (hi, lo) = (window(&confident), window(&uncertain));
    assert!(hi > 0.9, "confident rows: estimated accuracy {hi}");
    assert!((0.45..0.6).contains(&lo), "uncertain rows: {lo}");
    // A malformed row is refused, not counted.
    let mut acc = cbpe.accumulator();
    assert!(!cbpe.add(&mut acc, &[0.5], 0));
    assert!(!cbpe.add(&mut acc, &[f64::NAN, 0.5], 0));
    assert_eq!(acc.rows, 0);
    assert!(cbpe.estimate(&acc, &[]).is_empty());
}

#[test]
fn isotonic_equals_scikit_learn() {
    // IsotonicRegression(out_of_bounds="clip").fit([1,2,2,3,4,5],[0,1,0,1,0,1]) has
    // X_thresholds_ [1, 2, 3, 4, 5]… pooled to y [0, 0.5, 0.5, 0.5, 1]; trimmed to the points
    // where the fit changes.
    let iso = Isotonic::fit(
        &[1.0, 2.0, 2.0, 3.0, 4.0, 5.0],
        &[0.0, 1.0, 0.0, 1.0, 0.0, 1.0],
    )
    .unwrap();
    assert_eq!(iso.x, vec![1.0, 2.0, 4.0, 5.0]);
    assert_eq!(iso.y, vec![0.0, 0.5, 0.5, 1.0]);
    assert_eq!(iso.apply(0.0), 0.0);
    assert_eq!(iso.apply(1.5), 0.25);
    assert_eq!(iso.apply(4.5), 0.75);
    assert_eq!(iso.apply(9.0), 1.0);
    // isotonic_regression([5, 3, 1, 2, 8, 10, 7, 9, 6, 4]) from scikit-learn's docstring.
    let fit = isotonic::pava(
        &[5.0, 3.0, 1.0, 2.0, 8.0, 10.0, 7.0, 9.0, 6.0, 4.0],
        &[1.0; 10],
    );
    let want = [
        2.75, 2.75, 2.75, 2.75, 7.333_333, 7.333_333, 7.333_333, 7.333_333,
    ];
    for (g, w) in fit.iter().zip(want) {
        close(*g, w, 1e-6, "pava");
    }
    assert!(Isotonic::fit(&[f64::NAN], &[1.0]).is_none());
}

#[test]
fn reconstruction_error_equals_nannyml() {
    let expected: serde_json::Value = serde_json::from_str(EXPECTED).unwrap();
    let e = &expected["reconstruction"];
    let names = [
        "distance_from_office",
        "gas_price_per_litre",
        "public_transportation_cost",
        "tenure",
    ];
    let reference = csv_gz(include_bytes!("testdata/pca_reference.csv.gz"));
    let columns: Vec<(String, FitColumn)> = names
        .iter()
        .enumerate()
        .map(|(f, n)| {
            (
                n.to_string(),
                FitColumn::Numeric(reference.iter().map(|r| r[f]).collect()),
            )
        })
        .collect();
    let size = e["chunk_size"].as_u64().unwrap() as usize;
    let model = Reconstruction::fit(&columns, Some(size)).unwrap();
    assert_eq!(
        model.components.len() as u64,
        e["components"].as_u64().unwrap()
    );
    for (got, want) in model
        .reference_chunks
        .iter()
        .zip(e["reference"].as_array().unwrap())
    {
        close(
            *got,
            want["value"].as_f64().unwrap(),
            1e-9,
            "reference chunk",
        );
    }
    let first = &e["analysis"][0];
    close(
        model.upper,
        first["upper_threshold"].as_f64().unwrap(),
        1e-9,
        "upper threshold",
    );
    match first["lower_threshold"].as_f64() {
        Some(l) => close(model.lower.unwrap(), l, 1e-9, "lower threshold"),
        None => assert!(model.lower.is_none()),
    }
    let analysis = csv_gz(include_bytes!("testdata/pca_analysis.csv.gz"));
    for (i, want) in e["analysis"].as_array().unwrap().iter().enumerate() {
        let mut acc = pca::ErrorAcc::default();
        for row in &analysis[i * size..(i + 1) * size] {
            let cells: Vec<Cell<'_>> = row.iter().map(|v| Cell::Number(*v)).collect();
            acc.add(model.error(&cells));
        }
        let value = acc.mean().unwrap();
        close(value, want["value"].as_f64().unwrap(), 1e-9, "chunk value");
        close(
            acc.sampling_error().unwrap(),
            want["sampling_error"].as_f64().unwrap(),
            1e-9,
            "chunk sampling error",
        );
        assert_eq!(model.alert(value), want["alert"].as_bool().unwrap());
    }
}

#[test]
fn reconstruction_sees_a_broken_correlation_that_marginals_miss() {
    // Two features that move together (with noise) in the reference; in the broken window
    // each keeps its distribution but they no longer move together.
    let mut rng = crate::dataset::SplitMix64::new(11);
    let mut u = move || rng.below(1_000_000) as f64 / 1e6;
    let mut draw = |n: usize| -> Vec<(f64, f64, bool)> {
        (0..n)
            .map(|_| {
                let a = 10.0 * u();
                (a, 2.0 * a + 1.0 + u(), u() < 0.3)
            })
            .collect()
    };
    let reference = draw(5000);
    let columns = vec![
        (
            "a".to_string(),
            FitColumn::Numeric(reference.iter().map(|r| r.0).collect()),
        ),
        (
            "b".to_string(),
            FitColumn::Numeric(reference.iter().map(|r| r.1).collect()),
        ),
        (
            "c".to_string(),
            FitColumn::Categorical(
                reference
                    .iter()
                    .map(|r| Some(if r.2 { "x" } else { "y" }.to_string()))
                    .collect(),
            ),
        ),
    ];
    let model = Reconstruction::fit(&columns, None).unwrap();
    let mean_error = |rows: &[(f64, f64, bool)]| {
        let mut acc = pca::ErrorAcc::default();
        for (a, b, c) in rows {
            let c = if *c { "x" } else { "y" };
            acc.add(model.error(&[Cell::Number(*a), Cell::Number(*b), Cell::Text(c)]));
        }
        acc.mean().unwrap()
    };
    let same = draw(1000);
    let other = draw(1000);
    let broken: Vec<(f64, f64, bool)> = same
        .iter()
        .zip(&other)
        .map(|(s, o)| (s.0, o.1, s.2))
        .collect();
    let (s, b) = (mean_error(&same), mean_error(&broken));
    assert!(
        !model.alert(s),
        "same relation: {s} vs {:?}–{}",
        model.lower,
        model.upper
    );
    assert!(
        model.alert(b),
        "broken relation: {b} vs upper {}",
        model.upper
    );
    // Missing and unseen values are imputed, not errors.
    let e = model.error(&[Cell::Missing, Cell::Number(f64::NAN), Cell::Text("unseen")]);
    assert!(e.is_finite());
}

#[test]
fn dle_estimates_near_nannyml_and_its_sampling_errors_equal() {
    let expected: serde_json::Value = serde_json::from_str(EXPECTED).unwrap();
    let e = &expected["regression"];
    // car_age, km_driven, price_new, accident_count, door_count, fuel, transmission, y_pred,
    // y_true (categories as codes).
    let split = |rows: &[Vec<f64>]| {
        let x: Vec<f64> = rows.iter().flat_map(|r| r[..7].to_vec()).collect();
        let pred: Vec<f64> = rows.iter().map(|r| r[7]).collect();
        let truth: Vec<f64> = rows.iter().map(|r| r[8]).collect();
        (x, pred, truth)
    };
    let reference = csv_gz(include_bytes!("testdata/regression_reference.csv.gz"));
    let (x, pred, truth) = split(&reference);
    let dle = dle::Dle::fit(&x, 7, &pred, &truth).unwrap();
    let analysis = csv_gz(include_bytes!("testdata/regression_analysis.csv.gz"));
    let size = e["chunk_size"].as_u64().unwrap() as usize;
    let mut worst: f64 = 0.0;
    for (i, want) in e["chunks"].as_array().unwrap().iter().enumerate() {
        let rows = &analysis[i * size..(i + 1) * size];
        let mut acc = dle::DleAcc::default();
        for r in rows {
            let mut row = r[..7].to_vec();
            row.push(r[7]);
            assert!(dle.add(&mut acc, &row));
        }
        let est = dle.estimate(&acc);
        for m in ["mae", "rmse"] {
            let theirs = want[m]["value"].as_f64().unwrap();
            let realized = want[m]["realized"].as_f64().unwrap();
            let ours = est[m].value;
            // Our trees are not LightGBM's: within 1 % of NannyML's estimate, and as close to
            // the realized value as NannyML's estimate is, give or take 2 %.
            let rel = (ours - theirs).abs() / theirs;
            worst = worst.max(rel);
            let _ = writeln!(
                std::io::stderr(),
                "DLE chunk {i} {m}: lambdaml {ours:.2}, NannyML {theirs:.2}, realized {realized:.2}"
            );
            assert!(rel < 0.01, "chunk {i} {m}: ours {ours}, NannyML {theirs}");
            assert!(
                (ours - realized).abs() <= (theirs - realized).abs() + 0.02 * realized,
                "chunk {i} {m}: ours {ours}, NannyML {theirs}, realized {realized}"
            );
            // The sampling errors are the same formula on the same holdout.
            close(
                est[m].sampling_error.unwrap(),
                want[m]["sampling_error"].as_f64().unwrap(),
                1e-9 * theirs,
                &format!("chunk {i} {m} sampling error"),
            );
        }
    }
    assert!(worst > 0.0);
    // A window with no readable rows estimates nothing.
    let mut acc = dle::DleAcc::default();
    assert!(!dle.add(&mut acc, &[1.0]));
    assert!(dle.estimate(&acc).is_empty());
}

#[test]
fn degenerate_holdouts_fit_estimators_that_read_back() {
    // A binary model that never predicts the positive class, a multiclass holdout missing a
    // class, a single positive ranked last: undefined metrics have no component, and the
    // estimator survives JSON (which has no NaN).
    let cases: Vec<(Vec<usize>, Vec<f64>, usize)> = vec![
        (
            vec![0, 1, 0, 1, 0, 0],
            [0.1, 0.2, 0.3, 0.4, 0.2, 0.1]
                .iter()
                .flat_map(|p| [1.0 - p, *p])
                .collect(),
            2,
        ),
        (
            vec![0, 1, 0, 1],
            vec![0.7, 0.2, 0.1, 0.2, 0.7, 0.1, 0.6, 0.3, 0.1, 0.3, 0.6, 0.1],
            3,
        ),
        (
            vec![0, 0, 0, 1],
            [0.5, 0.6, 0.7, 0.1]
                .iter()
                .flat_map(|p| [1.0 - p, *p])
                .collect(),
            2,
        ),
    ];
    for (truth, proba, k) in cases {
        let predicted = predicted_classes(&proba, k);
        let cbpe = Cbpe::fit(&truth, &proba, &predicted, k);
        let json = serde_json::to_string(&cbpe).unwrap();
        // NaN would be written as null and not read back as a number.
        let back: Cbpe = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cbpe);
        let mut acc = cbpe.accumulator();
        let rows: Vec<&[f64]> = proba.chunks_exact(k).collect();
        for (r, p) in rows.iter().zip(&predicted) {
            cbpe.add(&mut acc, r, *p);
        }
        for (name, e) in cbpe.estimate(&acc, &rows) {
            assert!(e.value.is_finite(), "{name}: {e:?}");
        }
    }
    // A regressor whose predictions are not numbers, and constant inputs for PCA.
    assert!(dle::Dle::fit(&[1.0, 2.0], 1, &[f64::NAN, f64::NAN], &[1.0, 2.0]).is_none());
    let constant = vec![
        ("a".to_string(), FitColumn::Numeric(vec![3.0; 100])),
        ("b".to_string(), FitColumn::Numeric(vec![1.0; 100])),
    ];
    assert!(Reconstruction::fit(&constant, None).is_none());
}
