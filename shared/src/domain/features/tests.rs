//! Fitting and applying the feature pipeline, against scikit-learn.

use super::*;

fn spec(extra: &str) -> ModelSpec {
    ModelSpec::parse(&format!(
        "[model]\nname = \"m\"\n[dataset]\nname = \"d\"\nlabel = \"y\"\n[task]\nkind = \"binary\"\n{extra}"
    ))
    .unwrap()
}

fn table() -> (Schema, Table) {
    let table = Table {
        names: vec!["a".into(), "c".into(), "k".into(), "y".into()],
        columns: vec![
            Column::Numeric(vec![1.0, 2.0, f64::NAN, 4.0, 5.0, 6.0]),
            Column::Categorical {
                codes: vec![0, 1, 0, crate::dataset::MISSING_CODE, 1, 0],
                dictionary: vec!["red".into(), "blue".into()],
            },
            Column::Numeric(vec![7.0; 6]),
            Column::Categorical {
                codes: vec![0, 1, 0, 1, 0, 1],
                dictionary: vec!["0".into(), "1".into()],
            },
        ],
        rows: 6,
    };
    let schema = Schema {
        columns: vec![],
        label: "y".into(),
    };
    (schema, table)
}

#[test]
fn fit_matches_sklearn_imputer_scaler_onehot() {
    let (schema, table) = table();
    let spec = spec("");
    let all: Vec<usize> = (0..6).collect();
    let p = FeaturePipeline::fit(&spec, &schema, &table, &all).unwrap();
    // numpy: a = [1, 2, 3.6, 4, 5, 6] after mean imputation (mean of 1,2,4,5,6 = 3.6);
    // a.mean() = 3.6, a.std() (ddof=0) = 1.6931233465600393.
    match &p.inputs[0].encoder {
        Encoder::Numeric {
            impute,
            center,
            scale,
        } => {
            assert!((impute - 3.6).abs() < 1e-12);
            assert!((center - 3.6).abs() < 1e-12);
            assert!((scale - 1.693_123_346_560_039_3).abs() < 1e-12);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.output_names, vec!["a", "c=blue", "c=red"]);
    assert_eq!(p.dropped.len(), 1, "the constant column k is dropped");
    assert_eq!(p.dropped[0].name, "k");
    let m = p.transform_table(&table, &all).unwrap();
    assert_eq!(m.cols, 3);
    // Row 3 has c missing: imputed with the most frequent category, red.
    assert_eq!(&m.row(3)[1..], &[0.0, 1.0]);
    assert_eq!(m.y, vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
}

#[test]
fn unseen_categories_follow_the_rule() {
    let (schema, table) = table();
    let all: Vec<usize> = (0..6).collect();
    let ignore = FeaturePipeline::fit(&spec(""), &schema, &table, &all).unwrap();
    let mut out = vec![9.0; ignore.output_dim];
    ignore
        .transform_into(&[RawValue::Number(1.0), RawValue::Text("green")], &mut out)
        .unwrap();
    assert_eq!(&out[1..], &[0.0, 0.0]);
    let strict = FeaturePipeline::fit(
        &spec("[preprocess]\nunseen_category = \"error\""),
        &schema,
        &table,
        &all,
    )
    .unwrap();
    let err = strict
        .transform_into(&[RawValue::Number(1.0), RawValue::Text("green")], &mut out)
        .unwrap_err();
    assert_eq!(err.field, "c");
    assert!(err.reason.contains("green"), "{err}");
    let err = strict
        .transform_into(
            &[RawValue::Number(f64::INFINITY), RawValue::Missing],
            &mut out,
        )
        .unwrap_err();
    assert_eq!(err.field, "a");
    let err = strict
        .transform_into(&[RawValue::Text("abc"), RawValue::Missing], &mut out)
        .unwrap_err();
    assert!(err.reason.contains("expected a number"), "{err}");
}

#[test]
fn random_split_is_seeded_and_time_split_keeps_the_end() {
    let (_, table) = table();
    let a = split_rows(&spec("[split]\nholdout = 0.34\nseed = 1"), &table).unwrap();
    let b = split_rows(&spec("[split]\nholdout = 0.34\nseed = 1"), &table).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        a.1.len(),
        3,
        "ceil(6 * 0.34) rows held out, as scikit-learn does"
    );
    let (train, holdout) =
        split_rows(&spec("[split]\nmethod = \"time\"\nholdout = 0.5"), &table).unwrap();
    assert_eq!(train, vec![0, 1, 2]);
    assert_eq!(holdout, vec![3, 4, 5]);
}

#[test]
fn the_positive_class_goes_last() {
    let (schema, table) = table();
    let all: Vec<usize> = (0..6).collect();
    let p = FeaturePipeline::fit(&spec(""), &schema, &table, &all).unwrap();
    assert_eq!(
        p.label,
        LabelEncoding::Classes {
            name: "y".into(),
            classes: vec!["0".into(), "1".into()]
        }
    );
    let flipped = ModelSpec::parse(
        "[model]\nname = \"m\"\n[dataset]\nname = \"d\"\nlabel = \"y\"\n[task]\nkind = \"binary\"\npositive_class = \"0\"\n",
    )
    .unwrap();
    let p = FeaturePipeline::fit(&flipped, &schema, &table, &all).unwrap();
    assert_eq!(
        p.label,
        LabelEncoding::Classes {
            name: "y".into(),
            classes: vec!["1".into(), "0".into()]
        }
    );
    let mut classes = vec!["10".to_string(), "9".to_string(), "2".to_string()];
    sort_classes(&mut classes);
    assert_eq!(classes, vec!["2", "9", "10"]);
}
