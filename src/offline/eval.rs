//! `upsell eval`: a checkpoint's metrics on labelled data, streamed in
//! batches so that memory does not grow with the number of rows, and the
//! report (plots and tables) built from them.
//!
//! Memory is fixed by the accumulators: about 1.5 MiB for the overall and
//! for each product's conversion metrics (a 65,536-bin histogram, see
//! [`BinaryMetrics`]), 24 KiB per segment (a 1,024-bin histogram, whose
//! looser AUC bound is reported) for at most [`MAX_SEGMENTS`] segments, and
//! two streamed batches of rows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use crate::config::Config;
use crate::data::{DataError, shard, source};
use crate::evaluation::metrics::{
    BinaryMetrics, BinarySummary, Binning, ECE_BINS, PlanMetrics, PlanSummary,
};
use crate::evaluation::report::{Confusion, Curve, ReliabilityBin, ReportInput, ReportTable};
use crate::scoring::Scorer;
use crate::{Error, Result};

/// Distinct values of the `--by` column tracked one by one; rows with
/// further values are pooled as [`OTHER_SEGMENT`].
pub const MAX_SEGMENTS: usize = 1000;
/// The segment of rows beyond [`MAX_SEGMENTS`] distinct values.
pub const OTHER_SEGMENT: &str = "(other)";
/// The segment of rows whose `--by` value is null.
pub const NULL_SEGMENT: &str = "(null)";
/// Histogram bins of each segment's conversion metrics.
const SEGMENT_BINS: usize = 1024;
/// Points per plotted curve.
const CURVE_POINTS: usize = 200;

/// The metrics of one product, over the rows where it was offered.
#[derive(Debug, Clone, Serialize)]
pub struct ProductMetrics {
    pub product: String,
    pub conversion: BinarySummary,
}

/// The metrics of one value of the `--by` column.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentMetrics {
    pub value: String,
    pub conversion: BinarySummary,
    pub plan: Option<PlanSummary>,
}

/// What `upsell eval` prints and writes as `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSummary {
    pub checkpoint: PathBuf,
    pub data: PathBuf,
    pub files: usize,
    /// Rows read, and rows left out as unusable (within
    /// `data.max_invalid_fraction` per batch).
    pub rows_read: usize,
    pub rows_used: usize,
    /// The calibration applied to the scores (`none` for checkpoints
    /// without one).
    pub calibration: String,
    pub conversion: BinarySummary,
    pub per_product: Vec<ProductMetrics>,
    pub plan: Option<PlanSummary>,
    /// The `--by` column, if given.
    pub segment_column: Option<String>,
    pub segments: Vec<SegmentMetrics>,
    /// The greedy policy's decisions against ground truth (`--truth`).
    pub decisions: Option<super::truth::DecisionQuality>,
    /// With a model that has a no-offer arm: how it ranks users by uplift,
    /// each product's rows against the holdout's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplift: Option<super::uplift::UpliftSummary>,
    pub seconds: f64,
    pub rows_per_sec: f64,
}

/// The streaming state of an evaluation.
struct Accumulators {
    conversion: BinaryMetrics,
    per_product: Vec<BinaryMetrics>,
    plan: PlanMetrics,
    segments: HashMap<String, (BinaryMetrics, PlanMetrics)>,
    /// Rows for the uplift metrics, with a no-offer arm.
    uplift: Option<super::uplift::UpliftRows>,
}

/// What [`evaluate`] returns: the summary and what the report draws.
pub struct Evaluation {
    pub summary: EvalSummary,
    state: Accumulators,
    products: Vec<String>,
}

