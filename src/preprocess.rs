//! The fitted preprocessing: how one raw value becomes a model input.
//!
//! A [`Preprocessor`] is fitted on the training split (see `data::fit`),
//! serialised into the checkpoint, and applied unchanged at serving time, so a
//! row is transformed the same way in training, batch scoring and online
//! scoring. This module depends on serde only: serving crates use it without
//! polars.

pub use crate::error::FieldError;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// Index of values that were rare in the training data or never seen.
pub const OOV: u32 = 0;
/// Index of a null value (the `missing` token).
pub const MISSING: u32 = 1;
/// The largest standardised numeric value (in standard deviations from the
/// training mean) that is scored; beyond it an input is refused.
pub const MAX_STANDARD_SCORE: f64 = 1e6;
/// Vocabulary indices below this are reserved ([`OOV`], [`MISSING`]).
pub const RESERVED: u32 = 2;

/// A numeric feature: optional `sign(x) ln(1 + |x|)`, then standardisation
/// with the training mean and standard deviation. A null becomes the mean
/// (0 after standardisation) with its missing flag set.
///
/// With `bins`, the value is also given as a piecewise-linear encoding over
/// training quantiles (Gorishniy et al., "On Embeddings for Numerical
/// Features in Tabular Deep Learning", 2022): one input per bin, 0 below
/// it, 1 above it, linear inside. An MLP reads a standardised scalar as a
/// smooth trend and learns a bump at one value (a two-person household)
/// slowly, if at all; over bins it is one weight per bin. Being built from
/// quantiles, the encoding ignores monotone transforms and heavy tails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericFeature {
    pub column: String,
    pub log1p: bool,
    /// Mean of the (log-transformed) training values.
    pub mean: f64,
    /// Standard deviation of the (log-transformed) training values; 1 for a
    /// constant column, so it maps to 0 rather than dividing by zero.
    pub std: f64,
    /// Strictly increasing bin edges over the (log-transformed) values:
    /// `edges.len() - 1` bins. Empty: no bin encoding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bins: Vec<f64>,
}

impl NumericFeature {
    /// The value before standardisation.
    pub fn raw(&self, x: f64) -> f64 {
        if self.log1p {
            x.signum() * x.abs().ln_1p()
        } else {
            x
        }
    }

    /// The model input and its missing flag for one value.
    /// Why `x` cannot be scored, if it cannot: its standardised value is
    /// not finite in `f32` or lies beyond [`MAX_STANDARD_SCORE`] standard
    /// deviations, where the network's arithmetic turns to garbage (an
    /// overflow to infinity, then NaN) rather than to a score.
    pub fn out_of_range(&self, x: f64) -> Option<String> {
        let z = (self.raw(x) - self.mean) / self.std;
        (!((z as f32).is_finite() && z.abs() <= MAX_STANDARD_SCORE)).then(|| {
            format!(
                "{x} is {z:.3e} standard deviations from the training mean (at most \
                 {MAX_STANDARD_SCORE:e} can be scored)"
            )
        })
    }

    pub fn apply(&self, x: Option<f64>) -> (f32, f32) {
        match x {
            Some(x) => (((self.raw(x) - self.mean) / self.std) as f32, 0.0),
            None => (0.0, 1.0),
        }
    }

    /// Inputs of the bin encoding.
    pub fn bin_width(&self) -> usize {
        self.bins.len().saturating_sub(1)
    }

    /// Writes the bin encoding of one value into `out` (`bin_width` long);
    /// a null is all zeros (its missing flag says the rest). Values beyond
    /// the training range saturate rather than extrapolate.
    pub fn encode_bins(&self, x: Option<f64>, out: &mut [f32]) {
        let Some(x) = x.map(|x| self.raw(x)) else {
            out.fill(0.0);
            return;
        };
        for (slot, edge) in out.iter_mut().zip(self.bins.windows(2)) {
            *slot = ((x - edge[0]) / (edge[1] - edge[0])).clamp(0.0, 1.0) as f32;
        }
    }
}

