//! The feature pipeline: fitted once on the training split, applied everywhere.
//!
//! A [`FeaturePipeline`] turns a row of raw feature values into the model's input vector:
//! numeric features are imputed (mean, median or zero) and standardized with the training
//! split's statistics; categorical features are imputed with their most frequent value and
//! one-hot encoded over the categories seen in training, with an explicit rule for a
//! category it has not seen (all zeros, or an error). Constant and all-missing columns are
//! dropped and listed with their reason. The fitted pipeline is an artifact of the model
//! version (`pipeline.json`); preprocess, training, evaluation and the score function all
//! call the same [`FeaturePipeline::transform_into`] — nothing is re-implemented for
//! serving — and it does no allocation per row.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::dataset::Mt19937;
use crate::dataset::{Column, ColumnType, Schema, Table};
use crate::matrix::Matrix;
use crate::spec::{
    ModelSpec, NumericImpute, SplitMethod, TaskKind, UnknownFeature, UnseenCategory,
};

/// Fitting or applying the pipeline failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeatureError {
    /// A spec names a column the dataset does not have.
    #[error("`{key}` names column {column:?}, which is not in the dataset")]
    UnknownColumn {
        /// The spec key.
        key: &'static str,
        /// The column.
        column: String,
    },
    /// Nothing left to learn from.
    #[error("no usable features: {0}")]
    NoFeatures(String),
    /// Too few rows to split.
    #[error("cannot split {rows} rows into non-empty train and holdout sets")]
    TooFewRows {
        /// Rows available.
        rows: usize,
    },
    /// A label value outside the known classes.
    #[error("label value {0:?} is not one of the classes")]
    UnknownClass(String),
    /// The spec's positive class is not a class.
    #[error("`task.positive_class` {value:?} is not a class of the label (classes: {classes})")]
    PositiveClass {
        /// The configured value.
        value: String,
        /// The classes.
        classes: String,
    },
}

