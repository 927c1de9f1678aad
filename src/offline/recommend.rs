//! Batch recommendations: read users from files, score every candidate,
//! decide with the policy, and write one decision per input row.
//!
//! `--shard I/N` splits the input into units of `unit_rows` consecutive
//! rows of a file (files in sorted order) and takes every unit whose index is
//! I modulo N, so N copies cover every row exactly once, each reading only
//! its own row ranges (Parquet reads just the row groups it needs).

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use super::score;
use crate::config::Exploration;
use crate::config::PolicyConfig;
use crate::data::shard::{Shard, Unit, read_unit, shard_units};
use crate::data::{DataError, source};
use crate::policy::{Decision, Policy};
use crate::scoring::Scorer;
use crate::{Error, Result};

/// How [`recommend_files`] decides and which rows it takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecommendOptions {
    pub exploration: Exploration,
    /// Seeds every row's draw together with its id.
    pub seed: u64,
    pub shard: Shard,
    /// Rows per shard unit and per decision batch.
    pub unit_rows: usize,
    /// Candidates listed per decision, best first; the choice is made over
    /// all of them either way.
    pub top_k: usize,
}

/// Where decisions are also logged as exposure rows, in the format that
/// `train`, `eval` and `ope` read once the outcome columns are joined: the
/// row's feature columns, the chosen offer and context under the config's
/// column names, the propensity, the decision time, the model version and,
/// with a holdout, whether the user was held out. A "no offer" decision's
/// offer is the model's `columns.no_offer` value, so that it trains the
/// no-offer arm when read back, and null for a model without one. A shard
/// without rows writes no exposure file.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposureLog {
    pub path: PathBuf,
    /// The propensity column (`columns.propensity`, else `propensity`).
    pub propensity: String,
    /// The time column (`columns.time`, else `exposure_time`).
    pub time: String,
    pub model_version: String,
}

/// What [`recommend_files`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecommendReport {
    pub rows: usize,
    pub units: usize,
    pub seconds: f64,
    pub rows_per_sec: f64,
    pub output: PathBuf,
    /// With `policy.contact_budget`: the largest contact price (shadow
    /// price on every contact) of any batch, the threshold to add to
    /// `contact_cost` to decide the same way one user at a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_price: Option<f64>,
}

/// Reads users unit by unit and decides for them with a checkpoint's
/// policy: what `recommend` and `eval --truth` share.
pub struct Decider<'a> {
    scorer: &'a Scorer,
    policy: Policy,
    exploration: Exploration,
    /// The columns read: features (not the offer), the eligibility rules'
    /// columns, and the id when every file has it.
    columns: Vec<String>,
    id_column: Option<String>,
    /// The largest contact price of the batches decided so far.
    contact_price: std::cell::Cell<f64>,
}

