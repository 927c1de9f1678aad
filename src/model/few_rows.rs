//! The network's inference pass over plain `f32` arrays, for scoring a few
//! rows at a time.
//!
//! Scoring one user through burn costs a few dozen tensor operations, each
//! with its own allocation and dispatch, which is most of the time for a
//! model this small. This copy of the weights scores a row with loops the
//! compiler vectorises, no allocation beyond a few scratch vectors, and one
//! saving burn's graph cannot see: the first tower layer's user and context
//! part is computed once per row, not once per product. [`Scorer`] uses it
//! for batches of up to [`FEW_ROWS_MAX`] rows (more on a GPU machine) and
//! burn for larger ones;
//! the two agree to rounding (tested).
//!
//! [`Scorer`]: crate::Scorer

use crate::preprocess::Features;

/// Batches up to this many rows take the plain path on a CPU (beyond it,
/// burn's batched products are faster per row).
pub const FEW_ROWS_MAX: usize = 8;

/// Layer normalisation's epsilon (burn's default, which the network uses).
const LAYER_NORM_EPSILON: f32 = 1e-5;

/// A linear layer, optionally followed by layer normalisation and ReLU.
#[derive(Debug, Clone)]
pub struct Dense {
    pub input: usize,
    pub output: usize,
    /// `[input, output]`, row-major (burn's layout).
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    /// `(gamma, beta)` of a layer norm after the linear map.
    pub norm: Option<(Vec<f32>, Vec<f32>)>,
    /// Whether ReLU follows (hidden layers); output layers are linear.
    pub relu: bool,
}

impl Dense {
    /// `y += x · W[rows]`, where `x` is the input slice that starts at input
    /// index `first`: one row of `W` per input, contiguous, so it vectorises.
    fn accumulate(&self, x: &[f32], first: usize, y: &mut [f32]) {
        for (i, &xi) in x.iter().enumerate() {
            if xi == 0.0 {
                continue;
            }
            let row = &self.weight[(first + i) * self.output..(first + i + 1) * self.output];
            for (yj, &wj) in y.iter_mut().zip(row) {
                *yj += xi * wj;
            }
        }
    }

    /// The layer norm and activation, in place.
    fn finish(&self, y: &mut [f32]) {
        if let Some((gamma, beta)) = &self.norm {
            let n = y.len() as f32;
            let mean = y.iter().sum::<f32>() / n;
            let var = y.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let scale = 1.0 / (var + LAYER_NORM_EPSILON).sqrt();
            for ((v, g), b) in y.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * scale * g + b;
            }
        }
        if self.relu {
            for v in y.iter_mut() {
                *v = v.max(0.0);
            }
        }
    }

    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = self.bias.clone();
        self.accumulate(x, 0, &mut y);
        self.finish(&mut y);
        y
    }
}

fn mlp(layers: &[Dense], x: Vec<f32>) -> Vec<f32> {
    layers.iter().fold(x, |h, layer| layer.forward(&h))
}

fn softmax(v: &mut [f32]) {
    let top = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for x in v.iter_mut() {
        *x = (*x - top).exp();
        total += *x;
    }
    for x in v.iter_mut() {
        *x /= total;
    }
}

/// The network's weights as plain arrays (see the module documentation):
/// its members, whose logits are averaged.
#[derive(Debug, Clone)]
pub struct FewRowNetwork {
    pub members: Vec<FewRowMember>,
}

impl FewRowNetwork {
    /// Conversion logits of row `row` for every product (one without
    /// offers) appended to `conversion`, and its plan logits to `plan`
    /// (nothing without a plan head): the members' means.
    pub fn score_row(
        &self,
        features: &Features,
        row: usize,
        conversion: &mut Vec<f32>,
        plan: &mut Vec<f32>,
    ) {
        let [first, rest @ ..] = self.members.as_slice() else {
            return;
        };
        let (conversion_start, plan_start) = (conversion.len(), plan.len());
        first.score_row(features, row, conversion, plan);
        if rest.is_empty() {
            return;
        }
        let (mut member_conversion, mut member_plan) = (Vec::new(), Vec::new());
        for member in rest {
            member_conversion.clear();
            member_plan.clear();
            member.score_row(features, row, &mut member_conversion, &mut member_plan);
            add(&mut conversion[conversion_start..], &member_conversion);
            add(&mut plan[plan_start..], &member_plan);
        }
        let scale = 1.0 / self.members.len() as f32;
        for v in conversion[conversion_start..]
            .iter_mut()
            .chain(&mut plan[plan_start..])
        {
            *v *= scale;
        }
    }
}

fn add(total: &mut [f32], values: &[f32]) {
    for (t, v) in total.iter_mut().zip(values) {
        *t += v;
    }
}

