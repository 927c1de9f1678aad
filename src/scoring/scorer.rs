//! The lean scoring API: load a checkpoint, score rows. Needs neither
//! polars, clap, wgpu nor training code, so serving crates depend on it with
//! `default-features = false`.

pub use crate::error::ScoreError;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use burn::prelude::*;

use crate::model::Network;
use crate::model::inputs::Layout;
use crate::preprocess::{Features, FieldError, Value};
use crate::scoring::calibration::Calibration;
use crate::scoring::checkpoint::{self, Manifest};

/// Rows scored at once inside [`Scorer::score_features`] on a CPU: small
/// enough that a chunk's activations (every product's tower) stay in cache,
/// which made batch scoring 10-60% faster than chunks of 4096.
const CPU_CHUNK: usize = 512;
/// The same on a GPU, where each operation costs a dispatch: large chunks.
const GPU_CHUNK: usize = 16_384;
/// Batches up to this many rows take the plain path on a GPU machine: below
/// it, the dispatch latency of a GPU pass costs more than the CPU's work.
const GPU_FEW_ROWS_MAX: usize = 128;

/// Scores of a batch of rows, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub rows: usize,
    /// Product names, the order of the product axis.
    pub products: Vec<String>,
    /// `[rows]`: P(convert) for each row's own offer (empty when the rows
    /// carried no offer).
    pub p_offer: Vec<f32>,
    /// `[rows, products]`: P(convert | product offered, row's context); with
    /// no offer column in the model, `[rows, 1]`.
    pub p_convert: Vec<f32>,
    /// `[rows, products]`: which product a converting user buys (empty
    /// without products).
    pub p_plan: Vec<f32>,
}

impl Scores {
    /// Width of the `p_convert` rows.
    pub fn convert_width(&self) -> usize {
        self.p_convert.len().checked_div(self.rows).unwrap_or(0)
    }
}

/// P(convert) per context combination and plan probabilities per offer
/// (see `Scorer::decision_probabilities`), each `rows x products`.
type DecisionProbabilities = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// A loaded checkpoint, ready to score.
#[derive(Debug)]
pub struct Scorer {
    manifest: Manifest,
    /// The manifest's calibration, or the identity for older checkpoints.
    calibration: Calibration,
    /// The weights as plain arrays, for batches of a few rows.
    few_rows: Option<crate::model::few_rows::FewRowNetwork>,
    /// Batches up to this many rows take the plain path.
    few_rows_max: usize,
    /// Rows per pass through burn.
    chunk: usize,
    /// Whether a batch's chunks are scored side by side (on a CPU).
    parallel_chunks: bool,
    network: Network,
    layout: Layout,
    device: Device,
}

impl Scorer {
    /// Loads a checkpoint onto the CPU (burn-flex), verifying its format
    /// version and the weights' checksum.
    pub fn load(dir: impl AsRef<Path>) -> Result<Scorer, ScoreError> {
        Scorer::load_on(dir, &Device::flex())
    }

    /// Loads a checkpoint onto a given device.
    pub fn load_on(dir: impl AsRef<Path>, device: &Device) -> Result<Scorer, ScoreError> {
        let (manifest, network) = checkpoint::load(dir.as_ref(), device)?;
        Ok(Scorer::from_parts(manifest, network, device))
    }

