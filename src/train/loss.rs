//! The two task losses, written out because burn's built-ins take neither row
//! weights (BCE) nor a mask for rows without a label (CE) in this form.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu};

/// Weighted mean binary cross-entropy of logits against 0/1 targets, in the
/// numerically stable form `max(x, 0) - x y + ln(1 + exp(-|x|))`.
///
/// # Shapes
/// - `logits`, `targets`, `weights`: `[batch]`
/// - returns `[1]`
pub fn binary_cross_entropy(
    logits: Tensor<1>,
    targets: Tensor<1>,
    weights: Tensor<1>,
) -> Tensor<1> {
    binary_cross_entropy_sum(logits, targets, weights.clone()) / weights.sum().clamp_min(1e-12)
}

/// The weighted sum that [`binary_cross_entropy`] divides by the weights'
/// sum: data-parallel replicas divide their parts by the whole batch's sum
/// instead, so that the parts add up to the batch's mean.
pub fn binary_cross_entropy_sum(
    logits: Tensor<1>,
    targets: Tensor<1>,
    weights: Tensor<1>,
) -> Tensor<1> {
    let per_row =
        relu(logits.clone()) - logits.clone() * targets + logits.abs().neg().exp().log1p();
    (per_row * weights).sum()
}

/// Weighted mean cross-entropy over the rows that have a class; rows whose
/// target is negative (no plan bought) are masked out. A batch without any
/// labelled row gives 0, not NaN.
///
/// # Shapes
/// - `logits`: `[batch, classes]`
/// - `targets`: `[batch]`, a class index or -1
/// - `weights`: `[batch]`
/// - returns `[1]`
pub fn masked_cross_entropy(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    weights: Tensor<1>,
) -> Tensor<1> {
    let mask = targets.clone().greater_equal_elem(0).float() * weights.clone();
    masked_cross_entropy_sum(logits, targets, weights) / mask.sum().clamp_min(1e-12)
}

/// The weighted sum that [`masked_cross_entropy`] divides by the labelled
/// rows' weights.
pub fn masked_cross_entropy_sum(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    weights: Tensor<1>,
) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let mask = targets.clone().greater_equal_elem(0).float() * weights;
    let index = targets.clamp_min(0).reshape([batch, 1]);
    let log_p = log_softmax(logits, 1).gather(1, index).reshape([batch]);
    -(log_p * mask).sum()
}
