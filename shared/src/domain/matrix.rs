//! Design matrices as safetensors: the compact binary form training loads directly.
//!
//! A matrix file holds `x` (f32, rows × cols, row-major) and `y` (f32, rows): the encoded
//! features and the label (a class index, or the target value for regression). candle
//! reads safetensors natively, so the trainer maps these bytes straight into tensors.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// A matrix file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MatrixError {
    /// Not a valid safetensors buffer (truncated, corrupted).
    #[error("invalid safetensors data: {0}")]
    Format(#[from] safetensors::SafeTensorError),
    /// A tensor is missing or has the wrong dtype or shape.
    #[error("invalid design matrix: {0}")]
    Shape(String),
}

/// Encoded features and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Row count.
    pub rows: usize,
    /// Column count.
    pub cols: usize,
    /// Row-major features, `rows * cols` values.
    pub x: Vec<f32>,
    /// One label per row.
    pub y: Vec<f32>,
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Matrix {
    /// Serializes as safetensors with tensors `x` and `y`.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, MatrixError> {
        let x = f32_bytes(&self.x);
        let y = f32_bytes(&self.y);
        let tensors = [
            (
                "x",
                TensorView::new(Dtype::F32, vec![self.rows, self.cols], &x)?,
            ),
            ("y", TensorView::new(Dtype::F32, vec![self.rows], &y)?),
        ];
        let meta = HashMap::from([("format".to_string(), "lambdaml-matrix-v1".to_string())]);
        Ok(safetensors::tensor::serialize(tensors, Some(meta))?)
    }

    /// Reads a matrix written by [`Matrix::to_safetensors`].
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, MatrixError> {
        let tensors = SafeTensors::deserialize(bytes)?;
        let x = tensors.tensor("x")?;
        let y = tensors.tensor("y")?;
        if x.dtype() != Dtype::F32 || y.dtype() != Dtype::F32 {
            return Err(MatrixError::Shape("x and y must be f32".to_string()));
        }
        let (rows, cols) = match x.shape() {
            [r, c] => (*r, *c),
            other => {
                return Err(MatrixError::Shape(format!(
                    "x has shape {other:?}, expected 2-D"
                )));
            }
        };
        if y.shape() != [rows] {
            return Err(MatrixError::Shape(format!(
                "y has shape {:?}, expected [{rows}]",
                y.shape()
            )));
        }
        Ok(Matrix {
            rows,
            cols,
            x: f32_values(x.data()),
            y: f32_values(y.data()),
        })
    }

    /// Row `i` of `x`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.cols..(i + 1) * self.cols]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_truncation() {
        let m = Matrix {
            rows: 2,
            cols: 3,
            x: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            y: vec![0.0, 1.0],
        };
        let bytes = m.to_safetensors().unwrap();
        assert_eq!(Matrix::from_safetensors(&bytes).unwrap(), m);
        assert_eq!(m.row(1), &[4.0, 5.0, 6.0]);
        assert!(Matrix::from_safetensors(&bytes[..bytes.len() - 3]).is_err());
        assert!(Matrix::from_safetensors(b"garbage").is_err());
    }
}