    /// A scorer over an in-memory network (for example at the end of
    /// training), with the network moved to inference mode.
    pub fn from_parts(manifest: Manifest, network: Network, device: &Device) -> Scorer {
        let layout = Layout::new(&manifest.network);
        let network = network.valid();
        let cpu = crate::model::device::is_cpu(device);
        Scorer {
            few_rows: network.few_rows(&manifest.network),
            few_rows_max: if cpu {
                crate::model::few_rows::FEW_ROWS_MAX
            } else {
                GPU_FEW_ROWS_MAX
            },
            chunk: if cpu { CPU_CHUNK } else { GPU_CHUNK },
            parallel_chunks: cpu,
            calibration: manifest
                .calibration
                .clone()
                .unwrap_or_else(Calibration::identity),
            network,
            layout,
            manifest,
            device: device.clone(),
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether the plan head needs each row's offer: then rows without one
    /// are scored for every product, but without a plan distribution.
    pub fn plan_needs_offer(&self) -> bool {
        self.manifest.preprocessor.offer.is_some() && self.manifest.network.plan_uses_offer
    }

    /// Forgets what scores of rows without offers cannot say: the offered
    /// product's P(convert), and the plan a buyer takes when it depends on
    /// the offer.
    pub fn without_offers(&self, scores: &mut Scores) {
        scores.p_offer.clear();
        if self.plan_needs_offer() {
            scores.p_plan.clear();
        }
    }

    /// The columns a row may carry: features, offer, context.
    pub fn input_columns(&self) -> Vec<&str> {
        self.manifest.preprocessor.input_columns()
    }

    /// The columns a row needs to be decided for: the features. The policy
    /// chooses the offer and the context, so neither is read.
    pub fn decision_columns(&self) -> Vec<&str> {
        let pre = &self.manifest.preprocessor;
        let mut columns = pre.input_columns();
        columns.retain(|c| {
            pre.offer.as_deref() != Some(*c) && !pre.context.iter().any(|v| v.column() == *c)
        });
        columns
    }

    /// Product names, the order of every product axis.
    pub fn product_names(&self) -> Vec<String> {
        self.manifest
            .preprocessor
            .products
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    /// The offer column's values in offer-index order: the products, then
    /// the no-offer value when the model has a no-offer arm.
    pub fn offer_names(&self) -> Vec<String> {
        let pre = &self.manifest.preprocessor;
        let mut names = self.product_names();
        if self.no_offer_index().is_some() {
            names.extend(pre.no_offer.clone());
        }
        names
    }

    /// Scores already-transformed rows.
    pub fn score_features(&self, features: &Features) -> Scores {
        let products: Vec<String> = self.product_names();
        let mut scores = Scores {
            rows: features.rows,
            products,
            p_offer: Vec::new(),
            p_convert: Vec::with_capacity(features.rows * self.manifest.network.products.max(1)),
            p_plan: Vec::new(),
        };
        if let Some(few_rows) = self
            .few_rows
            .as_ref()
            .filter(|_| features.rows <= self.few_rows_max)
        {
            self.score_few_rows(few_rows, features, &mut scores);
            return scores;
        }
        let per_product = self.manifest.network.has_offer;
        let chunks = self.by_chunks(features.rows, |rows| {
            let inputs = self.layout.inputs(features, rows, &self.device);
            let (conversion, plan) = self.network.score_all_logits(&inputs);
            let [_, width] = conversion.dims();
            let p_convert =
                self.conversion_probabilities(conversion, |i| per_product.then_some(i % width));
            (p_convert, plan.map(|plan| self.plan_probabilities(plan)))
        });
        for (p_convert, p_plan) in chunks {
            scores.p_convert.extend(p_convert);
            scores.p_plan.extend(p_plan.unwrap_or_default());
        }
        self.fill_p_offer(features, &mut scores);
        scores
    }

    /// Each row's own offer's P(convert), picked from `p_convert` (or, for
    /// a no-offer row, from the no-offer arm).
    fn fill_p_offer(&self, features: &Features, scores: &mut Scores) {
        if !features.offer.is_empty() && self.manifest.network.has_offer {
            let width = scores.convert_width();
            let none = self.no_offer_index();
            let unoffered = none
                .filter(|none| features.offer.contains(none))
                .map(|_| self.score_no_offer(features).0);
            scores.p_offer = features
                .offer
                .iter()
                .enumerate()
                .map(|(row, &offer)| match &unoffered {
                    Some(p) if Some(offer) == none => p[row],
                    _ => scores.p_convert[row * width + offer as usize],
                })
                .collect();
        }
    }

    /// The offer index of the model's no-offer arm, if it has one (trained
    /// with `columns.no_offer`).
    pub fn no_offer_index(&self) -> Option<u32> {
        (self.manifest.network.no_offer && self.manifest.network.has_offer)
            .then_some(self.manifest.network.products as u32)
    }

    /// Calibrated P(convert) (`[rows]`) and the plan distribution (`[rows,
    /// products]`, empty without a plan head) of each row with no offer:
    /// what the user does anyway. Empty without a no-offer arm.
    pub fn score_no_offer(&self, features: &Features) -> (Vec<f32>, Vec<f32>) {
        let Some(none) = self.no_offer_index() else {
            return (Vec::new(), Vec::new());
        };
        let mut f = features.clone();
        f.offer = vec![none; f.rows];
        f.context.fill(crate::preprocess::MISSING);
        self.score_offered(&f)
    }

    /// [`score_features`](Self::score_features) through the plain path.
    fn score_few_rows(
        &self,
        few_rows: &crate::model::few_rows::FewRowNetwork,
        features: &Features,
        scores: &mut Scores,
    ) {
        let per_product = self.manifest.network.has_offer;
        let (mut logits, mut plan) = (Vec::new(), Vec::new());
        for row in 0..features.rows {
            logits.clear();
            few_rows.score_row(features, row, &mut logits, &mut plan);
            scores.p_convert.extend(
                logits
                    .iter()
                    .enumerate()
                    .map(|(i, &z)| self.calibration.conversion(z, per_product.then_some(i))),
            );
        }
        let classes = self.manifest.network.products;
        if classes > 0 {
            self.calibration.plans(&mut plan, classes);
            scores.p_plan = plan;
        }
        self.fill_p_offer(features, scores);
    }

    /// Calibrated P(convert) of each row's own offer (`[rows]`) and the plan
    /// distribution (`[rows, products]`, empty without a plan head): one
    /// tower pass per row instead of one per product, for evaluation.
    pub fn score_offered(&self, features: &Features) -> (Vec<f32>, Vec<f32>) {
        let (mut p_offer, mut p_plan) = (Vec::with_capacity(features.rows), Vec::new());
        let per_product = self.manifest.network.has_offer && !features.offer.is_empty();
        let chunks = self.by_chunks(features.rows, |rows| {
            let start = rows.start;
            let out = self
                .network
                .forward(&self.layout.inputs(features, rows, &self.device));
            let p_offer = self.conversion_probabilities(out.conversion, |i| {
                per_product.then(|| features.offer[start + i] as usize)
            });
            (p_offer, out.plan.map(|plan| self.plan_probabilities(plan)))
        });
        for (offer, plan) in chunks {
            p_offer.extend(offer);
            p_plan.extend(plan.unwrap_or_default());
        }
        (p_offer, p_plan)
    }

    /// Transforms records (column name -> value; a missing column is null).
    /// The names may be owned or borrowed.
    pub fn transform_records<K>(
        &self,
        records: &[HashMap<K, Value<'_>>],
    ) -> Result<Features, FieldError>
    where
        K: std::borrow::Borrow<str> + std::hash::Hash + Eq,
    {
        self.manifest
            .preprocessor
            .transform(records.len(), |row, column| {
                records[row].get(column).copied().unwrap_or(Value::Null)
            })
    }

    /// Transforms columns (column name -> one value per row; a missing
    /// column is null).
    pub fn transform_columns(
        &self,
        columns: &HashMap<String, Vec<Value<'_>>>,
    ) -> Result<Features, ScoreError> {
        let rows = columns.values().map(Vec::len).max().unwrap_or(0);
        for (column, values) in columns {
            if values.len() != rows {
                return Err(ScoreError::Length {
                    column: column.clone(),
                    found: values.len(),
                    expected: rows,
                });
            }
        }
        Ok(self.manifest.preprocessor.transform(rows, |row, column| {
            columns
                .get(column)
                .map_or(Value::Null, |values| values[row])
        })?)
    }

    /// Scores rows given as records: column name -> value. Records without
    /// the offer column are scored for every product; `p_offer` is then
    /// empty, and so is `p_plan` when [`plan_needs_offer`](Self::plan_needs_offer).
    pub fn score_records(
        &self,
        records: &[HashMap<String, Value<'_>>],
    ) -> Result<Scores, ScoreError> {
        let pre = &self.manifest.preprocessor;
        let features = self.transform_records(records)?;
        let has_offers = pre
            .offer
            .as_ref()
            .is_some_and(|o| records.iter().all(|r| r.contains_key(o.as_str())));
        let mut scores = self.score_features(&features);
        if !has_offers {
            self.without_offers(&mut scores);
        }
        Ok(scores)
    }

    /// Scores rows given as columns: column name -> one value per row.
    /// Without the offer column, rows are scored for every product only.
    pub fn score_columns(
        &self,
        columns: &HashMap<String, Vec<Value<'_>>>,
    ) -> Result<Scores, ScoreError> {
        let pre = &self.manifest.preprocessor;
        let has_offers = pre
            .offer
            .as_ref()
            .is_some_and(|o| columns.contains_key(o.as_str()));
        let features = self.transform_columns(columns)?;
        let mut scores = self.score_features(&features);
        if !has_offers {
            self.without_offers(&mut scores);
        }
        Ok(scores)
    }
}

impl Scorer {
    /// Every combination of the context columns' known values, as
    /// (column, value) pairs with their vocabulary indices: the contexts the
    /// policy may choose between. Empty without context columns.
    pub fn context_combinations(&self) -> Vec<Vec<(String, String, u32)>> {
        let mut combos: Vec<Vec<(String, String, u32)>> = vec![Vec::new()];
        for vocab in &self.manifest.preprocessor.context {
            let mut next = Vec::new();
            for combo in &combos {
                for (i, token) in vocab.tokens().iter().enumerate() {
                    let mut c = combo.clone();
                    c.push((
                        vocab.column().to_string(),
                        token.clone(),
                        i as u32 + crate::preprocess::RESERVED,
                    ));
                    next.push(c);
                }
            }
            combos = next;
        }
        if self.manifest.preprocessor.context.is_empty() {
            Vec::new()
        } else {
            combos
        }
    }

    /// What the decision policy needs per row: P(convert) for every product
    /// in every context combination, and the value of what a converting
    /// user buys per product offered.
    pub fn user_scores(
        &self,
        features: &Features,
    ) -> Result<Vec<crate::policy::UserScores>, ScoreError> {
        let pre = &self.manifest.preprocessor;
        if !self.manifest.network.has_offer || pre.products.is_empty() {
            return Err(ScoreError::NoOffers);
        }
        let products = pre.products.len();
        let values: Vec<f64> = pre.products.iter().map(|p| p.value).collect();
        let combos = self.context_combinations();
        let (per_context, plans) = self.decision_probabilities(features, &combos);
        let expected = |p_plan: &[f32], row: usize| -> f64 {
            (0..products)
                .map(|k| f64::from(p_plan[row * products + k]) * values[k])
                .sum()
        };
        let (p_none, plan_none) = self.score_no_offer(features);
        Ok((0..features.rows)
            .map(|row| crate::policy::UserScores {
                no_offer: (!p_none.is_empty()).then(|| crate::policy::NoOffer {
                    p_convert: f64::from(p_none[row]),
                    value: f64::from(p_none[row])
                        * if plan_none.is_empty() {
                            0.0
                        } else {
                            expected(&plan_none, row)
                        },
                }),
                p_convert: per_context
                    .iter()
                    .map(|p_convert| {
                        (0..products)
                            .map(|p| f64::from(p_convert[row * products + p]))
                            .collect()
                    })
                    .collect(),
                // One plan for every offer (an offer-blind plan head), or
                // what a buyer picks given each offer.
                value_if_converted: match plans.len() {
                    1 => vec![expected(&plans[0], row); products],
                    _ => plans.iter().map(|p_plan| expected(p_plan, row)).collect(),
                },
            })
            .collect())
    }

    /// P(convert) of every product in each context combination (`rows x
    /// products` each; one, the rows' own, without context columns) and the
    /// plan probabilities (`rows x products`, per product offered with an
    /// offer-aware plan head, else one).
    fn decision_probabilities(
        &self,
        features: &Features,
        combos: &[Vec<(String, String, u32)>],
    ) -> DecisionProbabilities {
        let products = self.manifest.network.products;
        let offer_aware = self.manifest.network.plan_uses_offer;
        if self.few_rows.is_some() && features.rows <= self.few_rows_max {
            // The plain path scores one context and offer at a time.
            let columns = self.manifest.preprocessor.context.len();
            let per_context: Vec<Scores> = if combos.is_empty() {
                vec![self.score_features(features)]
            } else {
                combos
                    .iter()
                    .map(|combo| {
                        let mut f = features.clone();
                        for row in 0..f.rows {
                            for (j, (_, _, index)) in combo.iter().enumerate() {
                                f.context[row * columns + j] = *index;
                            }
                        }
                        self.score_features(&f)
                    })
                    .collect()
            };
            let plans = if offer_aware {
                (0..products)
                    .map(|p| {
                        let mut f = features.clone();
                        f.offer = vec![p as u32; f.rows];
                        self.score_features(&f).p_plan
                    })
                    .collect()
            } else {
                vec![per_context[0].p_plan.clone()]
            };
            return (
                per_context.into_iter().map(|s| s.p_convert).collect(),
                plans,
            );
        }
        // Without context columns there is one context: none. The context
        // tensors are built once, for every chunk.
        let contexts: Vec<_> = if combos.is_empty() {
            vec![None]
        } else {
            combos
                .iter()
                .map(|combo| {
                    let indices: Vec<u32> = combo.iter().map(|(_, _, index)| *index).collect();
                    self.layout.context_combination(&indices, &self.device)
                })
                .collect()
        };
        let chunks = self.by_chunks(features.rows, |rows| -> DecisionProbabilities {
            let inputs = self.layout.inputs(features, rows, &self.device);
            let logits = self.network.decision_logits(&inputs, &contexts);
            let p_convert = logits
                .conversion
                .into_iter()
                .map(|conversion| self.conversion_probabilities(conversion, |i| Some(i % products)))
                .collect();
            let p_plan = logits
                .plan
                .into_iter()
                .map(|plan| self.plan_probabilities(plan))
                .collect();
            (p_convert, p_plan)
        });
        let mut p_convert = vec![Vec::with_capacity(features.rows * products); combos.len().max(1)];
        let mut p_plan = vec![
            Vec::with_capacity(features.rows * products);
            if offer_aware { products } else { 1 }
        ];
        for (conversion, plan) in chunks {
            for (out, part) in p_convert.iter_mut().zip(conversion) {
                out.extend(part);
            }
            for (out, part) in p_plan.iter_mut().zip(plan) {
                out.extend(part);
            }
        }
        (p_convert, p_plan)
    }

    /// Runs `score` over the rows in chunks of `self.chunk`, in row order.
    /// On a CPU the chunks, each too small for burn to split its operations,
    /// are scored side by side on the pool; a single chunk stays on the
    /// calling thread (a server's request), as handing it over costs a
    /// thread wake-up.
    fn by_chunks<T: Send>(&self, rows: usize, score: impl Fn(Range<usize>) -> T + Sync) -> Vec<T> {
        let chunk = |i: usize| score(i * self.chunk..((i + 1) * self.chunk).min(rows));
        let chunks = rows.div_ceil(self.chunk);
        if self.parallel_chunks && chunks > 1 {
            (0..chunks).into_par_iter().map(chunk).collect()
        } else {
            (0..chunks).map(chunk).collect()
        }
    }

    /// Calibrated P(convert) of conversion logits; `product(i)` is the
    /// product of the i-th logit (for its temperature), if any.
    fn conversion_probabilities<const D: usize>(
        &self,
        logits: Tensor<D>,
        product: impl Fn(usize) -> Option<usize>,
    ) -> Vec<f32> {
        let z = crate::model::inputs::to_vec(logits);
        z.iter()
            .enumerate()
            .map(|(i, &z)| self.calibration.conversion(z, product(i)))
            .collect()
    }

    /// Calibrated plan distributions of plan logits (`[rows, classes]`).
    fn plan_probabilities(&self, logits: Tensor<2>) -> Vec<f32> {
        let [_, classes] = logits.dims();
        let mut probs = crate::model::inputs::to_vec(logits);
        self.calibration.plans(&mut probs, classes);
        probs
    }

    /// The decision policy of this checkpoint: its products and contexts,
    /// with the given rules.
    pub fn policy(&self, config: crate::config::PolicyConfig, seed: u64) -> crate::policy::Policy {
        let products = self.product_names();
        let contexts = self
            .context_combinations()
            .into_iter()
            .map(|combo| combo.into_iter().map(|(c, v, _)| (c, v)).collect())
            .collect();
        crate::policy::Policy::new(products, contexts, config, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in the lean build too (`--no-default-features`): the serving
    /// path loads and scores the committed demo checkpoint on its own.
    #[test]
    fn the_demo_checkpoint_scores_a_record() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/demo");
        let scorer = Scorer::load(&dir).unwrap();
        let mut record: HashMap<String, Value<'_>> = HashMap::new();
        record.insert("tenure_months".into(), Value::Number(14.0));
        record.insert("country".into(), Value::Text("SE"));
        record.insert("offer".into(), Value::Text("family"));
        record.insert("surface".into(), Value::Text("push"));
        let scores = scorer.score_records(&[record]).unwrap();
        assert_eq!(scores.rows, 1);
        assert_eq!(scores.products.len(), 6);
        let family = scores.products.iter().position(|p| p == "family").unwrap();
        assert_eq!(scores.p_offer[0], scores.p_convert[family]);
        assert!(scores.p_convert.iter().all(|p| (0.0..=1.0).contains(p)));
        let total: f32 = scores.p_plan.iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
    }

    #[test]
    fn columns_and_records_score_alike() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/demo");
        let scorer = Scorer::load(&dir).unwrap();
        let mut columns: HashMap<String, Vec<Value<'_>>> = HashMap::new();
        columns.insert(
            "tenure_months".into(),
            vec![Value::Number(3.0), Value::Null],
        );
        columns.insert("country".into(), vec![Value::Text("US"), Value::Text("SE")]);
        columns.insert(
            "offer".into(),
            vec![Value::Text("duo"), Value::Text("student")],
        );
        let by_columns = scorer.score_columns(&columns).unwrap();
        let records: Vec<HashMap<String, Value<'_>>> = (0..2)
            .map(|row| columns.iter().map(|(k, v)| (k.clone(), v[row])).collect())
            .collect();
        assert_eq!(by_columns, scorer.score_records(&records).unwrap());
        assert_eq!(by_columns.p_offer.len(), 2);
        columns.insert("country".into(), vec![Value::Text("US")]);
        let message = scorer.score_columns(&columns).unwrap_err().to_string();
        assert!(
            message.contains("\"country\" has 1 values; expected 2"),
            "{message}"
        );
    }

    /// A few rows take the plain path, more rows burn's: the same scores.
    #[test]
    fn the_few_row_path_matches_burn() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/demo");
        let scorer = Scorer::load(&dir).unwrap();
        assert!(scorer.few_rows.is_some());
        let rows: Vec<HashMap<String, Value<'_>>> = (0..crate::model::few_rows::FEW_ROWS_MAX + 1)
            .map(|i| {
                let mut record = HashMap::new();
                record.insert("tenure_months".into(), Value::Number(i as f64 * 3.0));
                record.insert("country".into(), Value::Text(["SE", "US", "XX"][i % 3]));
                record.insert("offer".into(), Value::Text(["family", "duo"][i % 2]));
                record.insert("surface".into(), Value::Text("push"));
                record
            })
            .collect();
        let all = scorer.score_records(&rows).unwrap();
        for (i, row) in rows.iter().enumerate() {
            let one = scorer.score_records(std::slice::from_ref(row)).unwrap();
            let width = all.convert_width();
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
            assert!(close(
                &one.p_convert,
                &all.p_convert[i * width..(i + 1) * width]
            ));
            assert!(close(&one.p_plan, &all.p_plan[i * 6..(i + 1) * 6]));
            assert!(close(&one.p_offer, &all.p_offer[i..=i]));
        }
    }

    /// A finite number far outside anything the model was trained on is
    /// refused, naming the field, rather than scored as garbage (it used to
    /// overflow to infinity in f32, and the two scoring paths disagreed).
    #[test]
    fn an_extreme_number_is_a_field_error() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/demo");
        let scorer = Scorer::load(&dir).unwrap();
        for rows in [1, crate::model::few_rows::FEW_ROWS_MAX + 1] {
            let records: Vec<HashMap<String, Value<'_>>> = (0..rows)
                .map(|i| {
                    let tenure = if i + 1 == rows { 1e308 } else { 12.0 };
                    HashMap::from([("tenure_months".to_string(), Value::Number(tenure))])
                })
                .collect();
            let message = scorer.score_records(&records).unwrap_err().to_string();
            assert!(
                message.contains("field \"tenure_months\"")
                    && message.contains(&format!("row {}", rows - 1))
                    && message.contains("standard deviations"),
                "{message}"
            );
        }
        // Large but representable values still score.
        let record = HashMap::from([("tenure_months".to_string(), Value::Number(1e4))]);
        assert!(scorer.score_records(&[record]).is_ok());
    }

    #[test]
    fn an_unknown_offer_is_a_field_error() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/demo");
        let scorer = Scorer::load(&dir).unwrap();
        let mut record: HashMap<String, Value<'_>> = HashMap::new();
        record.insert("offer".into(), Value::Text("platinum"));
        let message = scorer.score_records(&[record]).unwrap_err().to_string();
        assert!(
            message.contains("field \"offer\"") && message.contains("platinum"),
            "{message}"
        );
    }
}
