//! Where arrays become tensors: [`Features`] and [`Targets`] rows to the
//! network's [`Inputs`] on a device.

use burn::prelude::*;

use super::NetworkConfig;
use crate::preprocess::{Features, Targets};

/// Inputs of a batch, on the model's device.
///
/// # Shapes
/// - `numeric`: `[batch, numeric_width]`
/// - `embedded`: `[batch, embedded columns]`, indices already offset into the
///   shared user table
/// - `offer`: `[batch]`
/// - `context`: `[batch, context columns]`, offset into the context table
/// - `wide`: `[batch, wide columns]`, the columns of `embedded` that have
///   wide biases (`model.wide_min_values`)
#[derive(Debug, Clone)]
pub struct Inputs {
    pub numeric: Tensor<2>,
    pub embedded: Option<Tensor<2, Int>>,
    pub wide: Option<Tensor<2, Int>>,
    pub offer: Option<Tensor<1, Int>>,
    pub context: Option<Tensor<2, Int>>,
}

/// What the network says about a batch.
///
/// # Shapes
/// - `conversion`: `[batch]`, logit of P(convert | user, offer, context)
/// - `plan`: `[batch, products]`, logits of the plan choice (absent without
///   products)
#[derive(Debug, Clone)]
pub struct Outputs {
    pub conversion: Tensor<1>,
    pub plan: Option<Tensor<2>>,
}

/// Offsets that place each column's indices in the network's shared tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    numeric_width: usize,
    embedded_offsets: Vec<i32>,
    context_offsets: Vec<i32>,
    /// The embedded columns with wide biases.
    wide_columns: Vec<usize>,
    has_offer: bool,
}

impl Layout {
    pub fn new(config: &NetworkConfig) -> Layout {
        let offsets = |sizes: &[usize]| {
            sizes
                .iter()
                .scan(0i32, |next, &size| {
                    let offset = *next;
                    *next += size as i32;
                    Some(offset)
                })
                .collect()
        };
        Layout {
            numeric_width: config.numeric_width,
            embedded_offsets: offsets(&config.embedding_sizes),
            context_offsets: offsets(&config.context_sizes),
            wide_columns: config.wide_columns(),
            has_offer: config.has_offer,
        }
    }

    /// Where each embedded and each context column starts in its table.
    pub fn offsets(&self) -> (Vec<usize>, Vec<usize>) {
        let unsigned = |v: &[i32]| v.iter().map(|&o| o as usize).collect();
        (
            unsigned(&self.embedded_offsets),
            unsigned(&self.context_offsets),
        )
    }

    /// Inputs for rows `start..end` of `features`.
    pub fn inputs(
        &self,
        features: &Features,
        rows: std::ops::Range<usize>,
        device: &Device,
    ) -> Inputs {
        let n = rows.len();
        let width = self.numeric_width;
        let numeric = features.numeric[rows.start * width..rows.end * width].to_vec();
        let numeric = Tensor::from_data(TensorData::new(numeric, [n, width]), device);
        let shared = |indices: &[u32], offsets: &[i32]| -> Option<Tensor<2, Int>> {
            let columns = offsets.len();
            if columns == 0 {
                return None;
            }
            let slice = &indices[rows.start * columns..rows.end * columns];
            let data: Vec<i32> = slice
                .iter()
                .enumerate()
                .map(|(i, &index)| index as i32 + offsets[i % columns])
                .collect();
            Some(Tensor::from_data(
                TensorData::new(data, [n, columns]),
                device,
            ))
        };
        let offer = self.has_offer.then(|| {
            let data: Vec<i32> = features.offer[rows.clone()]
                .iter()
                .map(|&o| o as i32)
                .collect();
            Tensor::from_data(TensorData::new(data, [n]), device)
        });
        let embedded = shared(&features.embedded, &self.embedded_offsets);
        let wide = match &embedded {
            Some(all) if self.wide_columns.len() == self.embedded_offsets.len() => {
                Some(all.clone())
            }
            Some(all) if !self.wide_columns.is_empty() => {
                let columns: Vec<i32> = self.wide_columns.iter().map(|&c| c as i32).collect();
                let columns =
                    Tensor::from_data(TensorData::new(columns, [self.wide_columns.len()]), device);
                Some(all.clone().select(1, columns))
            }
            _ => None,
        };
        Inputs {
            numeric,
            embedded,
            wide,
            offer,
            context: shared(&features.context, &self.context_offsets),
        }
    }

    /// One combination of context values (each context column's vocabulary
    /// index) as table indices `[1, columns]`, for every row alike; `None`
    /// without context columns.
    pub fn context_combination(&self, indices: &[u32], device: &Device) -> Option<Tensor<2, Int>> {
        let columns = self.context_offsets.len();
        (columns > 0).then(|| {
            let data: Vec<i32> = indices
                .iter()
                .zip(&self.context_offsets)
                .map(|(&index, offset)| index as i32 + offset)
                .collect();
            Tensor::from_data(TensorData::new(data, [1, columns]), device)
        })
    }
}

/// Training targets of a batch, on a device.
///
/// # Shapes
/// - `converted`, `weight`: `[batch]`
/// - `plan`: `[batch]`, -1 where the row has no plan
#[derive(Debug, Clone)]
pub struct TargetTensors {
    pub converted: Tensor<1>,
    pub weight: Tensor<1>,
    pub plan: Tensor<1, Int>,
}

impl TargetTensors {
    pub fn new(targets: &Targets, rows: std::ops::Range<usize>, device: &Device) -> TargetTensors {
        let n = rows.len();
        let floats = |values: &[f32]| {
            Tensor::from_data(TensorData::new(values[rows.clone()].to_vec(), [n]), device)
        };
        TargetTensors {
            converted: floats(&targets.converted),
            weight: floats(&targets.weight),
            plan: Tensor::from_data(
                TensorData::new(targets.plan[rows.clone()].to_vec(), [n]),
                device,
            ),
        }
    }
}

/// Reads a float tensor back to the host as `f32`s, row-major.
pub fn to_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}