/// One member's weights as plain arrays.
#[derive(Debug, Clone)]
pub struct FewRowMember {
    pub numeric_width: usize,
    pub embedding_dim: usize,
    pub offer_dim: usize,
    pub embedded_offsets: Vec<usize>,
    pub context_offsets: Vec<usize>,
    /// `[rows, embedding_dim]`.
    pub user_table: Vec<f32>,
    pub encoder: Vec<Dense>,
    /// MMoE: the experts and the (conversion, plan) gates.
    pub experts: Vec<Vec<Dense>>,
    pub gates: Option<(Dense, Dense)>,
    /// `[products, offer_dim]`, with offers.
    pub offer_table: Option<Vec<f32>>,
    /// `[rows, offer_dim]`.
    pub context_table: Vec<f32>,
    pub tower: Vec<Dense>,
    pub conversion: Dense,
    pub plan: Option<Dense>,
    /// The wide part, `[rows, 1 + plan logits]`: a conversion bias shared
    /// by every product, then one per plan logit.
    pub wide_table: Option<Vec<f32>>,
    /// The embedded columns with wide biases.
    pub wide_columns: Vec<usize>,
    pub products: usize,
    pub plan_uses_offer: bool,
}

impl FewRowMember {
    /// The users seen by the conversion and the plan task.
    fn encode(&self, features: &Features, row: usize) -> (Vec<f32>, Vec<f32>) {
        let width = self.numeric_width;
        let mut x = features.numeric[row * width..(row + 1) * width].to_vec();
        let columns = self.embedded_offsets.len();
        for (j, &offset) in self.embedded_offsets.iter().enumerate() {
            let index = offset + features.embedded[row * columns + j] as usize;
            let dim = self.embedding_dim;
            x.extend_from_slice(&self.user_table[index * dim..(index + 1) * dim]);
        }
        let Some((conversion_gate, plan_gate)) = &self.gates else {
            let user = mlp(&self.encoder, x);
            return (user.clone(), user);
        };
        let outputs: Vec<Vec<f32>> = self.experts.iter().map(|e| mlp(e, x.clone())).collect();
        let mix = |gate: &Dense| {
            let mut weights = gate.forward(&x);
            softmax(&mut weights);
            let mut user = vec![0.0; outputs[0].len()];
            for (w, output) in weights.iter().zip(&outputs) {
                for (u, o) in user.iter_mut().zip(output) {
                    *u += w * o;
                }
            }
            user
        };
        (mix(conversion_gate), mix(plan_gate))
    }

    /// The wide part's sum over row `row`'s columns (empty without it).
    fn wide(&self, features: &Features, row: usize) -> Vec<f32> {
        let Some(table) = &self.wide_table else {
            return Vec::new();
        };
        let width = 1 + if self.plan.is_some() {
            self.products
        } else {
            0
        };
        let mut sums = vec![0.0; width];
        let columns = self.embedded_offsets.len();
        for &j in &self.wide_columns {
            let index = self.embedded_offsets[j] + features.embedded[row * columns + j] as usize;
            add(&mut sums, &table[index * width..(index + 1) * width]);
        }
        sums
    }

    fn offer(&self, product: usize) -> Option<&[f32]> {
        let dim = self.offer_dim;
        self.offer_table
            .as_ref()
            .map(|t| &t[product * dim..(product + 1) * dim])
    }

    /// Conversion logits of row `row` for every product (one without
    /// offers) into `conversion`, and its plan logits into `plan` (nothing
    /// without a plan head).
    fn score_row(
        &self,
        features: &Features,
        row: usize,
        conversion: &mut Vec<f32>,
        plan: &mut Vec<f32>,
    ) {
        let (user, plan_user) = self.encode(features, row);
        let wide = self.wide(features, row);
        let (wide_conversion, wide_plan) = match wide.split_first() {
            Some((conversion, plan)) => (*conversion, plan),
            None => (0.0, &[][..]),
        };
        if let Some(head) = &self.plan {
            let mut input = plan_user;
            if self.plan_uses_offer
                && let Some(offer) = features
                    .offer
                    .get(row)
                    .and_then(|&o| self.offer(o as usize))
            {
                input.extend_from_slice(offer);
            }
            let start = plan.len();
            plan.extend(head.forward(&input));
            add(&mut plan[start..], wide_plan);
        }
        let columns = self.context_offsets.len();
        let mut context = Vec::with_capacity(columns * self.offer_dim);
        for (j, &offset) in self.context_offsets.iter().enumerate() {
            let index = offset + features.context[row * columns + j] as usize;
            let dim = self.offer_dim;
            context.extend_from_slice(&self.context_table[index * dim..(index + 1) * dim]);
        }
        // Without tower layers the conversion layer reads [user, offer, context].
        let (first, rest, output): (&Dense, &[Dense], Option<&Dense>) =
            match self.tower.split_first() {
                Some((first, rest)) => (first, rest, Some(&self.conversion)),
                None => (&self.conversion, &[], None),
            };
        // The user and context part of the first layer, shared by every product.
        let offer_width = if self.offer_table.is_some() {
            self.offer_dim
        } else {
            0
        };
        let mut shared = first.bias.clone();
        first.accumulate(&user, 0, &mut shared);
        first.accumulate(&context, user.len() + offer_width, &mut shared);
        let products = if self.offer_table.is_some() {
            self.products
        } else {
            1
        };
        for product in 0..products {
            let mut h = shared.clone();
            if let Some(offer) = self.offer(product) {
                first.accumulate(offer, user.len(), &mut h);
            }
            first.finish(&mut h);
            let h = mlp(rest, h);
            // With one output per product, the product's own.
            let last = output.unwrap_or(first);
            let column = if last.output > 1 { product } else { 0 };
            let logit = match output {
                Some(layer) => layer.forward(&h)[column],
                None => h[column],
            };
            conversion.push(logit + wide_conversion);
        }
    }
}
