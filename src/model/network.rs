//! The layers: a shared user encoder (or a mixture of experts), a
//! conversion tower and a plan-choice head, in one or more members.

use burn::module::Param;
use burn::nn::activation::{Activation, ActivationConfig};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use super::{Inputs, NetworkConfig, Outputs};
use crate::config::ActivationKind;

/// burn's layer for a configured non-linearity.
fn activation(kind: ActivationKind) -> ActivationConfig {
    match kind {
        ActivationKind::Relu => ActivationConfig::Relu,
        ActivationKind::Gelu => ActivationConfig::Gelu,
    }
}

/// The initial scale of the user embeddings (burn's default is 1). A value
/// seen in a handful of rows barely moves from where it starts, so at 1 it
/// feeds the encoder noise as large as any learned signal; near 0 it starts
/// as the average value, and `train.embedding_prior` keeps it there until
/// the data says otherwise (20,000 rows of the default world: share of the
/// achievable lift 0.63 -> 0.74 with both; see benches/decision-quality.md).
const USER_EMBEDDING_STD: f64 = 0.05;

/// The initial scale of the context embeddings. At burn's 1, two 16-wide
/// context vectors outweigh the user embedding in the tower's input, and
/// at 20,000 rows training never undoes that start (share of the achievable
/// lift over the tuning worlds 0.693 -> 0.759 at 0.05). The offer table
/// stays at 1: products that start alike are told apart slowly (0.737 with
/// both small). See benches/decision-quality.md.
const CONTEXT_EMBEDDING_STD: f64 = 0.05;

/// The wide biases are stored divided by this, so that AdamW, whose steps
/// are about `lr` on the stored value, moves them this much faster: from
/// their start at 0, at the default `lr` a bias would need about a thousand
/// steps to reach a logit of 2, more than small data trains for (brand-choice
/// panels: accuracy 0.821 -> 0.824 at 1, 0.852 at 10; benches/decision-quality.md).
const WIDE_SCALE: f32 = 10.0;

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
            activation: activation(config.activation).init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.after_linear(self.linear.forward(x))
    }

    /// The block's output from its linear layer's.
    fn after_linear(&self, x: Tensor<2>) -> Tensor<2> {
        let x = match &self.norm {
            Some(norm) => norm.forward(x),
            None => x,
        };
        dropout(&self.dropout, self.activation.forward(x))
    }
}

/// Inverted dropout while training; a no-op when scoring. Only training
/// (autodiff) draws masks, so the lean build leaves the mask code out.
fn dropout(module: &Dropout, x: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "train")]
    return super::dropout::apply(module, x);
    #[cfg(not(feature = "train"))]
    {
        let _ = module;
        x
    }
}

/// A multi-gate mixture of experts: each expert is an MLP over the encoder
/// input, and each task mixes the experts' outputs with its own softmax
/// gate, so tasks that disagree need not share one representation.
#[derive(Module, Debug)]
pub struct Experts {
    experts: Vec<Vec<Block>>,
    conversion_gate: Linear,
    plan_gate: Linear,
}

impl Experts {
    /// `[batch, input]` -> (conversion user `[batch, width]`, plan user).
    fn forward(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let outputs: Vec<Tensor<2>> = self
            .experts
            .iter()
            .map(|blocks| blocks.iter().fold(x.clone(), |h, b| b.forward(h)))
            .collect();
        // [batch, experts, width]
        let stacked = Tensor::stack::<3>(outputs, 1);
        let mix = |gate: &Linear| {
            let weights = burn::tensor::activation::softmax(gate.forward(x.clone()), 1);
            let [batch, _, width] = stacked.dims();
            (stacked.clone() * weights.unsqueeze_dim::<3>(2))
                .sum_dim(1)
                .reshape([batch, width])
        };
        (mix(&self.conversion_gate), mix(&self.plan_gate))
    }
}