/// Bin edges at `bins` evenly spaced quantiles of `sample` (sorted in
/// place), repeated values merged: a column of a few distinct values gets
/// about one bin per value, a constant column none.
pub fn quantile_edges(sample: &mut [f64], bins: usize) -> Vec<f64> {
    if sample.is_empty() || bins == 0 {
        return Vec::new();
    }
    sample.sort_unstable_by(f64::total_cmp);
    let last = sample.len() - 1;
    let mut edges: Vec<f64> = (0..=bins)
        .map(|i| sample[(i * last + bins / 2) / bins])
        .collect();
    edges.dedup();
    if edges.len() < 2 {
        edges.clear();
    }
    edges
}

/// A categorical feature's vocabulary: index 0 is out-of-vocabulary, 1 is
/// `missing`, then the kept values from the most frequent down (ties in
/// lexicographic order, so fitting is deterministic).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "VocabularyRepr", into = "VocabularyRepr")]
pub struct Vocabulary {
    column: String,
    tokens: Vec<String>,
    index: HashMap<String, u32>,
}

#[derive(Serialize, Deserialize)]
struct VocabularyRepr {
    column: String,
    tokens: Vec<String>,
}

impl From<VocabularyRepr> for Vocabulary {
    fn from(repr: VocabularyRepr) -> Self {
        Vocabulary::new(repr.column, repr.tokens)
    }
}

impl From<Vocabulary> for VocabularyRepr {
    fn from(vocab: Vocabulary) -> Self {
        VocabularyRepr {
            column: vocab.column,
            tokens: vocab.tokens,
        }
    }
}

impl PartialEq for Vocabulary {
    fn eq(&self, other: &Self) -> bool {
        self.column == other.column && self.tokens == other.tokens
    }
}

impl Vocabulary {
    /// A vocabulary whose kept values are `tokens`, in index order.
    pub fn new(column: String, tokens: Vec<String>) -> Self {
        let index = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32 + RESERVED))
            .collect();
        Vocabulary {
            column,
            tokens,
            index,
        }
    }

    /// Keeps the values seen at least `min_count` times, at most `max_vocab`
    /// of them (0: no limit), most frequent first.
    pub fn from_counts(
        column: String,
        counts: impl IntoIterator<Item = (String, u64)>,
        min_count: u64,
        max_vocab: usize,
    ) -> Self {
        let mut kept: Vec<(String, u64)> = counts
            .into_iter()
            .filter(|(_, n)| *n >= min_count)
            .collect();
        kept.sort_by(|(a, na), (b, nb)| nb.cmp(na).then_with(|| a.cmp(b)));
        if max_vocab > 0 {
            kept.truncate(max_vocab);
        }
        Vocabulary::new(column, kept.into_iter().map(|(t, _)| t).collect())
    }

    pub fn column(&self) -> &str {
        &self.column
    }

    /// The kept values, in index order from [`RESERVED`].
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Number of indices, reserved ones included: the embedding table's rows.
    pub fn size(&self) -> usize {
        self.tokens.len() + RESERVED as usize
    }

    /// The index of a value; `None` is null.
    pub fn index(&self, value: Option<&str>) -> u32 {
        match value {
            None => MISSING,
            Some(v) => self.index.get(v).copied().unwrap_or(OOV),
        }
    }
}

/// A high-cardinality feature hashed into a fixed number of buckets: index 0
/// is null, `1 + xxh3_64(utf8) % buckets` otherwise. xxh3 is specified and
/// stable across platforms and versions, so other languages can reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HashedFeature {
    pub column: String,
    pub buckets: u32,
}

impl HashedFeature {
    /// Number of indices: the embedding table's rows.
    pub fn size(&self) -> usize {
        self.buckets as usize + 1
    }

    pub fn index(&self, value: Option<&str>) -> u32 {
        match value {
            None => 0,
            Some(v) => 1 + (xxh3_64(v.as_bytes()) % u64::from(self.buckets)) as u32,
        }
    }
}

/// A product that can be offered or bought, with its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub name: String,
    pub value: f64,
}

