//! Turning encoded texts into tensors: padding, masks, bag weights and targets, built on the
//! host in one allocation per tensor and moved to the device once per batch.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use lexmesh_preprocessor::Encoded;

/// One batch on the device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token or feature ids, `[batch, length]`, padded with 0.
    pub ids: Tensor<2, Int>,
    /// Bag weights, `[batch, length]` (0 at padding); only for bag features.
    pub weights: Option<Tensor<2>>,
    /// `true` at padding, `[batch, length]`.
    pub padding: Tensor<2, Bool>,
    /// 1.0 at real tokens, 0.0 at padding, `[batch, length, 1]`.
    pub keep: Tensor<3>,
    /// Real tokens per row, at least 1, `[batch, 1]`.
    pub lengths: Tensor<2>,
    /// Class ids, `[batch]`, when known.
    pub targets: Option<Tensor<1, Int>>,
}

impl Batch {
    /// Builds a batch padded to the longest row, and to at least `min_length` (a CNN needs rows
    /// at least as long as its widest kernel). Rows with no ids get one padding id.
    pub fn new(
        rows: &[&Encoded],
        targets: Option<&[usize]>,
        min_length: usize,
        device: &Device,
    ) -> Self {
        let n = rows.len();
        let length = rows
            .iter()
            .map(|r| r.ids.len())
            .max()
            .unwrap_or(0)
            .max(min_length)
            .max(1);
        let with_weights = rows.iter().any(|r| !r.weights.is_empty());
        let mut ids = vec![0i64; n * length];
        let mut weights = if with_weights {
            vec![0f32; n * length]
        } else {
            Vec::new()
        };
        let mut keep = vec![0f32; n * length];
        let mut padding = vec![true; n * length];
        let mut lengths = vec![0f32; n];
        for (r, row) in rows.iter().enumerate() {
            let base = r * length;
            for (j, &id) in row.ids.iter().enumerate() {
                ids[base + j] = i64::from(id);
                keep[base + j] = 1.0;
                padding[base + j] = false;
            }
            if with_weights {
                weights[base..base + row.weights.len()].copy_from_slice(&row.weights);
            }
            lengths[r] = row.ids.len().max(1) as f32;
        }
        Self {
            ids: Tensor::from_data(TensorData::new(ids, [n, length]), device),
            weights: with_weights
                .then(|| Tensor::from_data(TensorData::new(weights, [n, length]), device)),
            padding: Tensor::from_data(TensorData::new(padding, [n, length]), device),
            keep: Tensor::from_data(TensorData::new(keep, [n, length, 1]), device),
            lengths: Tensor::from_data(TensorData::new(lengths, [n, 1]), device),
            targets: targets.map(|t| {
                let t: Vec<i64> = t.iter().map(|&c| c as i64).collect();
                Tensor::from_data(TensorData::new(t, [n]), device)
            }),
        }
    }

    /// Mean over the real positions of `[batch, length, dim]` activations: `[batch, dim]`.
    pub fn masked_mean(&self, x: Tensor<3>) -> Tensor<2> {
        (x * self.keep.clone()).sum_dim(1).squeeze_dim::<2>(1) / self.lengths.clone()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.dims()[0]
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Ids (rows × padded length) one inference batch may hold: `[rows, length, dim]` activations
/// stay near 32 MB at dim 128, however long the texts are (a ruling's bag can hold 8,000 ids).
pub const INFERENCE_TOKEN_BUDGET: usize = 1 << 16;

/// Splits `inputs` into consecutive ranges of at most `max_rows` rows whose padded size
/// (rows × longest row) stays within `token_budget`; a single row longer than the budget gets
/// a range of its own. Only for inference and evaluation: results do not depend on batching.
pub fn budget_ranges(
    inputs: &[Encoded],
    max_rows: usize,
    token_budget: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut longest = 0;
    for (i, e) in inputs.iter().enumerate() {
        let len = e.ids.len().max(1);
        let rows = i - start + 1;
        let wide = longest.max(len);
        if rows > 1 && (rows > max_rows.max(1) || rows * wide > token_budget) {
            ranges.push(start..i);
            start = i;
            longest = len;
        } else {
            longest = wide;
        }
    }
    if start < inputs.len() {
        ranges.push(start..inputs.len());
    }
    ranges
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    fn rows(lens: &[usize]) -> Vec<Encoded> {
        lens.iter()
            .map(|&n| Encoded {
                ids: vec![1; n],
                weights: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn ranges_cover_everything_in_order_within_the_budget() {
        let inputs = rows(&[10, 10, 10, 500, 10, 2000, 10, 10]);
        let ranges = budget_ranges(&inputs, 3, 1000);
        assert_eq!(ranges, vec![0..3, 3..5, 5..6, 6..8]);
        for r in &ranges {
            let longest = inputs[r.clone()].iter().map(|e| e.ids.len()).max().unwrap();
            assert!(r.len() == 1 || r.len() * longest <= 1000);
        }
        assert!(budget_ranges(&[], 3, 10).is_empty());
    }
}