/// One network of the ensemble: the multi-task propensity network.
#[derive(Module, Debug)]
pub struct Member {
    /// One table for every categorical and hashed column, rows offset per
    /// column, so a batch needs a single lookup.
    user_embedding: Option<Embedding>,
    /// The shared-bottom encoder (empty with experts).
    encoder: Vec<Block>,
    /// The mixture of experts that replaces the encoder (MMoE).
    experts: Option<Experts>,
    /// Learned log-variances of the conversion and plan losses `[2]`
    /// (uncertainty weighting); training reads them, scoring does not.
    task_log_variance: Option<Param<Tensor<1>>>,
    offer_embedding: Option<Embedding>,
    /// One table for every context column, offset like the user table.
    context_embedding: Option<Embedding>,
    tower: Vec<Block>,
    conversion: Linear,
    plan: Option<Linear>,
    /// The wide part: per row of the user table, a bias on the conversion
    /// logit and then on each plan logit, `[rows, 1 + plan logits]`, stored
    /// divided by [`WIDE_SCALE`]; starts at 0.
    wide: Option<Embedding>,
    products: usize,
    plan_uses_offer: bool,
}

/// The network: one or more [`Member`]s of the same shape (a seed
/// ensemble, `model.members`). Training gives each member its own loss
/// (see `train`); everything that reads scores averages the members'
/// logits, so calibration and every consumer see one model.
#[derive(Module, Debug)]
pub struct Network {
    members: Vec<Member>,
}

/// The first tower layer's product split by its inputs (see
/// [`Member::split_first_layer`]): `users` `[batch, hidden]` with the bias,
/// `products` `[products, hidden]`, and the weights `[context width,
/// hidden]` that the context embeddings multiply.
struct SplitFirstLayer {
    users: Tensor<2>,
    products: Tensor<2>,
    context: Option<Tensor<2>>,
}

/// How a batch of decisions feeds its users to the conversion tower: through
/// the split first layer, or repeated once per product.
#[allow(clippy::large_enum_variant)] // one per batch: its size does not matter
enum TowerUsers {
    Split(SplitFirstLayer),
    Repeated(Tensor<2>),
}

/// What [`Network::decision_logits`] gives for a batch.
///
/// # Shapes
/// - `conversion`: one `[batch, products]` per context combination asked
/// - `plan`: `[batch, products]`, one per product offered with an
///   offer-aware plan head, else one; empty without a plan head
pub struct DecisionLogits {
    pub conversion: Vec<Tensor<2>>,
    pub plan: Vec<Tensor<2>>,
}

impl NetworkConfig {
    /// A network of `members` members, each with its own initial weights
    /// drawn from the device's random stream.
    pub fn init(&self, device: &Device) -> Network {
        Network {
            members: (0..self.members.max(1))
                .map(|_| self.init_member(device))
                .collect(),
        }
    }