/// Everything needed to turn a raw row into model inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessor {
    pub numeric: Vec<NumericFeature>,
    pub categorical: Vec<Vocabulary>,
    pub hashed: Vec<HashedFeature>,
    /// The offer column, whose values index [`Preprocessor::products`].
    pub offer: Option<String>,
    /// The offer value of a no-offer row (`columns.no_offer`): its offer
    /// index is the number of products, the model's no-offer arm, and its
    /// context is missing whatever the row says. Absent in checkpoints
    /// written before no-offer arms existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_offer: Option<String>,
    pub context: Vec<Vocabulary>,
    /// The plan column, whose values index [`Preprocessor::products`].
    pub plan: Option<String>,
    /// Offer and plan vocabulary, in a fixed (sorted) order.
    pub products: Vec<Product>,
    /// The training rows' distribution of each feature, which serving
    /// compares its traffic with (drift). Absent in checkpoints written
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// How the training rows were spread over each feature's values: what
/// input drift is measured against. Shares sum to 1 per feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Per numeric feature, in [`Preprocessor::numeric`]'s order.
    pub numeric: Vec<NumericReference>,
    /// Per categorical feature, in [`Preprocessor::categorical`]'s order:
    /// the share of training rows at each embedding index (out of
    /// vocabulary and missing first, as [`Vocabulary::index`] numbers them).
    pub categorical: Vec<Vec<f64>>,
}

/// A numeric feature's training distribution over its deciles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericReference {
    /// Ascending cut points on the (log-transformed) scale of
    /// [`NumericFeature::raw`]: `edges.len() + 1` bins.
    pub edges: Vec<f64>,
    /// The share of training rows in each bin, then the share missing.
    pub shares: Vec<f64>,
}

impl NumericReference {
    /// Bins for drift: a tenth of the training values each, as far as
    /// ties allow.
    pub const BINS: usize = 10;

    /// The bin of a (log-transformed) value; missing is the last.
    pub fn bin(&self, raw: Option<f64>) -> usize {
        match raw {
            Some(x) => self.edges.partition_point(|&edge| edge <= x),
            None => self.edges.len() + 1,
        }
    }
}

/// The population stability index of `observed` counts against `expected`
/// shares: sum of (a - e) ln(a / e) over the bins, with each share floored
/// at 1e-4 so that an empty bin counts as rare rather than infinite. Below
/// 0.1 is usually read as stable, above 0.25 as a shift to act on. `None`
/// before any row is observed.
pub fn population_stability_index(expected: &[f64], observed: &[u64]) -> Option<f64> {
    let total: u64 = observed.iter().sum();
    if total == 0 {
        return None;
    }
    let floor = 1e-4;
    Some(
        expected
            .iter()
            .zip(observed)
            .map(|(&e, &n)| {
                let (e, a) = (e.max(floor), (n as f64 / total as f64).max(floor));
                (a - e) * (a / e).ln()
            })
            .sum(),
    )
}

impl Preprocessor {
    /// Width of the numeric input: a value and a missing flag per column,
    /// then each column's bin encoding.
    pub fn numeric_width(&self) -> usize {
        2 * self.numeric.len()
            + self
                .numeric
                .iter()
                .map(NumericFeature::bin_width)
                .sum::<usize>()
    }

    /// Number of embedded user columns: categorical, then hashed.
    pub fn embedded_columns(&self) -> usize {
        self.categorical.len() + self.hashed.len()
    }

    /// Embedding table sizes of the user columns, categorical then hashed.
    pub fn embedding_sizes(&self) -> Vec<usize> {
        self.categorical
            .iter()
            .map(Vocabulary::size)
            .chain(self.hashed.iter().map(HashedFeature::size))
            .collect()
    }

    /// The index of a product by name.
    pub fn product_index(&self, name: &str) -> Option<u32> {
        self.products
            .iter()
            .position(|p| p.name == name)
            .map(|i| i as u32)
    }

    /// The offer index of an offer column value: a product's index, or the
    /// no-offer arm's (the number of products) for `no_offer`.
    pub fn offer_index(&self, name: &str) -> Option<u32> {
        if self.no_offer.as_deref() == Some(name) {
            return Some(self.products.len() as u32);
        }
        self.product_index(name)
    }