impl<'a> Decider<'a> {
    /// Checks that every file has the columns the decisions need.
    pub fn new(
        scorer: &'a Scorer,
        policy_config: PolicyConfig,
        exploration: Exploration,
        seed: u64,
        files: &[PathBuf],
    ) -> Result<Decider<'a>> {
        let policy = scorer.policy(policy_config, seed);
        let mut columns: Vec<String> = scorer
            .decision_columns()
            .into_iter()
            .map(str::to_string)
            .collect();
        for column in policy.config().rule_columns() {
            if !columns.iter().any(|c| c == column) {
                columns.push(column.to_string());
            }
        }
        let mut id_column = scorer.manifest().id_column.clone();
        for file in files {
            let schema = source::schema(file)?;
            // The id is carried when every file has it.
            if id_column
                .as_ref()
                .is_some_and(|id| schema.get(id).is_none())
            {
                id_column = None;
            }
            for name in &columns {
                if schema.get(name).is_none() {
                    return Err(DataError::MissingColumn {
                        path: file.clone(),
                        column: name.clone(),
                        role: "feature or policy.exclude",
                        available: format!("{} columns", schema.len()),
                    }
                    .into());
                }
            }
            // Text in a numeric column is refused, as by eval, not read as null.
            for feature in &scorer.manifest().preprocessor.numeric {
                if let Some(dtype) = schema.get(&feature.column) {
                    crate::data::check_type(
                        file,
                        &feature.column,
                        crate::config::ColumnRole::Numeric,
                        dtype,
                    )?;
                }
            }
        }
        columns.extend(id_column.clone());
        Ok(Decider {
            scorer,
            policy,
            exploration,
            columns,
            id_column,
            contact_price: std::cell::Cell::new(0.0),
        })
    }

    /// Decisions list their best `top_k` candidates only (see
    /// [`Policy::listing`]).
    pub fn listing(mut self, top_k: usize) -> Decider<'a> {
        self.policy = self.policy.listing(top_k);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The largest contact price of the batches decided so far (0 without
    /// a contact budget).
    pub fn contact_price(&self) -> f64 {
        self.contact_price.get()
    }

    /// Whether the decisions carry the input's ids.
    pub fn with_id(&self) -> bool {
        self.id_column.is_some()
    }

    /// Decides for the rows of `unit`: each row's id (or, without ids, its
    /// file and position, which also seeds its draw) and decision.
    pub fn decide(&self, unit: &Unit) -> Result<(Vec<Option<String>>, Vec<Decision>)> {
        let (ids, decisions, _) = self.decide_rows(unit)?;
        Ok((ids, decisions))
    }

    /// [`decide`](Self::decide), with the rows read (features, the columns
    /// the rules read, the id; context columns null).
    pub fn decide_rows(
        &self,
        unit: &Unit,
    ) -> Result<(Vec<Option<String>>, Vec<Decision>, DataFrame)> {
        let (file, offset, _) = unit;
        let polars = |source| {
            Error::from(DataError::Polars {
                path: file.clone(),
                source,
            })
        };
        let columns: Vec<&str> = self.columns.iter().map(String::as_str).collect();
        let mut batch = read_unit(unit, &columns)?;
        let pre = &self.scorer.manifest().preprocessor;
        // Context columns as null: every context is scored, whatever the row says.
        for vocabulary in &pre.context {
            let nulls = Column::full_null(
                vocabulary.column().into(),
                batch.height(),
                &DataType::String,
            );
            batch.with_column(nulls).map_err(polars)?;
        }
        let features = score::input_features(file, pre, &batch, *offset)?;
        let user_scores = self.scorer.user_scores(&features).map_err(Error::from)?;
        let ids: Vec<Option<String>> = match &self.id_column {
            Some(id) => {
                let ids = batch
                    .column(id)
                    .and_then(|c| c.cast(&DataType::String))
                    .map_err(polars)?;
                ids.str()
                    .map_err(polars)?
                    .iter()
                    .map(|v| v.map(str::to_string))
                    .collect()
            }
            None => (0..batch.height())
                .map(|r| Some(format!("{}#{}", file.display(), offset + r)))
                .collect(),
        };
        let texts: Vec<(String, StringChunked)> = self
            .policy
            .config()
            .exclude
            .iter()
            .map(|rule| {
                let values = batch
                    .column(&rule.column)
                    .and_then(|c| c.cast(&DataType::String))?;
                Ok((rule.column.clone(), values.str()?.clone()))
            })
            .collect::<PolarsResult<_>>()
            .map_err(polars)?;
        let value = |row: usize, column: &str| -> Option<String> {
            texts
                .iter()
                .find(|(c, _)| c == column)
                .and_then(|(_, values)| values.get(row).map(str::to_string))
        };
        let (decisions, prices) =
            self.policy
                .decide_priced(self.exploration, &user_scores, &ids, &value);
        let contact = prices.last().copied().unwrap_or(0.0);
        self.contact_price
            .set(self.contact_price.get().max(contact));
        Ok((ids, decisions, batch))
    }
}

/// Decides for this shard's rows of `input` and writes the decisions to the
/// shard's output path (Parquet or CSV), atomically: `id`, `offer`, one
/// column per context column, `propensity`, `expected_value`, and
/// `candidates` (JSON: the best `top_k` eligible candidates, best first,
/// each with its expected value, P(convert) and probability).
pub fn recommend_files(
    scorer: &Scorer,
    policy_config: PolicyConfig,
    options: &RecommendOptions,
    input: &Path,
    output: &Path,
    exposures: Option<&ExposureLog>,
) -> Result<RecommendReport> {
    let RecommendOptions {
        exploration,
        seed,
        shard,
        unit_rows,
        top_k,
    } = *options;
    let unit_rows = unit_rows.max(1);
    let started = std::time::Instant::now();
    let output = shard.output_path(output);
    let format = source::Format::of(&output).ok_or_else(|| {
        Error::from(DataError::UnsupportedFormat {
            path: output.clone(),
        })
    })?;
    let files = source::resolve(input)?;
    let decider = Decider::new(scorer, policy_config, exploration, seed, &files)?.listing(top_k);
    let mine = shard_units(&files, unit_rows, shard)?;
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".upsell-recommend-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let mut writer = score::Writer::new(format);
    let mut rows = 0;
    let pre = &scorer.manifest().preprocessor;
    let with_holdout = decider.policy().config().holdout > 0.0;
    let mut log = exposures
        .map(|log| -> Result<_> {
            let path = shard.output_path(&log.path);
            let format = source::Format::of(&path)
                .ok_or_else(|| Error::from(DataError::UnsupportedFormat { path: path.clone() }))?;
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let staging = tempfile::Builder::new()
                .prefix(".upsell-exposures-")
                .tempfile_in(&dir)
                .map_err(|e| Error::io(&dir, e))?;
            Ok((log, path, staging, score::Writer::new(format)))
        })
        .transpose()?;
    let mut progress = crate::data::progress::Progress::new("recommend");
    for unit in &mine {
        let (ids, decisions, batch) = decider.decide_rows(unit)?;
        progress.add(decisions.len());
        if let Some((log, path, staging, writer)) = &mut log {
            let frame =
                exposure_frame(batch, &decisions, pre, log, with_holdout).map_err(|source| {
                    DataError::Polars {
                        path: unit.0.clone(),
                        source,
                    }
                })?;
            writer.write(staging, &frame, path)?;
        }
        let frame = decisions_frame(
            &decisions,
            decider.with_id().then_some(&ids),
            pre,
            with_holdout,
        )
        .map_err(|source| DataError::Polars {
            path: unit.0.clone(),
            source,
        })?;
        writer.write(&staging, &frame, &output)?;
        rows += decisions.len();
    }
    progress.finish();
    if rows == 0 {
        // An empty shard still writes an empty output, so a job's N outputs
        // always exist; its schema comes from an empty decision frame.
        let frame = decisions_frame(
            &[],
            decider.with_id().then_some(&Vec::new()),
            pre,
            with_holdout,
        )
        .map_err(|source| DataError::Polars {
            path: output.clone(),
            source,
        })?;
        writer.write(&staging, &frame, &output)?;
    }
    writer.finish(&output)?;
    // An empty shard logs nothing: its exposure file is not written.
    if let Some((_, path, staging, writer)) = log
        && rows > 0
    {
        writer.finish(&path)?;
        score::persist(staging, &path)?;
    }
    score::persist(staging, &output)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(RecommendReport {
        rows,
        units: mine.len(),
        seconds,
        rows_per_sec: rows as f64 / seconds,
        output,
        contact_price: decider
            .policy()
            .config()
            .contact_budget
            .map(|_| decider.contact_price()),
    })
}

