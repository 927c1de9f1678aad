//! The network: a shared user encoder with a conversion head and a
//! plan-choice head. Depends on burn only; the tensors come from
//! [`crate::batch`], and training lives in `train`.

use burn::nn::activation::{Activation, ActivationConfig};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use serde::{Deserialize, Serialize};

/// The non-linearity between layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    #[default]
    Relu,
    Gelu,
}

impl ActivationKind {
    fn config(self) -> ActivationConfig {
        match self {
            ActivationKind::Relu => ActivationConfig::Relu,
            ActivationKind::Gelu => ActivationConfig::Gelu,
        }
    }
}

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
}

/// Linear -> optional LayerNorm -> activation -> dropout.
#[derive(Module, Debug)]
pub struct Block {
    linear: Linear,
    norm: Option<LayerNorm>,
    activation: Activation,
    dropout: Dropout,
}

impl Block {
    fn new(config: &NetworkConfig, input: usize, output: usize, device: &Device) -> Block {
        Block {
            linear: LinearConfig::new(input, output).init(device),
            norm: config
                .layer_norm
                .then(|| LayerNormConfig::new(output).init(device)),
            activation: config.activation.config().init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.linear.forward(x);
        let x = match &self.norm {
            Some(norm) => norm.forward(x),
            None => x,
        };
        self.dropout.forward(self.activation.forward(x))
    }
}

/// The multi-task propensity network.
#[derive(Module, Debug)]
pub struct Network {
    /// One table for every categorical and hashed column, rows offset per
    /// column, so a batch needs a single lookup.
    user_embedding: Option<Embedding>,
    encoder: Vec<Block>,
    offer_embedding: Option<Embedding>,
    /// One table for every context column, offset like the user table.
    context_embedding: Option<Embedding>,
    tower: Vec<Block>,
    conversion: Linear,
    plan: Option<Linear>,
    products: usize,
    plan_uses_offer: bool,
}

/// Inputs of a batch, on the model's device.
///
/// # Shapes
/// - `numeric`: `[batch, numeric_width]`
/// - `embedded`: `[batch, embedded columns]`, indices already offset into the
///   shared user table
/// - `offer`: `[batch]`
/// - `context`: `[batch, context columns]`, offset into the context table
#[derive(Debug, Clone)]
pub struct Inputs {
    pub numeric: Tensor<2>,
    pub embedded: Option<Tensor<2, Int>>,
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

impl NetworkConfig {
    /// Width of the user embedding (the encoder's output).
    pub fn user_width(&self) -> usize {
        self.hidden
            .last()
            .copied()
            .unwrap_or_else(|| self.encoder_input())
    }

    fn encoder_input(&self) -> usize {
        self.numeric_width + self.embedding_sizes.len() * self.embedding_dim
    }

    pub fn init(&self, device: &Device) -> Network {
        let table = |sizes: &[usize], dim: usize| {
            let rows: usize = sizes.iter().sum();
            (rows > 0).then(|| EmbeddingConfig::new(rows, dim).init(device))
        };
        let mut encoder = Vec::new();
        let mut width = self.encoder_input();
        for &h in &self.hidden {
            encoder.push(Block::new(self, width, h, device));
            width = h;
        }
        let user = width;
        let offer_width = if self.has_offer { self.offer_dim } else { 0 };
        let mut tower = Vec::new();
        let mut width = user + offer_width + self.context_sizes.len() * self.offer_dim;
        for &h in &self.tower {
            tower.push(Block::new(self, width, h, device));
            width = h;
        }
        let plan_uses_offer = self.plan_uses_offer && self.has_offer;
        let plan_input = user + if plan_uses_offer { self.offer_dim } else { 0 };
        Network {
            user_embedding: table(&self.embedding_sizes, self.embedding_dim),
            encoder,
            offer_embedding: (self.has_offer && self.products > 0)
                .then(|| EmbeddingConfig::new(self.products, self.offer_dim).init(device)),
            context_embedding: table(&self.context_sizes, self.offer_dim),
            tower,
            conversion: LinearConfig::new(width, 1).init(device),
            plan: (self.products > 0)
                .then(|| LinearConfig::new(plan_input, self.products).init(device)),
            products: self.products,
            plan_uses_offer,
        }
    }
}

/// Looks up `[batch, columns]` indices in a shared table: `[batch, columns * dim]`.
fn lookup(table: &Embedding, indices: Tensor<2, Int>) -> Tensor<2> {
    let [batch, _] = indices.dims();
    table.forward(indices).reshape([batch as i64, -1])
}

impl Network {
    /// Whether the network has a plan-choice head (it does with products).
    pub fn has_plan_head(&self) -> bool {
        self.plan.is_some()
    }