    /// The offer index of the no-offer arm, if the model has one.
    pub fn no_offer_index(&self) -> Option<u32> {
        self.no_offer.as_ref().map(|_| self.products.len() as u32)
    }
}

/// One raw value of a row, as a caller hands it to the scorer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Number(f64),
    Bool(bool),
    Text(&'a str),
}

impl Preprocessor {
    /// Every input column the preprocessing reads: features, then the offer
    /// and context columns.
    pub fn input_columns(&self) -> Vec<&str> {
        let mut columns: Vec<&str> = self.numeric.iter().map(|f| f.column.as_str()).collect();
        columns.extend(self.categorical.iter().map(Vocabulary::column));
        columns.extend(self.hashed.iter().map(|h| h.column.as_str()));
        columns.extend(self.offer.as_deref());
        columns.extend(self.context.iter().map(Vocabulary::column));
        columns
    }

    /// Transforms `rows` rows whose values `get(row, column)` returns, exactly
    /// as the polars pipeline transforms a table. Numbers given for
    /// categorical columns are formatted as polars casts them (`415`, `1.5`),
    /// booleans as `true`/`false`.
    ///
    /// The offer is optional: without it (`Value::Null`) the row is scored
    /// for every product only, and its offer index is 0.
    pub fn transform<'a>(
        &self,
        rows: usize,
        get: impl Fn(usize, &str) -> Value<'a>,
    ) -> Result<Features, FieldError> {
        let n_numeric = self.numeric.len();
        let width = self.numeric_width();
        let n_embedded = self.embedded_columns();
        let n_context = self.context.len();
        let mut out = Features {
            rows,
            numeric: vec![0.0; rows * width],
            embedded: vec![0; rows * n_embedded],
            offer: if self.offer.is_some() {
                vec![0; rows]
            } else {
                Vec::new()
            },
            context: vec![0; rows * n_context],
        };
        let fail = |row: usize, column: &str, reason: String| FieldError {
            row,
            column: column.to_string(),
            reason,
        };
        let mut text = String::new();
        for row in 0..rows {
            // Each column's bins follow the previous column's.
            let mut bins = 2 * n_numeric;
            for (j, feature) in self.numeric.iter().enumerate() {
                let x = match get(row, &feature.column) {
                    Value::Null => None,
                    Value::Number(x) if x.is_finite() => Some(x),
                    Value::Number(x) => {
                        return Err(fail(
                            row,
                            &feature.column,
                            format!("{x} is not a finite number"),
                        ));
                    }
                    Value::Bool(b) => Some(f64::from(u8::from(b))),
                    Value::Text(t) => {
                        return Err(fail(
                            row,
                            &feature.column,
                            format!("expected a number, got {t:?}"),
                        ));
                    }
                };
                if let Some(reason) = x.and_then(|x| feature.out_of_range(x)) {
                    return Err(fail(row, &feature.column, reason));
                }
                let (value, missing) = feature.apply(x);
                let inputs = &mut out.numeric[row * width..(row + 1) * width];
                inputs[j] = value;
                inputs[n_numeric + j] = missing;
                feature.encode_bins(x, &mut inputs[bins..bins + feature.bin_width()]);
                bins += feature.bin_width();
            }
            let as_text = |value: Value<'a>, text: &mut String| -> Option<()> {
                text.clear();
                match value {
                    Value::Null => return None,
                    Value::Number(x) => {
                        use std::fmt::Write;
                        let _ = write!(text, "{x}");
                    }
                    Value::Bool(b) => text.push_str(if b { "true" } else { "false" }),
                    Value::Text(t) => text.push_str(t),
                }
                Some(())
            };
            for (j, vocab) in self.categorical.iter().enumerate() {
                let present = as_text(get(row, vocab.column()), &mut text);
                out.embedded[row * n_embedded + j] = vocab.index(present.map(|_| text.as_str()));
            }
            let offset = self.categorical.len();
            for (j, hashed) in self.hashed.iter().enumerate() {
                let present = as_text(get(row, &hashed.column), &mut text);
                out.embedded[row * n_embedded + offset + j] =
                    hashed.index(present.map(|_| text.as_str()));
            }
            if let Some(column) = &self.offer
                && as_text(get(row, column), &mut text).is_some()
            {
                out.offer[row] = self.offer_index(&text).ok_or_else(|| {
                    let names: Vec<&str> = self
                        .products
                        .iter()
                        .map(|p| p.name.as_str())
                        .chain(self.no_offer.as_deref())
                        .collect();
                    fail(
                        row,
                        column,
                        format!("{text:?} is not a product ({})", names.join(", ")),
                    )
                })?;
            }
            let shown = self
                .no_offer_index()
                .is_none_or(|none| out.offer.get(row) != Some(&none));
            for (j, vocab) in self.context.iter().enumerate() {
                let present = as_text(get(row, vocab.column()), &mut text).filter(|_| shown);
                out.context[row * n_context + j] = vocab.index(present.map(|_| text.as_str()));
            }
        }
        Ok(out)
    }
}