    fn init_member(&self, device: &Device) -> Member {
        let table = |sizes: &[usize], dim: usize, std: f64| {
            let rows: usize = sizes.iter().sum();
            (rows > 0).then(|| {
                EmbeddingConfig::new(rows, dim)
                    .with_initializer(Initializer::Normal { mean: 0.0, std })
                    .init(device)
            })
        };
        let mlp = || {
            let mut blocks = Vec::new();
            let mut width = self.encoder_input();
            for &h in &self.hidden {
                blocks.push(Block::new(self, width, h, device));
                width = h;
            }
            blocks
        };
        let (encoder, experts) = if self.experts > 0 {
            let experts = Experts {
                experts: (0..self.experts).map(|_| mlp()).collect(),
                conversion_gate: LinearConfig::new(self.encoder_input(), self.experts).init(device),
                plan_gate: LinearConfig::new(self.encoder_input(), self.experts).init(device),
            };
            (Vec::new(), Some(experts))
        } else {
            (mlp(), None)
        };
        let user = self.user_width();
        let offer_width = if self.has_offer { self.offer_dim } else { 0 };
        let mut tower = Vec::new();
        let mut width = user + offer_width + self.context_sizes.len() * self.offer_dim;
        for &h in &self.tower {
            tower.push(Block::new(self, width, h, device));
            width = h;
        }
        let plan_uses_offer = self.plan_uses_offer && self.has_offer;
        let plan_input = user + if plan_uses_offer { self.offer_dim } else { 0 };
        Member {
            user_embedding: table(
                &self.embedding_sizes,
                self.embedding_dim,
                USER_EMBEDDING_STD,
            ),
            encoder,
            experts,
            task_log_variance: self
                .task_uncertainty
                .then(|| Param::from_tensor(Tensor::zeros([2], device))),
            offer_embedding: (self.has_offer && self.products > 0)
                .then(|| EmbeddingConfig::new(self.arms(), self.offer_dim).init(device)),
            context_embedding: table(&self.context_sizes, self.offer_dim, CONTEXT_EMBEDDING_STD),
            tower,
            conversion: LinearConfig::new(width, self.conversion_outputs()).init(device),
            plan: (self.products > 0)
                .then(|| LinearConfig::new(plan_input, self.products).init(device)),
            wide: (self.wide_width() > 0).then(|| {
                EmbeddingConfig::new(self.embedding_sizes.iter().sum(), self.wide_width())
                    .with_initializer(Initializer::Zeros)
                    .init(device)
            }),
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

impl Member {
    /// The user embeddings seen by the conversion and the plan task, each
    /// `[batch, user width]`; the same tensor without experts.
    pub fn encode(&self, inputs: &Inputs) -> (Tensor<2>, Tensor<2>) {
        let mut parts = vec![inputs.numeric.clone()];
        if let (Some(table), Some(indices)) = (&self.user_embedding, &inputs.embedded) {
            parts.push(lookup(table, indices.clone()));
        }
        let x = Tensor::cat(parts, 1);
        if let Some(experts) = &self.experts {
            return experts.forward(x);
        }
        let user = self.encoder.iter().fold(x, |h, block| block.forward(h));
        (user.clone(), user)
    }

    /// The sum of the squared user embeddings (every row of the categorical
    /// and hashed columns' table), `[1]`; absent without such columns.
    pub fn user_embedding_square_sum(&self) -> Option<Tensor<1>> {
        let table = self.user_embedding.as_ref()?;
        Some(table.weight.val().powf_scalar(2.0).sum())
    }

    /// The squared wide biases summed over each block of table rows
    /// `(offset, rows)`, per output: `[blocks, width]`; absent without the
    /// wide part or blocks.
    pub fn wide_block_square_sums(&self, blocks: &[(usize, usize)]) -> Option<Tensor<2>> {
        let table = self.wide.as_ref().filter(|_| !blocks.is_empty())?;
        let biases = table.weight.val().mul_scalar(WIDE_SCALE);
        let sums = blocks
            .iter()
            .map(|&(offset, rows)| {
                biases
                    .clone()
                    .narrow(0, offset, rows)
                    .powf_scalar(2.0)
                    .sum_dim(0)
            })
            .collect();
        Some(Tensor::cat(sums, 0))
    }

    /// The learned task log-variances `[2]` (conversion, plan), if the
    /// network was built with `task_uncertainty`.
    pub fn task_log_variance(&self) -> Option<Tensor<1>> {
        self.task_log_variance.as_ref().map(Param::val)
    }

    /// The wide part's sums over a batch's columns: `(conversion [batch, 1],
    /// plan [batch, products])`, the plan part absent without a plan head.
    fn wide(&self, inputs: &Inputs) -> Option<(Tensor<2>, Option<Tensor<2>>)> {
        let (table, indices) = (self.wide.as_ref()?, inputs.wide.clone()?);
        let [batch, _] = indices.dims();
        let [_, width] = table.weight.dims();
        let sums: Tensor<2> = table
            .forward(indices)
            .sum_dim(1)
            .reshape([batch, width])
            .mul_scalar(WIDE_SCALE);
        let plan = self
            .plan
            .is_some()
            .then(|| sums.clone().narrow(1, 1, self.products));
        Some((sums.narrow(1, 0, 1), plan))
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

    /// Conversion logits from a user embedding, the offer (indices `[batch]`
    /// and their embeddings) and the context indices. `[batch]`.
    fn convert(
        &self,
        user: Tensor<2>,
        offer: Option<(Tensor<1, Int>, Tensor<2>)>,
        context: Option<Tensor<2, Int>>,
    ) -> Tensor<1> {
        let mut parts = vec![user];
        let offer = offer.map(|(index, embedded)| {
            parts.push(embedded);
            index
        });
        if let (Some(table), Some(indices)) = (&self.context_embedding, context) {
            parts.push(lookup(table, indices));
        }
        let mut x = Tensor::cat(parts, 1);
        for block in &self.tower {
            x = block.forward(x);
        }
        self.conversion_logit(x, offer)
    }

    /// The conversion logit from the tower's output `[batch, width]`: the
    /// row's offer's output with one per product. `[batch]`.
    fn conversion_logit(&self, x: Tensor<2>, offer: Option<Tensor<1, Int>>) -> Tensor<1> {
        let [batch, _] = x.dims();
        let logits = self.conversion.forward(x);
        match offer {
            // One output per product: the row's offer's.
            Some(index) if logits.dims()[1] > 1 => {
                logits.gather(1, index.reshape([batch, 1])).reshape([batch])
            }
            _ => logits.reshape([batch]),
        }
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
        let (user, plan_user) = self.encode(inputs);
        let offer = inputs
            .offer
            .clone()
            .and_then(|o| Some((o.clone(), self.embed_offer(o)?)));
        let plan = self.plan_logits(plan_user, offer.as_ref().map(|(_, e)| e.clone()));
        let conversion = self.convert(user, offer, inputs.context.clone());
        let Some((wide_conversion, wide_plan)) = self.wide(inputs) else {
            return Outputs { conversion, plan };
        };
        let [batch, _] = wide_conversion.dims();
        Outputs {
            conversion: conversion + wide_conversion.reshape([batch]),
            plan: plan.zip(wide_plan).map(|(p, w)| p + w),
        }
    }

    /// Logits for every product as the offer, in each row's context.
    ///
    /// # Shapes
    /// - returns `(conversion [batch, products], plan [batch, products])`;
    ///   without an offer column `conversion` is `[batch, 1]` and, without
    ///   products, `plan` is absent.
    pub fn score_all_logits(&self, inputs: &Inputs) -> (Tensor<2>, Option<Tensor<2>>) {
        let (user, plan_user) = self.encode(inputs);
        let [batch, _] = user.dims();
        let products = self.products;
        let row_offer = inputs.offer.clone().and_then(|o| self.embed_offer(o));
        let plan = self.plan_logits(plan_user, row_offer);
        let (wide_conversion, wide_plan) = match self.wide(inputs) {
            Some((conversion, plan)) => (Some(conversion), plan),
            None => (None, None),
        };
        let plan = match (plan, wide_plan) {
            (Some(p), Some(w)) => Some(p + w),
            (plan, _) => plan,
        };
        // [batch, products or 1] + [batch, 1], broadcast.
        let with_wide = |logits: Tensor<2>| match &wide_conversion {
            Some(wide) => logits + wide.clone(),
            None => logits,
        };
        if self.offer_embedding.is_none() {
            let logits = self.convert(user, None, inputs.context.clone());
            return (with_wide(logits.reshape([batch, 1])), plan);
        }
        let (users, offers) = self.every_product(user);
        let context = inputs.context.clone().map(|c| {
            let [_, columns] = c.dims();
            c.unsqueeze_dim::<3>(1)
                .expand([batch, products, columns])
                .reshape([batch * products, columns])
        });
        let logits = self.convert(users, offers, context);
        (with_wide(logits.reshape([batch, products])), plan)
    }

    /// Each user repeated once per product, rows `[u0p0, u0p1, ..., u1p0,
    /// ...]`, with those rows' offers (indices and embeddings; none without
    /// an offer table).
    fn every_product(&self, user: Tensor<2>) -> (Tensor<2>, Option<(Tensor<1, Int>, Tensor<2>)>) {
        let [batch, width] = user.dims();
        let products = self.products;
        let offers = self.every_offer(batch, &user.device());
        let users = user
            .unsqueeze_dim::<3>(1)
            .expand([batch, products, width])
            .reshape([batch * products, width]);
        (users, offers)
    }

    /// The offers of [`every_product`](Self::every_product)'s rows for
    /// `batch` users: indices and embeddings, none without an offer table.
    fn every_offer(&self, batch: usize, device: &Device) -> Option<(Tensor<1, Int>, Tensor<2>)> {
        let products = self.products;
        let offers = Tensor::<1, Int>::arange(0..products as i64, device)
            .unsqueeze_dim::<2>(0)
            .expand([batch, products])
            .reshape([batch * products]);
        self.embed_offer(offers.clone())
            .map(|embedded| (offers, embedded))
    }

    /// The first tower layer's input is `[user, offer, context]`, so its
    /// product is the sum of three: the users' part (with the bias) for each
    /// user, and the offers' and the contexts' for each product and context.
    /// Computed apart, a batch of decisions multiplies each once instead of
    /// once per (user, product, context). `None` without a tower or offers.
    fn split_first_layer(&self, user: Tensor<2>) -> Option<SplitFirstLayer> {
        let first = self.tower.first()?;
        let offers = self.offer_embedding.as_ref()?;
        let [_, width] = user.dims();
        let weight = first.linear.weight.val();
        let offer_width = offers.weight.dims()[1];
        let mut users = user.matmul(weight.clone().narrow(0, 0, width));
        if let Some(bias) = &first.linear.bias {
            users = users + bias.val().unsqueeze_dim(0);
        }
        let products = offers
            .weight
            .val()
            .narrow(0, 0, self.products)
            .matmul(weight.clone().narrow(0, width, offer_width));
        let context_rows = weight.dims()[0] - width - offer_width;
        let context =
            (context_rows > 0).then(|| weight.narrow(0, width + offer_width, context_rows));
        Some(SplitFirstLayer {
            users,
            products,
            context,
        })
    }

    /// [`convert`](Self::convert) of every user and product in one context
    /// (`[1, context columns]` indices), from the split first layer. `[users
    /// * products]`, rows as [`every_product`](Self::every_product)'s.
    fn convert_split(
        &self,
        split: &SplitFirstLayer,
        offers: Option<(Tensor<1, Int>, Tensor<2>)>,
        context: Option<Tensor<2, Int>>,
    ) -> Tensor<1> {
        let [batch, hidden] = split.users.dims();
        let products = self.products;
        // [products, hidden]: each product's part plus the context's.
        let mut shared = split.products.clone();
        if let (Some(table), Some(indices), Some(weight)) =
            (&self.context_embedding, context, &split.context)
        {
            shared = shared + lookup(table, indices).matmul(weight.clone());
        }
        let x = split.users.clone().unsqueeze_dim::<3>(1) + shared.unsqueeze_dim::<3>(0);
        let mut x = self.tower[0].after_linear(x.reshape([batch * products, hidden]));
        for block in &self.tower[1..] {
            x = block.forward(x);
        }
        self.conversion_logit(x, offers.map(|(index, _)| index))
    }

    /// [`Network::decision_logits`] of this member: the encoder runs once.
    fn decision_logits(
        &self,
        inputs: &Inputs,
        contexts: &[Option<Tensor<2, Int>>],
    ) -> DecisionLogits {
        let (user, plan_user) = self.encode(inputs);
        let [batch, _] = user.dims();
        let device = user.device();
        let products = self.products;
        let (wide_conversion, wide_plan) = match self.wide(inputs) {
            Some((conversion, plan)) => (Some(conversion), plan),
            None => (None, None),
        };
        // A split first layer needs no copy of the users per product.
        let (users, offers) = match self.split_first_layer(user.clone()) {
            Some(split) => (TowerUsers::Split(split), self.every_offer(batch, &device)),
            None => {
                let (users, offers) = self.every_product(user);
                (TowerUsers::Repeated(users), offers)
            }
        };
        let conversion = contexts
            .iter()
            .map(|context| {
                let logits = match &users {
                    TowerUsers::Split(split) => {
                        self.convert_split(split, offers.clone(), context.clone())
                    }
                    TowerUsers::Repeated(users) => {
                        let context = context.clone().map(|c| {
                            let [_, columns] = c.dims();
                            c.expand([batch * products, columns])
                        });
                        self.convert(users.clone(), offers.clone(), context)
                    }
                };
                let logits = logits.reshape([batch, products]);
                match &wide_conversion {
                    Some(wide) => logits + wide.clone(),
                    None => logits,
                }
            })
            .collect();
        let offered: Vec<Option<Tensor<2>>> = if self.plan_uses_offer {
            (0..products)
                .map(|p| self.embed_offer(Tensor::full([batch], p as i64, &device)))
                .collect()
        } else {
            vec![None]
        };
        let plan = offered
            .into_iter()
            .filter_map(|offer| {
                let logits = self.plan_logits(plan_user.clone(), offer)?;
                Some(match &wide_plan {
                    Some(wide) => logits + wide.clone(),
                    None => logits,
                })
            })
            .collect();
        DecisionLogits { conversion, plan }
    }
}

impl Network {
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn members_mut(&mut self) -> &mut [Member] {
        &mut self.members
    }

    /// Whether the network has a plan-choice head (it does with products).
    pub fn has_plan_head(&self) -> bool {
        self.members[0].plan.is_some()
    }

    /// The members' mean learned task log-variances `[2]` (conversion,
    /// plan), if the network was built with `task_uncertainty`.
    pub fn task_log_variance(&self) -> Option<Tensor<1>> {
        let all: Option<Vec<Tensor<1>>> =
            self.members.iter().map(Member::task_log_variance).collect();
        all.map(|all| mean(all.into_iter()))
    }

    /// Both heads for each row's own offer and context, averaged over the
    /// members (logits).
    pub fn forward(&self, inputs: &Inputs) -> Outputs {
        let outputs: Vec<Outputs> = self.members.iter().map(|m| m.forward(inputs)).collect();
        let plan = outputs
            .iter()
            .all(|o| o.plan.is_some())
            .then(|| mean(outputs.iter().map(|o| o.plan.clone().expect("checked"))));
        Outputs {
            conversion: mean(outputs.into_iter().map(|o| o.conversion)),
            plan,
        }
    }

    /// Probabilities for every product as the offer, in each row's context:
    /// [`score_all_logits`](Self::score_all_logits) through sigmoid and
    /// softmax, uncalibrated.
    pub fn score_all(&self, inputs: &Inputs) -> (Tensor<2>, Option<Tensor<2>>) {
        let (conversion, plan) = self.score_all_logits(inputs);
        (
            sigmoid(conversion),
            plan.map(|logits| burn::tensor::activation::softmax(logits, 1)),
        )
    }

    /// Logits for every product as the offer, in each row's context,
    /// averaged over the members.
    ///
    /// # Shapes
    /// - returns `(conversion [batch, products], plan [batch, products])`;
    ///   without an offer column `conversion` is `[batch, 1]` and, without
    ///   products, `plan` is absent.
    pub fn score_all_logits(&self, inputs: &Inputs) -> (Tensor<2>, Option<Tensor<2>>) {
        let (conversion, plan): (Vec<_>, Vec<_>) = self
            .members
            .iter()
            .map(|m| m.score_all_logits(inputs))
            .unzip();
        let plan = plan
            .iter()
            .all(Option::is_some)
            .then(|| mean(plan.into_iter().flatten()));
        (mean(conversion.into_iter()), plan)
    }

    /// The logits a decision needs, averaged over the members: each
    /// product's conversion logits in each of `contexts` (one combination
    /// of context values each, `[1, context columns]` table indices, or
    /// `None` without context columns), and the plan logits (per product
    /// offered with an offer-aware plan head). Each member encodes the users
    /// once for all of them, where [`score_all_logits`](Self::score_all_logits)
    /// per context and offer would encode them again each time.
    pub fn decision_logits(
        &self,
        inputs: &Inputs,
        contexts: &[Option<Tensor<2, Int>>],
    ) -> DecisionLogits {
        let members: Vec<DecisionLogits> = self
            .members
            .iter()
            .map(|m| m.decision_logits(inputs, contexts))
            .collect();
        let average = |pick: fn(&DecisionLogits) -> &Vec<Tensor<2>>| -> Vec<Tensor<2>> {
            (0..pick(&members[0]).len())
                .map(|i| mean(members.iter().map(|m| pick(m)[i].clone())))
                .collect()
        };
        DecisionLogits {
            conversion: average(|m| &m.conversion),
            plan: average(|m| &m.plan),
        }
    }

    /// The weights as plain arrays for the few-row scoring path, or `None`
    /// where that path does not apply (GELU, which it does not implement).
    pub fn few_rows(&self, config: &NetworkConfig) -> Option<super::few_rows::FewRowNetwork> {
        (config.activation == ActivationKind::Relu).then(|| super::few_rows::FewRowNetwork {
            members: self.members.iter().map(|m| m.few_rows(config)).collect(),
        })
    }
}

/// The mean of one or more tensors of the same shape (the tensor itself
/// when there is one).
fn mean<const D: usize>(tensors: impl Iterator<Item = Tensor<D>>) -> Tensor<D> {
    let mut count = 0usize;
    let sum = tensors
        .inspect(|_| count += 1)
        .reduce(|a, b| a + b)
        .expect("a network has at least one member");
    if count == 1 {
        sum
    } else {
        sum.div_scalar(count as f32)
    }
}

impl Member {
    /// The weights as plain arrays for the few-row scoring path.
    fn few_rows(&self, config: &NetworkConfig) -> super::few_rows::FewRowMember {
        use super::few_rows::{Dense, FewRowMember};
        let values = |t: Tensor<2>| super::inputs::to_vec(t);
        let vector = |t: Tensor<1>| super::inputs::to_vec(t);
        let dense = |linear: &Linear, norm: Option<&LayerNorm>, relu: bool| {
            let [input, output] = linear.weight.dims();
            Dense {
                input,
                output,
                weight: values(linear.weight.val()),
                bias: linear
                    .bias
                    .as_ref()
                    .map_or_else(|| vec![0.0; output], |b| vector(b.val())),
                norm: norm.map(|n| {
                    (
                        vector(n.gamma.val()),
                        n.beta
                            .as_ref()
                            .map_or_else(|| vec![0.0; output], |b| vector(b.val())),
                    )
                }),
                relu,
            }
        };
        let blocks = |blocks: &[Block]| -> Vec<Dense> {
            blocks
                .iter()
                .map(|b| dense(&b.linear, b.norm.as_ref(), true))
                .collect()
        };
        let table = |e: &Option<Embedding>| e.as_ref().map(|e| values(e.weight.val()));
        let layout = super::inputs::Layout::new(config);
        let (embedded_offsets, context_offsets) = layout.offsets();
        FewRowMember {
            numeric_width: config.numeric_width,
            embedding_dim: config.embedding_dim,
            offer_dim: config.offer_dim,
            embedded_offsets,
            context_offsets,
            user_table: table(&self.user_embedding).unwrap_or_default(),
            encoder: blocks(&self.encoder),
            experts: self
                .experts
                .as_ref()
                .map(|e| e.experts.iter().map(|x| blocks(x)).collect())
                .unwrap_or_default(),
            gates: self.experts.as_ref().map(|e| {
                (
                    dense(&e.conversion_gate, None, false),
                    dense(&e.plan_gate, None, false),
                )
            }),
            offer_table: table(&self.offer_embedding),
            context_table: table(&self.context_embedding).unwrap_or_default(),
            tower: blocks(&self.tower),
            conversion: dense(&self.conversion, None, false),
            plan: self.plan.as_ref().map(|p| dense(p, None, false)),
            wide_table: self
                .wide
                .as_ref()
                .map(|e| values(e.weight.val().mul_scalar(WIDE_SCALE))),
            wide_columns: config.wide_columns(),
            products: self.products,
            plan_uses_offer: self.plan_uses_offer,
        }
    }
}