fn decisions_frame(
    decisions: &[crate::policy::Decision],
    ids: Option<&Vec<Option<String>>>,
    pre: &crate::preprocess::Preprocessor,
    with_holdout: bool,
) -> PolarsResult<DataFrame> {
    let mut columns = Vec::new();
    if let Some(ids) = ids {
        columns.push(Column::new("id".into(), ids.clone()));
    }
    let offers: Vec<Option<String>> = decisions.iter().map(|d| d.offer.clone()).collect();
    columns.push(Column::new("offer".into(), offers));
    for vocab in &pre.context {
        columns.push(context_column(decisions, vocab.column()));
    }
    let propensity: Vec<f64> = decisions.iter().map(|d| d.propensity).collect();
    columns.push(Column::new("propensity".into(), propensity));
    let value: Vec<f64> = decisions.iter().map(|d| d.expected_value).collect();
    columns.push(Column::new("expected_value".into(), value));
    let candidates: Vec<String> = decisions
        .iter()
        .map(|d| serde_json::to_string(&d.candidates).expect("candidates serialise"))
        .collect();
    columns.push(Column::new("candidates".into(), candidates));
    if with_holdout {
        let holdout: Vec<bool> = decisions.iter().map(|d| d.holdout).collect();
        columns.push(Column::new("holdout".into(), holdout));
    }
    DataFrame::new(decisions.len(), columns)
}

/// The exposure rows of a batch of decisions (see [`ExposureLog`]).
fn exposure_frame(
    mut rows: DataFrame,
    decisions: &[Decision],
    pre: &crate::preprocess::Preprocessor,
    log: &ExposureLog,
    with_holdout: bool,
) -> PolarsResult<DataFrame> {
    let height = rows.height();
    if let Some(offer) = &pre.offer {
        let offers: Vec<Option<String>> = decisions
            .iter()
            .map(|d| d.offer.clone().or_else(|| pre.no_offer.clone()))
            .collect();
        rows.with_column(Column::new(offer.as_str().into(), offers))?;
    }
    for vocabulary in &pre.context {
        rows.with_column(context_column(decisions, vocabulary.column()))?;
    }
    let propensity: Vec<f64> = decisions.iter().map(|d| d.propensity).collect();
    rows.with_column(Column::new(log.propensity.as_str().into(), propensity))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let time = Column::new(log.time.as_str().into(), vec![now; height])
        .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))?;
    rows.with_column(time)?;
    rows.with_column(Column::new(
        "model_version".into(),
        vec![log.model_version.as_str(); height],
    ))?;
    if with_holdout {
        let holdout: Vec<bool> = decisions.iter().map(|d| d.holdout).collect();
        rows.with_column(Column::new("holdout".into(), holdout))?;
    }
    Ok(rows)
}

/// The chosen value of one context column, per decision (null for no offer).
fn context_column(decisions: &[Decision], column: &str) -> Column {
    let values: Vec<Option<String>> = decisions
        .iter()
        .map(|d| {
            d.context
                .iter()
                .find(|(c, _)| c == column)
                .map(|(_, v)| v.clone())
        })
        .collect();
    Column::new(column.into(), values)
}