/// Model inputs for a batch of rows, dense and row-major, ready to become
/// tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    pub rows: usize,
    /// `[rows, numeric width]`: the standardised values, the missing flags,
    /// then the bin encodings.
    pub numeric: Vec<f32>,
    /// `[rows, categorical + hashed]`: embedding indices.
    pub embedded: Vec<u32>,
    /// `[rows]`: the offer's product index (empty without an offer column).
    pub offer: Vec<u32>,
    /// `[rows, context]`: context indices.
    pub context: Vec<u32>,
}

/// Training targets for a batch of rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    /// `[rows]`: 1.0 when the exposure converted.
    pub converted: Vec<f32>,
    /// `[rows]`: the bought product's index, or [`NO_PLAN`].
    pub plan: Vec<i32>,
    /// `[rows]`: row weights (1 without a weight column).
    pub weight: Vec<f32>,
    /// `[rows]`: logging propensities (empty without a propensity column).
    pub propensity: Vec<f32>,
    /// `[rows]`: realised values (empty without a value column).
    pub value: Vec<f32>,
}

impl Features {
    /// The rows at `indices`, in that order (a shuffled epoch, a sample).
    pub fn take(&self, indices: &[usize]) -> Features {
        Features {
            rows: indices.len(),
            numeric: take_rows(&self.numeric, self.rows, indices),
            embedded: take_rows(&self.embedded, self.rows, indices),
            offer: take_rows(&self.offer, self.rows, indices),
            context: take_rows(&self.context, self.rows, indices),
        }
    }
}

impl Targets {
    /// The rows at `indices`, in that order.
    pub fn take(&self, indices: &[usize]) -> Targets {
        let rows = self.converted.len();
        Targets {
            converted: take_rows(&self.converted, rows, indices),
            plan: take_rows(&self.plan, rows, indices),
            weight: take_rows(&self.weight, rows, indices),
            propensity: take_rows(&self.propensity, rows, indices),
            value: take_rows(&self.value, rows, indices),
        }
    }
}

/// Gathers whole rows of a row-major array with `rows` rows.
fn take_rows<T: Copy>(values: &[T], rows: usize, indices: &[usize]) -> Vec<T> {
    if values.is_empty() || rows == 0 {
        return Vec::new();
    }
    let width = values.len() / rows;
    let mut out = Vec::with_capacity(indices.len() * width);
    for &i in indices {
        out.extend_from_slice(&values[i * width..(i + 1) * width]);
    }
    out
}