/// The config to read labelled rows with: the checkpoint's own columns,
/// without the roles evaluation does not need, plus the `--by` column.
fn eval_config(scorer: &Scorer, by: Option<&str>, files: &[PathBuf]) -> Result<Config> {
    let mut config = scorer.manifest().saved_config(&[])?;
    let columns = &mut config.columns;
    // The uplift metrics weigh rows by their propensity and rank by value,
    // where every file has them.
    let keep = |column: &Option<String>| -> Result<bool> {
        let Some(column) = column else {
            return Ok(false);
        };
        if scorer.no_offer_index().is_none() {
            return Ok(false);
        }
        for file in files {
            if source::schema(file)?.get(column).is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    };
    if !keep(&columns.propensity)? {
        columns.propensity = None;
    }
    if !keep(&columns.value)? {
        columns.value = None;
    }
    columns.time = None;
    columns.id = None;
    if let Some(by) = by
        && !columns.roles().iter().any(|(c, _)| *c == by)
    {
        columns.categorical.push(by.to_string());
    }
    Ok(config)
}

/// Evaluates `scorer` on every labelled row `data` names (a file, directory
/// or glob of Parquet/CSV), with per-segment metrics by `by`.
pub fn evaluate(
    scorer: &Scorer,
    checkpoint: &Path,
    data: &Path,
    by: Option<&str>,
) -> Result<Evaluation> {
    let started = std::time::Instant::now();
    let files = source::resolve(data)?;
    let config = eval_config(scorer, by, &files)?;
    let pre = &scorer.manifest().preprocessor;
    let products = scorer.offer_names();
    for file in &files {
        let schema = source::schema(file)?;
        crate::data::check_schema(file, &schema, &config).map_err(|e| match e {
            DataError::MissingColumn {
                path,
                column,
                available,
                ..
            } if Some(column.as_str()) == by => DataError::MissingColumn {
                path,
                column,
                role: "categorical (--by)",
                available,
            },
            e => e,
        })?;
    }
    let mut state = Accumulators::new(scorer, products.len());
    let names: Vec<&str> = config.columns.roles().iter().map(|(c, _)| *c).collect();
    let (mut rows_read, mut rows_used) = (0, 0);
    let mut progress = crate::data::progress::Progress::new("eval");
    for file in &files {
        shard::for_each_batch(file, &names, shard::BATCH_ROWS, |frame| {
            rows_read += frame.height();
            progress.add(frame.height());
            let table = crate::data::from_frame(file, frame, &config)?;
            let batch = crate::data::transform(pre, &config.columns, &table)?;
            rows_used += batch.features.rows;
            let segment_values = match by {
                None => None,
                Some(by) => Some(segment_values(file, &table.frame, by)?),
            };
            state.update(scorer, &batch, segment_values.as_deref());
            Ok(())
        })?;
    }
    progress.finish();
    Ok(state.into_evaluation(
        products,
        scorer,
        checkpoint,
        data,
        files.len(),
        by,
        started,
        (rows_read, rows_used),
    ))
}

/// The `--by` column of a canonical frame as text, nulls named.
fn segment_values(file: &Path, frame: &DataFrame, by: &str) -> Result<Vec<String>> {
    let values = frame
        .column(by)
        .and_then(|c| c.cast(&DataType::String))
        .map_err(|source| DataError::Polars {
            path: file.to_path_buf(),
            source,
        })?;
    let values = values.str().map_err(|source| DataError::Polars {
        path: file.to_path_buf(),
        source,
    })?;
    Ok(values
        .iter()
        .map(|v| v.unwrap_or(NULL_SEGMENT).to_string())
        .collect())
}

/// Evaluates `scorer` on rows already in memory (the validation split at
/// the end of training); `data` names them in the summary.
pub fn evaluate_batch(
    scorer: &Scorer,
    checkpoint: &Path,
    data: &Path,
    batch: &crate::data::Batch,
) -> Evaluation {
    let started = std::time::Instant::now();
    let products = scorer.offer_names();
    let mut state = Accumulators::new(scorer, products.len());
    state.update(scorer, batch, None);
    let rows = batch.features.rows;
    state.into_evaluation(
        products,
        scorer,
        checkpoint,
        data,
        0,
        None,
        started,
        (rows, rows),
    )
}

impl Accumulators {
    fn new(scorer: &Scorer, products: usize) -> Accumulators {
        Accumulators {
            uplift: scorer
                .no_offer_index()
                .map(|_| super::uplift::UpliftRows::default()),
            conversion: BinaryMetrics::new(),
            per_product: (0..products).map(|_| BinaryMetrics::new()).collect(),
            plan: PlanMetrics::new(),
            segments: HashMap::new(),
        }
    }

    fn update(&mut self, scorer: &Scorer, batch: &crate::data::Batch, segments: Option<&[String]>) {
        let (p_offer, p_plan) = scorer.score_offered(&batch.features);
        let targets = &batch.targets;
        let weights = Some(targets.weight.as_slice());
        self.conversion
            .update(&p_offer, &targets.converted, weights);
        let classes = scorer.manifest().network.products;
        for (row, &offer) in batch.features.offer.iter().enumerate() {
            if let Some(m) = self.per_product.get_mut(offer as usize) {
                m.add(p_offer[row], targets.converted[row], targets.weight[row]);
            }
        }
        if !p_plan.is_empty() {
            self.plan.update(&p_plan, classes, &targets.plan, weights);
        }
        // A model with a no-offer arm has offers and products, so it always
        // has candidates to score.
        if let Some(uplift) = &mut self.uplift
            && let Ok(scores) = scorer.user_scores(&batch.features)
        {
            let logged = super::uplift::Logged {
                offer: &batch.features.offer,
                converted: &targets.converted,
                value: &targets.value,
                weight: &targets.weight,
                propensity: &targets.propensity,
            };
            uplift.add(&logged, &scores);
        }
        let Some(segments) = segments else { return };
        for (row, value) in segments.iter().enumerate() {
            let key = if self.segments.contains_key(value) || self.segments.len() < MAX_SEGMENTS {
                value.as_str()
            } else {
                OTHER_SEGMENT
            };
            let (conversion, plan) = self
                .segments
                .entry(key.to_string())
                .or_insert_with(|| (BinaryMetrics::with_bins(SEGMENT_BINS), PlanMetrics::new()));
            let w = targets.weight[row];
            conversion.add(p_offer[row], targets.converted[row], w);
            if !p_plan.is_empty() {
                plan.add(
                    &p_plan[row * classes..(row + 1) * classes],
                    targets.plan[row],
                    w,
                );
            }
        }
    }

    /// The finished evaluation: the summary, with the state the report's
    /// plots are drawn from.
    #[allow(clippy::too_many_arguments)]
    fn into_evaluation(
        self,
        products: Vec<String>,
        scorer: &Scorer,
        checkpoint: &Path,
        data: &Path,
        files: usize,
        by: Option<&str>,
        started: std::time::Instant,
        (rows_read, rows_used): (usize, usize),
    ) -> Evaluation {
        let seconds = started.elapsed().as_secs_f64();
        let has_plan = scorer.manifest().network.products > 0;
        let mut segments: Vec<SegmentMetrics> = self
            .segments
            .iter()
            .map(|(value, (conversion, plan))| SegmentMetrics {
                value: value.clone(),
                conversion: conversion.finish(),
                plan: has_plan.then(|| plan.finish()),
            })
            .collect();
        // Largest segments first; the name breaks ties for a stable order.
        segments.sort_by(|a, b| {
            b.conversion
                .rows
                .cmp(&a.conversion.rows)
                .then_with(|| a.value.cmp(&b.value))
        });
        let calibration = scorer
            .manifest()
            .calibration
            .as_ref()
            .map_or("none".to_string(), |c| {
                serde_json::to_value(c.method)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            });
        let summary = EvalSummary {
            checkpoint: checkpoint.to_path_buf(),
            data: data.to_path_buf(),
            files,
            rows_read,
            rows_used,
            calibration,
            conversion: self.conversion.finish(),
            per_product: products
                .iter()
                .zip(&self.per_product)
                .filter(|(_, m)| m.rows() > 0)
                .map(|(product, m)| ProductMetrics {
                    product: product.clone(),
                    conversion: m.finish(),
                })
                .collect(),
            plan: has_plan.then(|| self.plan.finish()),
            segment_column: by.map(str::to_string),
            segments,
            decisions: None,
            uplift: self
                .uplift
                .as_ref()
                .map(|u| u.finish(&scorer.product_names())),
            seconds,
            rows_per_sec: rows_used as f64 / seconds.max(1e-9),
        };
        Evaluation {
            summary,
            state: self,
            products,
        }
    }
}

fn fmt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

/// The bins of a reliability diagram (equal weight per bin).
fn reliability(m: &BinaryMetrics) -> Vec<ReliabilityBin> {
    m.reliability(Binning::EqualCount, ECE_BINS)
}

impl Evaluation {
    /// The report's content: plots from the accumulators, tables from the
    /// summary.
    pub fn report_input(&self, about: Vec<(String, String)>) -> ReportInput {
        let s = &self.summary;
        let c = &s.conversion;
        let mut headline = vec![
            ("rows".to_string(), s.rows_used.to_string()),
            ("conversion AUC".to_string(), fmt(c.auc, 4)),
            ("conversion PR-AUC".to_string(), fmt(c.pr_auc, 4)),
            ("conversion log loss".to_string(), fmt(c.log_loss, 4)),
            ("Brier score".to_string(), fmt(c.brier, 5)),
            (format!("ECE ({ECE_BINS} equal-width bins)"), fmt(c.ece, 5)),
            (
                format!("ECE ({ECE_BINS} equal-count bins)"),
                fmt(c.ece_equal_count, 5),
            ),
            ("base rate".to_string(), fmt(c.base_rate, 4)),
            ("mean prediction".to_string(), fmt(c.mean_prediction, 4)),
            ("calibration".to_string(), s.calibration.clone()),
        ];
        if let Some(plan) = &s.plan {
            headline.extend([
                ("plan accuracy".to_string(), fmt(plan.accuracy, 4)),
                (
                    "plan top-2 accuracy".to_string(),
                    fmt(plan.top2_accuracy, 4),
                ),
                ("plan log loss".to_string(), fmt(plan.log_loss, 4)),
            ]);
        }
        // The products with rows, with their AUC from the summary, whose
        // `per_product` holds the same products in the same order.
        let named = self
            .products
            .iter()
            .zip(&self.state.per_product)
            .filter(|(_, m)| m.rows() > 0)
            .zip(&s.per_product)
            .map(|((p, m), summary)| (p, m, summary.conversion.auc));
        let mut reliability_all = vec![(
            "all products".to_string(),
            reliability(&self.state.conversion),
        )];
        reliability_all.extend(named.clone().map(|(p, m, _)| (p.clone(), reliability(m))));
        let curve = |label: &str, auc: Option<f64>, points: Vec<(f64, f64)>| Curve {
            label: format!("{label} (AUC {})", fmt(auc, 3)),
            points,
        };
        // The overall curve first, then one per product.
        let curves = |points: fn(&BinaryMetrics, usize) -> Vec<(f64, f64)>| {
            let overall = &self.state.conversion;
            std::iter::once(curve("all products", c.auc, points(overall, CURVE_POINTS)))
                .chain(
                    named
                        .clone()
                        .map(|(p, m, auc)| curve(p, auc, points(m, CURVE_POINTS))),
                )
                .collect::<Vec<Curve>>()
        };
        let mut roc = curves(BinaryMetrics::roc_curve);
        let mut gains = curves(BinaryMetrics::gains_curve);
        roc.retain(|c| !c.points.is_empty());
        gains.retain(|c| !c.points.is_empty());
        let confusion = s.plan.as_ref().map(|_| Confusion {
            labels: self.products.clone(),
            counts: self.state.plan.confusion(),
        });
        let binary_columns = [
            "rows",
            "base rate",
            "mean prediction",
            "AUC",
            "PR-AUC",
            "log loss",
            "Brier",
            "ECE (equal count)",
        ];
        let binary_cells = |m: &BinarySummary| {
            vec![
                m.rows.to_string(),
                fmt(m.base_rate, 4),
                fmt(m.mean_prediction, 4),
                fmt(m.auc, 4),
                fmt(m.pr_auc, 4),
                fmt(m.log_loss, 4),
                fmt(m.brier, 5),
                fmt(m.ece_equal_count, 5),
            ]
        };
        let mut tables = vec![ReportTable {
            title: "Conversion by offered product".to_string(),
            columns: std::iter::once("product")
                .chain(binary_columns)
                .map(str::to_string)
                .collect(),
            rows: s
                .per_product
                .iter()
                .map(|p| {
                    let mut row = vec![p.product.clone()];
                    row.extend(binary_cells(&p.conversion));
                    row
                })
                .collect(),
        }];
        if let Some(column) = &s.segment_column {
            let mut columns: Vec<String> = std::iter::once(column.as_str())
                .chain(binary_columns)
                .map(str::to_string)
                .collect();
            columns.push("AUC error bound".to_string());
            if s.plan.is_some() {
                columns.push("plan accuracy".to_string());
            }
            tables.push(ReportTable {
                title: format!("Segments by {column}"),
                columns,
                rows: s
                    .segments
                    .iter()
                    .map(|seg| {
                        let mut row = vec![seg.value.clone()];
                        row.extend(binary_cells(&seg.conversion));
                        row.push(fmt(seg.conversion.auc_error_bound, 4));
                        if let Some(plan) = &seg.plan {
                            row.push(fmt(plan.accuracy, 4));
                        }
                        row
                    })
                    .collect(),
            });
        }
        if let Some(uplift) = &s.uplift {
            tables.push(ReportTable {
                title: format!(
                    "Uplift against the no-offer holdout ({} rows{})",
                    uplift.holdout_rows,
                    if uplift.propensity_weighted {
                        ", weighted by 1 / propensity"
                    } else {
                        ""
                    }
                ),
                columns: [
                    "product",
                    "offered rows",
                    "Qini",
                    "uplift AUC",
                    "value Qini",
                    "top decile: predicted",
                    "top decile: observed",
                ]
                .map(str::to_string)
                .to_vec(),
                rows: uplift
                    .per_product
                    .iter()
                    .map(|p| {
                        let top = p.deciles.first();
                        vec![
                            p.product.clone(),
                            p.treated_rows.to_string(),
                            fmt(p.qini, 3),
                            fmt(p.uplift_auc, 3),
                            fmt(p.value_qini, 3),
                            fmt(top.map(|b| b.mean_predicted), 4),
                            fmt(top.and_then(|b| b.observed_uplift), 4),
                        ]
                    })
                    .collect(),
            });
        }
        ReportInput {
            title: "upsell evaluation".to_string(),
            about,
            headline,
            reliability: reliability_all,
            roc,
            gains,
            confusion,
            tables,
        }
    }
}

/// Writes the report and `metrics.json` into `dir`, which must not exist:
/// into a hidden sibling first, renamed into place, so a report is whole or
/// absent.
pub fn write_report(dir: &Path, input: &ReportInput, metrics_json: &[u8]) -> Result<Vec<PathBuf>> {
    let exists = || Error::AlreadyExists {
        path: dir.to_path_buf(),
    };
    let io = |path: &Path, source| Error::io(path, source);
    let written = crate::atomic::write_dir(dir, ".upsell-report-", io, exists, |staging| {
        let mut written = crate::evaluation::report::write_report(staging, input)?;
        let metrics = staging.join("metrics.json");
        std::fs::write(&metrics, metrics_json).map_err(|e| Error::io(&metrics, e))?;
        written.push(metrics);
        // Relative to the staging directory, which is renamed to `dir`.
        Ok(written
            .into_iter()
            .map(|p| p.strip_prefix(staging).unwrap_or(&p).to_path_buf())
            .collect::<Vec<PathBuf>>())
    })?;
    Ok(written.into_iter().map(|p| dir.join(p)).collect())
}