    /// The user embedding. `[batch, user width]`.
    pub fn encode(&self, inputs: &Inputs) -> Tensor<2> {
        let mut parts = vec![inputs.numeric.clone()];
        if let (Some(table), Some(indices)) = (&self.user_embedding, &inputs.embedded) {
            parts.push(lookup(table, indices.clone()));
        }
        let mut x = Tensor::cat(parts, 1);
        for block in &self.encoder {
            x = block.forward(x);
        }
        x
    }

    /// Embeds the offer indices: `[batch]` -> `[batch, offer_dim]`.
    fn embed_offer(&self, offer: Tensor<1, Int>) -> Option<Tensor<2>> {
        let table = self.offer_embedding.as_ref()?;
        let [batch] = offer.dims();
        Some(
            table
                .forward(offer.reshape([batch, 1]))
                .reshape([batch as i64, -1]),
        )
    }

    /// Conversion logits from a user embedding, an embedded offer and the
    /// context indices. `[batch]`.
    fn convert(
        &self,
        user: Tensor<2>,
        offer: Option<Tensor<2>>,
        context: Option<Tensor<2, Int>>,
    ) -> Tensor<1> {
        let mut parts = vec![user];
        parts.extend(offer);
        if let (Some(table), Some(indices)) = (&self.context_embedding, context) {
            parts.push(lookup(table, indices));
        }
        let mut x = Tensor::cat(parts, 1);
        for block in &self.tower {
            x = block.forward(x);
        }
        let [batch, _] = x.dims();
        self.conversion.forward(x).reshape([batch])
    }

    fn plan_logits(&self, user: Tensor<2>, offer: Option<Tensor<2>>) -> Option<Tensor<2>> {
        let head = self.plan.as_ref()?;
        let input = match (self.plan_uses_offer, offer) {
            (true, Some(offer)) => Tensor::cat(vec![user, offer], 1),
            _ => user,
        };
        Some(head.forward(input))
    }

    /// Both heads for each row's own offer and context.
    pub fn forward(&self, inputs: &Inputs) -> Outputs {
        let user = self.encode(inputs);
        let offer = inputs.offer.clone().and_then(|o| self.embed_offer(o));
        let plan = self.plan_logits(user.clone(), offer.clone());
        let conversion = self.convert(user, offer, inputs.context.clone());
        Outputs { conversion, plan }
    }

    /// Probabilities for every product as the offer, in each row's context.
    ///
    /// # Shapes
    /// - returns `(p_convert [batch, products], p_plan [batch, products])`;
    ///   without an offer column `p_convert` is `[batch, 1]` and, without
    ///   products, `p_plan` is absent.
    pub fn score_all(&self, inputs: &Inputs) -> (Tensor<2>, Option<Tensor<2>>) {
        let user = self.encode(inputs);
        let [batch, width] = user.dims();
        let device = user.device();
        let products = self.products;
        let row_offer = inputs.offer.clone().and_then(|o| self.embed_offer(o));
        let plan = self
            .plan_logits(user.clone(), row_offer)
            .map(|logits| burn::tensor::activation::softmax(logits, 1));
        if self.offer_embedding.is_none() {
            let p = sigmoid(self.convert(user, None, inputs.context.clone()));
            return (p.reshape([batch, 1]), plan);
        }
        // Each user repeated once per product: rows [u0p0, u0p1, ..., u1p0, ...].
        let users = user
            .unsqueeze_dim::<3>(1)
            .expand([batch, products, width])
            .reshape([batch * products, width]);
        let offers = Tensor::<1, Int>::arange(0..products as i64, &device)
            .unsqueeze_dim::<2>(0)
            .expand([batch, products])
            .reshape([batch * products]);
        let context = inputs.context.clone().map(|c| {
            let [_, columns] = c.dims();
            c.unsqueeze_dim::<3>(1)
                .expand([batch, products, columns])
                .reshape([batch * products, columns])
        });
        let offers = self.embed_offer(offers);
        let logits = self.convert(users, offers, context);
        (sigmoid(logits).reshape([batch, products]), plan)
    }
}