/// [`Targets::plan`] of a row without a known purchase.
pub const NO_PLAN: i32 = -1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_keeps_frequent_values_in_count_then_name_order() {
        let counts = [("b", 3), ("a", 3), ("c", 7), ("rare", 1)].map(|(t, n)| (t.to_string(), n));
        let vocab = Vocabulary::from_counts("col".into(), counts, 2, 0);
        assert_eq!(vocab.tokens(), ["c", "a", "b"]);
        assert_eq!(vocab.size(), 5);
        assert_eq!(vocab.index(Some("c")), 2);
        assert_eq!(vocab.index(Some("a")), 3);
        assert_eq!(vocab.index(Some("b")), 4);
        assert_eq!(vocab.index(Some("rare")), OOV);
        assert_eq!(vocab.index(Some("never seen")), OOV);
        assert_eq!(vocab.index(None), MISSING);
    }

    #[test]
    fn vocabulary_is_capped_at_max_vocab() {
        let counts = [("x", 5), ("y", 4), ("z", 3)].map(|(t, n)| (t.to_string(), n));
        let vocab = Vocabulary::from_counts("col".into(), counts, 1, 2);
        assert_eq!(vocab.tokens(), ["x", "y"]);
        assert_eq!(vocab.index(Some("z")), OOV);
    }

    #[test]
    fn hashing_is_stable_and_in_range() {
        let hashed = HashedFeature {
            column: "region".into(),
            buckets: 16,
        };
        // xxh3_64("abc") = 0x78af5f94892f3950 (the reference implementation's
        // test vector); 0x78af5f94892f3950 % 16 = 0.
        assert_eq!(xxh3_64(b"abc"), 0x78af_5f94_892f_3950);
        assert_eq!(hashed.index(Some("abc")), 1);
        assert_eq!(hashed.index(None), 0);
        for v in ["a", "bb", "region-4711", ""] {
            let i = hashed.index(Some(v));
            assert!((1..=16).contains(&i), "{v} -> {i}");
        }
        assert_eq!(hashed.size(), 17);
    }

    #[test]
    fn numeric_standardises_and_flags_nulls() {
        let f = NumericFeature {
            column: "x".into(),
            log1p: false,
            mean: 2.0,
            std: 4.0,
            bins: Vec::new(),
        };
        assert_eq!(f.apply(Some(10.0)), (2.0, 0.0));
        assert_eq!(f.apply(None), (0.0, 1.0));
        let g = NumericFeature {
            log1p: true,
            mean: 0.0,
            std: 1.0,
            ..f
        };
        let (v, _) = g.apply(Some(std::f64::consts::E - 1.0));
        assert!((v - 1.0).abs() < 1e-6);
        let (v, _) = g.apply(Some(-(std::f64::consts::E - 1.0)));
        assert!((v + 1.0).abs() < 1e-6);
    }

    #[test]
    fn quantile_edges_give_a_bin_per_step_of_a_discrete_column() {
        // Household sizes: a few distinct values, one of them common.
        let mut sample: Vec<f64> = [1.0; 30]
            .into_iter()
            .chain([2.0; 40])
            .chain([3.0; 20])
            .chain([5.0; 10])
            .collect();
        assert_eq!(quantile_edges(&mut sample, 16), [1.0, 2.0, 3.0, 5.0]);
        let mut constant = vec![7.0; 100];
        assert!(quantile_edges(&mut constant, 16).is_empty());
        let mut uniform: Vec<f64> = (0..=1000).rev().map(f64::from).collect();
        assert_eq!(
            quantile_edges(&mut uniform, 4),
            [0.0, 250.0, 500.0, 750.0, 1000.0]
        );
    }

    #[test]
    fn bins_encode_each_value_distinctly_and_saturate() {
        let f = NumericFeature {
            column: "household".into(),
            log1p: false,
            mean: 2.0,
            std: 1.0,
            bins: vec![1.0, 2.0, 3.0, 5.0],
        };
        let encode = |x| {
            let mut out = [9.0; 3];
            f.encode_bins(x, &mut out);
            out
        };
        assert_eq!(encode(Some(1.0)), [0.0, 0.0, 0.0]);
        assert_eq!(encode(Some(2.0)), [1.0, 0.0, 0.0]);
        assert_eq!(encode(Some(4.0)), [1.0, 1.0, 0.5]);
        // Outside the training range the encoding saturates.
        assert_eq!(encode(Some(-3.0)), [0.0, 0.0, 0.0]);
        assert_eq!(encode(Some(40.0)), [1.0, 1.0, 1.0]);
        assert_eq!(encode(None), [0.0, 0.0, 0.0]);
    }

    #[test]
    fn numeric_inputs_are_values_then_flags_then_bins() {
        let pre = Preprocessor {
            numeric: vec![
                NumericFeature {
                    column: "a".into(),
                    log1p: false,
                    mean: 0.0,
                    std: 1.0,
                    bins: vec![0.0, 1.0, 2.0],
                },
                NumericFeature {
                    column: "b".into(),
                    log1p: false,
                    mean: 0.0,
                    std: 2.0,
                    bins: Vec::new(),
                },
            ],
            categorical: Vec::new(),
            hashed: Vec::new(),
            offer: None,
            no_offer: None,
            context: Vec::new(),
            plan: None,
            products: Vec::new(),
            reference: None,
        };
        assert_eq!(pre.numeric_width(), 6);
        let features = pre
            .transform(2, |row, column| match (row, column) {
                (0, "a") => Value::Number(1.5),
                (0, "b") => Value::Number(4.0),
                _ => Value::Null,
            })
            .unwrap();
        assert_eq!(
            features.numeric,
            [1.5, 2.0, 0.0, 0.0, 1.0, 0.5, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn preprocessor_round_trips_through_json() {
        let pre = Preprocessor {
            numeric: vec![NumericFeature {
                column: "x".into(),
                log1p: true,
                mean: 0.5,
                std: 2.0,
                bins: vec![0.0, 1.5, 4.0],
            }],
            categorical: vec![Vocabulary::new("c".into(), vec!["u".into(), "v".into()])],
            hashed: vec![HashedFeature {
                column: "h".into(),
                buckets: 8,
            }],
            offer: Some("offer".into()),
            no_offer: Some("none".into()),
            context: vec![Vocabulary::new("surface".into(), vec!["push".into()])],
            plan: Some("plan".into()),
            products: vec![Product {
                name: "duo".into(),
                value: 16.99,
            }],
            reference: Some(Reference {
                numeric: vec![NumericReference {
                    edges: vec![0.5, 1.0],
                    shares: vec![0.3, 0.3, 0.3, 0.1],
                }],
                categorical: vec![vec![0.1, 0.1, 0.5, 0.3]],
            }),
        };
        let json = serde_json::to_string(&pre).unwrap();
        let back: Preprocessor = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pre);
        // The lookup table is rebuilt on load, not just the token list.
        assert_eq!(back.categorical[0].index(Some("v")), 3);
        assert_eq!(back.context[0].index(Some("push")), 2);
    }

    #[test]
    fn population_stability_index_is_zero_for_the_same_spread_and_grows_with_a_shift() {
        let expected = [0.25, 0.25, 0.25, 0.25];
        assert_eq!(population_stability_index(&expected, &[0, 0, 0, 0]), None);
        let same = population_stability_index(&expected, &[100, 100, 100, 100]).unwrap();
        assert!(same.abs() < 1e-12);
        // Half the rows moved from the first bin to the last: PSI by hand
        // is 2 * 0.125 * ln(0.375 / 0.125)... for each moved bin.
        let moved = population_stability_index(&expected, &[50, 100, 100, 150]).unwrap();
        let by_hand =
            (0.125f64 - 0.25) * (0.125f64 / 0.25).ln() + (0.375f64 - 0.25) * (0.375f64 / 0.25).ln();
        assert!((moved - by_hand).abs() < 1e-12, "{moved} vs {by_hand}");
        // Everything in a bin the training rows never reached is a large,
        // finite shift.
        let empty = population_stability_index(&[0.5, 0.5, 0.0], &[0, 0, 10]).unwrap();
        assert!(empty > 5.0 && empty.is_finite());
        let reference = NumericReference {
            edges: vec![1.0, 2.0],
            shares: vec![0.4, 0.3, 0.2, 0.1],
        };
        assert_eq!(
            [Some(0.5), Some(1.0), Some(1.5), Some(9.0), None].map(|x| reference.bin(x)),
            [0, 1, 1, 2, 3]
        );
    }
}
