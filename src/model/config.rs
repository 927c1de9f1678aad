//! The network's shape, as saved in a checkpoint's manifest.

use serde::{Deserialize, Serialize};

use crate::config::ActivationKind;

/// The network's shape: sizes that come from the fitted preprocessing and
/// widths that come from the `[model]` config (see [`crate::config::ModelConfig`]
/// for what each width means). Saved in the checkpoint's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Width of the numeric input (values and missing flags).
    pub numeric_width: usize,
    /// Embedding table size of each categorical or hashed column.
    pub embedding_sizes: Vec<usize>,
    /// Embedding table size of each context column.
    pub context_sizes: Vec<usize>,
    /// Number of products (offers and plans).
    pub products: usize,
    /// Whether rows carry an offer (and so the conversion head sees it).
    pub has_offer: bool,
    pub embedding_dim: usize,
    pub offer_dim: usize,
    /// Encoder widths; the last is the user embedding's width.
    pub hidden: Vec<usize>,
    /// Conversion tower widths, before its output logit.
    pub tower: Vec<usize>,
    pub activation: ActivationKind,
    pub dropout: f64,
    pub layer_norm: bool,
    /// Whether the plan head also sees the offer embedding.
    pub plan_uses_offer: bool,
    /// Experts of a multi-gate mixture of experts (MMoE, Ma et al., 2018);
    /// 0 for the shared-bottom encoder.
    #[serde(default)]
    pub experts: usize,
    /// Whether the network carries learned task log-variances (homoscedastic
    /// uncertainty weighting, Kendall et al., 2018). Used by training only.
    #[serde(default)]
    pub task_uncertainty: bool,
    /// Whether the conversion tower ends in one output per product (a row's
    /// logit is its offer's) rather than one shared output.
    #[serde(default)]
    pub product_heads: bool,
    /// Networks of the same shape trained side by side from different
    /// initial weights (a seed ensemble); scores average their logits.
    #[serde(default = "one_member")]
    pub members: usize,
    /// Whether each categorical and hashed value adds its own bias to the
    /// conversion logit and every plan logit (a wide part, Cheng et al., 2016).
    #[serde(default)]
    pub wide: bool,
    /// Whether the offer has one more arm, index `products`, for rows of a
    /// no-offer holdout: the conversion and plan heads then also say what a
    /// user does unoffered.
    #[serde(default)]
    pub no_offer: bool,
    /// The fewest values (table rows) a categorical or hashed column needs
    /// for wide biases; 0 gives every column biases.
    #[serde(default)]
    pub wide_min_values: usize,
}

fn one_member() -> usize {
    1
}

impl NetworkConfig {
    /// Offer indices the network knows: the products, and the no-offer arm
    /// when it has one.
    pub fn arms(&self) -> usize {
        self.products + usize::from(self.no_offer)
    }

    /// Width of the user embedding (the encoder's output).
    pub fn user_width(&self) -> usize {
        self.hidden
            .last()
            .copied()
            .unwrap_or_else(|| self.encoder_input())
    }

    /// The number of weights [`init`](Self::init) creates, computed without
    /// creating them (saturating, so absurd sizes cannot overflow): a
    /// checkpoint's loader compares it with the weights file before it
    /// allocates anything.
    pub fn parameter_count(&self) -> u64 {
        let n = |x: usize| x as u64;
        let linear = |input: usize, output: usize| {
            n(input).saturating_mul(n(output)).saturating_add(n(output))
        };
        let blocks = |input: usize, widths: &[usize]| {
            let mut total = 0u64;
            let mut width = input;
            for &w in widths {
                total = total.saturating_add(linear(width, w));
                if self.layer_norm {
                    total = total.saturating_add(2 * n(w));
                }
                width = w;
            }
            total
        };
        let sum = |sizes: &[usize]| sizes.iter().fold(0usize, |a, &b| a.saturating_add(b));
        let input = self.encoder_input();
        let mut total = n(sum(&self.embedding_sizes)).saturating_mul(n(self.embedding_dim));
        let encoder = blocks(input, &self.hidden);
        total = total.saturating_add(if self.experts > 0 {
            encoder
                .saturating_mul(n(self.experts))
                .saturating_add(2 * linear(input, self.experts))
        } else {
            encoder
        });
        let user = self.user_width();
        let offer = if self.has_offer { self.offer_dim } else { 0 };
        if self.has_offer && self.products > 0 {
            total = total.saturating_add(n(self.arms()).saturating_mul(n(self.offer_dim)));
        }
        total = total.saturating_add(n(sum(&self.context_sizes)).saturating_mul(n(self.offer_dim)));
        let tower_input = user
            .saturating_add(offer)
            .saturating_add(self.context_sizes.len().saturating_mul(self.offer_dim));
        total = total.saturating_add(blocks(tower_input, &self.tower));
        let last = self.tower.last().copied().unwrap_or(tower_input);
        total = total.saturating_add(linear(last, self.conversion_outputs()));
        if self.products > 0 {
            let plan_input = user
                + if self.plan_uses_offer && self.has_offer {
                    self.offer_dim
                } else {
                    0
                };
            total = total.saturating_add(linear(plan_input, self.products));
        }
        if self.task_uncertainty {
            total = total.saturating_add(2);
        }
        total = total
            .saturating_add(n(sum(&self.embedding_sizes)).saturating_mul(n(self.wide_width())));
        total.saturating_mul(n(self.members.max(1)))
    }

    /// Outputs of the conversion layer: one per offer arm with
    /// `product_heads` (and offers), else one.
    pub fn conversion_outputs(&self) -> usize {
        if self.product_heads && self.has_offer && self.products > 0 {
            self.arms()
        } else {
            1
        }
    }

    /// Width of the wide table: one conversion bias shared by every
    /// product, then the plan logits; 0 without the wide part or without
    /// columns to read. (A bias per product and value made the offers'
    /// ranking noisier: 0.737 against 0.758 over the tuning worlds at
    /// 20,000 rows.)
    pub fn wide_width(&self) -> usize {
        if self.wide_columns().is_empty() {
            return 0;
        }
        1 + self.products
    }

    /// The categorical and hashed columns with wide biases: every one with
    /// at least `wide_min_values` values; none without the wide part.
    pub fn wide_columns(&self) -> Vec<usize> {
        if !self.wide {
            return Vec::new();
        }
        (0..self.embedding_sizes.len())
            .filter(|&j| self.embedding_sizes[j] >= self.wide_min_values)
            .collect()
    }

    pub(super) fn encoder_input(&self) -> usize {
        self.numeric_width + self.embedding_sizes.len() * self.embedding_dim
    }
}