/// Why one value of one row could not be transformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {reason}")]
pub struct TransformError {
    /// The feature.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// A raw feature value as a request or a dataset row supplies it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue<'a> {
    /// Absent or null.
    Missing,
    /// A number (booleans are 0/1).
    Number(f64),
    /// A string.
    Text(&'a str),
}

/// How one input feature is encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "encoder", rename_all = "snake_case")]
pub enum Encoder {
    /// `(x or impute - center) / scale`: one output.
    Numeric {
        /// The value used for a missing input.
        impute: f64,
        /// Subtracted (the training mean after imputation; 0 without standardization).
        center: f64,
        /// Divided by (the training standard deviation, ddof = 0; 1 without).
        scale: f64,
    },
    /// One output per category, 1.0 for the row's category.
    OneHot {
        /// The categories, sorted.
        categories: Vec<String>,
        /// The category used for a missing input.
        impute: String,
        /// What to do with a category not in `categories`.
        unseen: UnseenCategory,
    },
}

impl Encoder {
    fn width(&self) -> usize {
        match self {
            Encoder::Numeric { .. } => 1,
            Encoder::OneHot { categories, .. } => categories.len(),
        }
    }
}

impl InputFeature {
    /// Writes this feature's encoding of `value` into its slots of `out` (a whole row).
    pub fn encode(&self, value: RawValue<'_>, out: &mut [f32]) -> Result<(), TransformError> {
        let slot = &mut out[self.offset..self.offset + self.encoder.width()];
        match &self.encoder {
            Encoder::Numeric {
                impute,
                center,
                scale,
            } => {
                let x = match value {
                    RawValue::Missing => *impute,
                    RawValue::Number(x) if x.is_finite() => x,
                    RawValue::Number(x) => {
                        return Err(TransformError {
                            field: self.name.clone(),
                            reason: format!("non-finite value {x}"),
                        });
                    }
                    RawValue::Text(t) => match parse_numeric_text(t, self.kind) {
                        Some(x) => x,
                        None => {
                            return Err(TransformError {
                                field: self.name.clone(),
                                reason: format!(
                                    "expected a {}, got the string {:?}",
                                    type_word(self.kind),
                                    t
                                ),
                            });
                        }
                    },
                };
                slot[0] = ((x - center) / scale) as f32;
            }
            Encoder::OneHot {
                categories,
                impute,
                unseen,
            } => {
                slot.fill(0.0);
                let number;
                let text: &str = match value {
                    RawValue::Missing => impute,
                    RawValue::Text(t) => t,
                    // A number where a category is expected: compare its text form, so
                    // that `3` matches the category "3".
                    RawValue::Number(x) => {
                        number = format_number(x);
                        &number
                    }
                };
                match categories.binary_search_by(|c| c.as_str().cmp(text)) {
                    Ok(i) => slot[i] = 1.0,
                    Err(_) if *unseen == UnseenCategory::Ignore => {}
                    Err(_) => {
                        return Err(TransformError {
                            field: self.name.clone(),
                            reason: format!(
                                "unseen category {text:?} (known: {})",
                                categories.join(", ")
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// One input feature of the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFeature {
    /// The column name.
    pub name: String,
    /// Its type in the dataset schema.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// First output column.
    pub offset: usize,
    /// The encoding.
    #[serde(flatten)]
    pub encoder: Encoder,
}

/// A column left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedFeature {
    /// The column.
    pub name: String,
    /// Why it was dropped.
    pub reason: String,
}

/// How the label is encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LabelEncoding {
    /// Class index into `classes` (binary: `[negative, positive]`).
    Classes {
        /// The label column.
        name: String,
        /// The classes in index order.
        classes: Vec<String>,
    },
    /// The value itself.
    Regression {
        /// The label column.
        name: String,
    },
}

impl LabelEncoding {
    /// The label column.
    pub fn name(&self) -> &str {
        match self {
            LabelEncoding::Classes { name, .. } | LabelEncoding::Regression { name } => name,
        }
    }
}

/// The fitted pipeline. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeaturePipeline {
    /// Format version of this document.
    pub version: u32,
    /// The input features, in dataset order.
    pub inputs: Vec<InputFeature>,
    /// Columns left out.
    pub dropped: Vec<DroppedFeature>,
    /// Output vector length.
    pub output_dim: usize,
    /// A name per output column (`temperature`, `color=red`, …).
    pub output_names: Vec<String>,
    /// The label.
    pub label: LabelEncoding,
    /// What scoring does with features the pipeline does not know.
    pub unknown_features: UnknownFeature,
}

/// Orders class names numerically when they all are numbers, else lexically.
pub fn sort_classes(classes: &mut [String]) {
    let all_numeric = classes.iter().all(|c| c.parse::<f64>().is_ok());
    classes.sort_by(|a, b| {
        if all_numeric {
            let (x, y) = (
                a.parse::<f64>().unwrap_or(0.0),
                b.parse::<f64>().unwrap_or(0.0),
            );
            x.total_cmp(&y)
        } else {
            a.cmp(b)
        }
    });
}

fn numeric_stats(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let (mut n, mut sum) = (0usize, 0.0f64);
    for v in values.clone() {
        n += 1;
        sum += v;
    }
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = sum / n as f64;
    let var = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    (mean, var.sqrt())
}

/// A fitted encoder and the names of the columns it outputs, or why the feature is dropped.
type Fitted = Result<(Encoder, Vec<String>), String>;

/// A numeric feature: imputed (mean, median or zero) and, with `standardize`, centred and
/// scaled by the training split's mean and standard deviation. Dropped when every value
/// is missing or it is constant.
fn fit_numeric(spec: &ModelSpec, name: &str, values: &[f64], rows: &[usize]) -> Fitted {
    let present = rows.iter().map(|&i| values[i]).filter(|v| !v.is_nan());
    let count = present.clone().count();
    if count == 0 {
        return Err("every value is missing in the training split".into());
    }
    let impute = match spec.preprocess.numeric_impute {
        NumericImpute::Mean => present.clone().sum::<f64>() / count as f64,
        NumericImpute::Median => {
            let mut v: Vec<f64> = present.clone().collect();
            v.sort_by(f64::total_cmp);
            crate::dataset::quantile_sorted(&v, 0.5)
        }
        NumericImpute::Zero => 0.0,
    };
    let imputed = rows.iter().map(|&i| {
        if values[i].is_nan() {
            impute
        } else {
            values[i]
        }
    });
    let (mean, std) = numeric_stats(imputed);
    if std == 0.0 {
        return Err(format!("constant ({mean}) in the training split"));
    }
    let (center, scale) = if spec.preprocess.standardize {
        (mean, std)
    } else {
        (0.0, 1.0)
    };
    let encoder = Encoder::Numeric {
        impute,
        center,
        scale,
    };
    Ok((encoder, vec![name.to_string()]))
}

/// A categorical feature: one-hot over its `max_categories` most frequent values in the
/// training split (ties by name), imputed with the most frequent. Dropped when it has one
/// value or none.
fn fit_categorical(
    spec: &ModelSpec,
    name: &str,
    codes: &[u32],
    dictionary: &[String],
    rows: &[usize],
) -> Fitted {
    let mut counts = vec![0u64; dictionary.len()];
    for &i in rows {
        if let Some(c) = counts.get_mut(codes[i] as usize) {
            *c += 1;
        }
    }
    let mut seen: Vec<(usize, u64)> = counts
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, c)| *c > 0)
        .collect();
    if seen.len() <= 1 {
        return Err(match seen.first() {
            Some((code, _)) => format!("constant ({:?}) in the training split", dictionary[*code]),
            None => "every value is missing in the training split".into(),
        });
    }
    // Most frequent first, ties by name, so the kept set is deterministic.
    seen.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| dictionary[a.0].cmp(&dictionary[b.0]))
    });
    let impute = dictionary[seen[0].0].clone();
    seen.truncate(spec.preprocess.max_categories);
    let mut categories: Vec<String> = seen.iter().map(|(c, _)| dictionary[*c].clone()).collect();
    categories.sort();
    let names = categories.iter().map(|c| format!("{name}={c}")).collect();
    let encoder = Encoder::OneHot {
        categories,
        impute,
        unseen: spec.preprocess.unseen_category,
    };
    Ok((encoder, names))
}

impl FeaturePipeline {
    /// Fits the pipeline on the `rows` of `table` (the training split) for `spec`.
    pub fn fit(
        spec: &ModelSpec,
        schema: &Schema,
        table: &Table,
        rows: &[usize],
    ) -> Result<Self, FeatureError> {
        for (key, list) in [
            ("features.include", &spec.features.include),
            ("features.exclude", &spec.features.exclude),
        ] {
            if let Some(missing) = list.iter().find(|c| !table.names.contains(c)) {
                return Err(FeatureError::UnknownColumn {
                    key,
                    column: missing.clone(),
                });
            }
        }
        let mut inputs = Vec::new();
        let mut dropped = Vec::new();
        let mut output_names = Vec::new();
        let mut offset = 0;
        for (name, column) in table.names.iter().zip(&table.columns) {
            if !spec.is_feature(name) {
                continue;
            }
            let kind = schema
                .column(name)
                .map(|c| c.kind)
                .unwrap_or(ColumnType::Float);
            let fitted = match column {
                Column::Numeric(values) => fit_numeric(spec, name, values, rows),
                Column::Categorical { codes, dictionary } => {
                    fit_categorical(spec, name, codes, dictionary, rows)
                }
            };
            let encoder = match fitted {
                Ok((encoder, names)) => {
                    output_names.extend(names);
                    encoder
                }
                Err(reason) => {
                    dropped.push(DroppedFeature {
                        name: name.clone(),
                        reason,
                    });
                    continue;
                }
            };
            let width = encoder.width();
            inputs.push(InputFeature {
                name: name.clone(),
                kind,
                offset,
                encoder,
            });
            offset += width;
        }
        if inputs.is_empty() {
            return Err(FeatureError::NoFeatures(if dropped.is_empty() {
                "the spec selects no columns besides the label".to_string()
            } else {
                dropped
                    .iter()
                    .map(|d| format!("{} ({})", d.name, d.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            }));
        }
        let label = Self::fit_label(spec, schema, table)?;
        Ok(FeaturePipeline {
            version: 1,
            inputs,
            dropped,
            output_dim: offset,
            output_names,
            label,
            unknown_features: spec.features.unknown,
        })
    }

    fn fit_label(
        spec: &ModelSpec,
        schema: &Schema,
        table: &Table,
    ) -> Result<LabelEncoding, FeatureError> {
        let name = spec.dataset.label.clone();
        if spec.task.kind == TaskKind::Regression {
            return Ok(LabelEncoding::Regression { name });
        }
        // Every class of the dataset, not only those in the training split, so that a
        // holdout row never has an unknown class.
        let mut classes: Vec<String> = match schema.column(&name).and_then(|c| c.values.clone()) {
            Some(values) => values,
            None => match table.column(&name) {
                Ok(Column::Categorical { dictionary, .. }) => dictionary.clone(),
                _ => Vec::new(),
            },
        };
        sort_classes(&mut classes);
        if spec.task.kind == TaskKind::Binary
            && let Some(positive) = &spec.task.positive_class
        {
            let Some(pos) = classes.iter().position(|c| c == positive) else {
                return Err(FeatureError::PositiveClass {
                    value: positive.clone(),
                    classes: classes.join(", "),
                });
            };
            let p = classes.remove(pos);
            classes.push(p);
        }
        Ok(LabelEncoding::Classes { name, classes })
    }

    /// Encodes one row. `values[i]` is the raw value of `self.inputs[i]`; `out` has
    /// `output_dim` slots. Allocates nothing. Stops at the first bad value.
    pub fn transform_into(
        &self,
        values: &[RawValue<'_>],
        out: &mut [f32],
    ) -> Result<(), TransformError> {
        for (feature, value) in self.inputs.iter().zip(values) {
            feature.encode(*value, out)?;
        }
        Ok(())
    }

    /// Encodes one row like [`transform_into`](Self::transform_into) but checks every
    /// feature, calling `on_error` for each bad value (a request's validation wants all of
    /// them, not the first). Returns whether the row is valid.
    pub fn transform_checked(
        &self,
        values: &[RawValue<'_>],
        out: &mut [f32],
        mut on_error: impl FnMut(TransformError),
    ) -> bool {
        let mut ok = true;
        for (feature, value) in self.inputs.iter().zip(values) {
            if let Err(e) = feature.encode(*value, out) {
                on_error(e);
                ok = false;
            }
        }
        ok
    }

    /// Encodes rows `rows` of a table into a matrix (features and encoded labels).
    pub fn transform_table(&self, table: &Table, rows: &[usize]) -> Result<Matrix, FeatureError> {
        let columns: Vec<&Column> = self
            .inputs
            .iter()
            .map(|f| {
                table
                    .column(&f.name)
                    .map_err(|_| FeatureError::UnknownColumn {
                        key: "pipeline.inputs",
                        column: f.name.clone(),
                    })
            })
            .collect::<Result<_, _>>()?;
        let label = table
            .column(self.label.name())
            .map_err(|_| FeatureError::UnknownColumn {
                key: "dataset.label",
                column: self.label.name().to_string(),
            })?;
        let mut x = vec![0f32; rows.len() * self.output_dim];
        let mut y = Vec::with_capacity(rows.len());
        let mut values: Vec<RawValue<'_>> = Vec::with_capacity(columns.len());
        let class_of = |text: &str| -> Result<f32, FeatureError> {
            match &self.label {
                LabelEncoding::Classes { classes, .. } => classes
                    .iter()
                    .position(|c| c == text)
                    .map(|p| p as f32)
                    .ok_or_else(|| FeatureError::UnknownClass(text.to_string())),
                LabelEncoding::Regression { .. } => Ok(text.parse().unwrap_or(f32::NAN)),
            }
        };
        // Class codes of the label's dictionary, looked up once.
        let label_codes: Option<Vec<Result<f32, String>>> = match label {
            Column::Categorical { dictionary, .. } => Some(
                dictionary
                    .iter()
                    .map(|d| class_of(d).map_err(|_| d.clone()))
                    .collect(),
            ),
            Column::Numeric(_) => None,
        };
        for (r, &i) in rows.iter().enumerate() {
            values.clear();
            for column in &columns {
                values.push(match column {
                    Column::Numeric(v) if v[i].is_nan() => RawValue::Missing,
                    Column::Numeric(v) => RawValue::Number(v[i]),
                    Column::Categorical { codes, dictionary } => {
                        match dictionary.get(codes[i] as usize) {
                            Some(t) => RawValue::Text(t),
                            None => RawValue::Missing,
                        }
                    }
                });
            }
            let out = &mut x[r * self.output_dim..(r + 1) * self.output_dim];
            // Training data passed ingest's validation; an unseen category can only come
            // from the holdout with the "error" rule, where it is encoded as zeros too.
            let _ = self.transform_into(&values, out);
            y.push(match (label, &label_codes) {
                (Column::Numeric(v), _) => match &self.label {
                    LabelEncoding::Regression { .. } => v[i] as f32,
                    LabelEncoding::Classes { .. } => class_of(&format_number(v[i]))?,
                },
                (Column::Categorical { codes, .. }, Some(lookup)) => {
                    match lookup.get(codes[i] as usize) {
                        Some(Ok(c)) => *c,
                        Some(Err(text)) => return Err(FeatureError::UnknownClass(text.clone())),
                        None => return Err(FeatureError::UnknownClass(String::new())),
                    }
                }
                (Column::Categorical { .. }, None) => f32::NAN,
            });
        }
        Ok(Matrix {
            rows: rows.len(),
            cols: self.output_dim,
            x,
            y,
        })
    }
}

fn type_word(kind: ColumnType) -> &'static str {
    match kind {
        ColumnType::Integer => "integer",
        ColumnType::Float => "number",
        ColumnType::Boolean => "boolean",
        ColumnType::Categorical => "category",
    }
}

/// Reads a numeric feature given as text (CSV requests): numbers, and for booleans the
/// usual words.
pub fn parse_numeric_text(text: &str, kind: ColumnType) -> Option<f64> {
    let t = text.trim();
    if kind == ColumnType::Boolean {
        match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => return Some(1.0),
            "false" | "no" | "0" => return Some(0.0),
            _ => return None,
        }
    }
    t.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Formats a number as ingest stores an integer-valued category ("3", not "3.0").
pub fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// Splits row indices into (train, holdout) per the spec; both sorted and non-empty.
pub fn split_rows(
    spec: &ModelSpec,
    table: &Table,
) -> Result<(Vec<usize>, Vec<usize>), FeatureError> {
    let n = table.rows;
    let n_holdout = ((n as f64) * spec.split.holdout).ceil() as usize;
    if n < 2 || n_holdout == 0 || n_holdout >= n {
        return Err(FeatureError::TooFewRows { rows: n });
    }
    match spec.split.method {
        SplitMethod::Random => {
            // numpy's RandomState(seed).permutation, as scikit-learn's train_test_split
            // draws it: the first n_holdout rows of the permutation are the holdout. The
            // same seed therefore splits exactly as scikit-learn does.
            let seed =
                u32::try_from(spec.split.seed).map_err(|_| FeatureError::TooFewRows { rows: n })?;
            let order = Mt19937::new(seed).permutation(n);
            let mut holdout = order[..n_holdout].to_vec();
            let mut train = order[n_holdout..].to_vec();
            holdout.sort_unstable();
            train.sort_unstable();
            Ok((train, holdout))
        }
        SplitMethod::Time => {
            let mut order: Vec<usize> = (0..n).collect();
            if let Some(by) = &spec.split.order_by {
                let column = table.column(by).map_err(|_| FeatureError::UnknownColumn {
                    key: "split.order_by",
                    column: by.clone(),
                })?;
                match column {
                    Column::Numeric(v) => {
                        order.sort_by(|&a, &b| match (v[a].is_nan(), v[b].is_nan()) {
                            (true, true) => Ordering::Equal,
                            (true, false) => Ordering::Greater,
                            (false, true) => Ordering::Less,
                            _ => v[a].total_cmp(&v[b]),
                        })
                    }
                    // ISO dates and times sort correctly as text.
                    Column::Categorical { codes, dictionary } => order.sort_by(|&a, &b| {
                        dictionary
                            .get(codes[a] as usize)
                            .cmp(&dictionary.get(codes[b] as usize))
                    }),
                }
            }
            let train = order[..n - n_holdout].to_vec();
            let holdout = order[n - n_holdout..].to_vec();
            Ok((train, holdout))
        }
    }
}

#[cfg(test)]
mod tests;
