//! What the caller hands the report: every number already computed.

use crate::evaluation::metrics::CalibrationBin as ReliabilityBin;
use serde::Serialize;

/// A named curve of (x, y) points, e.g. one product's ROC curve. `label` is
/// shown in the legend (e.g. "Premium Individual (AUC 0.812)").
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Curve {
    /// The legend entry.
    pub label: String,
    /// The points in drawing order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// A row-major square matrix of weights: `counts[target][predicted]`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Confusion {
    /// Class names, for both rows (actual) and columns (predicted).
    pub labels: Vec<String>,
    /// `counts[actual][predicted]`; missing, negative or non-finite entries
    /// count as 0.
    pub counts: Vec<Vec<f64>>,
}

/// A table shown in the report (per-product metrics, per-segment metrics).
/// Cells are preformatted strings.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ReportTable {
    /// Shown as the table's heading.
    pub title: String,
    /// Column headers.
    pub columns: Vec<String>,
    /// Rows of cells; short rows are padded with empty cells.
    pub rows: Vec<Vec<String>>,
}

/// Everything a report shows.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ReportInput {
    /// The report's title (first heading, HTML `<title>`).
    pub title: String,
    /// Key/value lines under the title: checkpoint path, data path, rows,
    /// machine, date...
    pub about: Vec<(String, String)>,
    /// The headline metrics: (name, formatted value), shown as a table.
    pub headline: Vec<(String, String)>,
    /// Reliability diagrams: ("all products", bins) first, then one per
    /// product. Empty bins (weight 0) may appear and are skipped.
    pub reliability: Vec<(String, Vec<ReliabilityBin>)>,
    /// ROC curves (false positive rate, true positive rate), overall first,
    /// then per product.
    pub roc: Vec<Curve>,
    /// Cumulative gains (share of population targeted, share of conversions
    /// captured), overall first, then per product.
    pub gains: Vec<Curve>,
    /// The plan-choice confusion matrix; None when the model has no plan
    /// head.
    pub confusion: Option<Confusion>,
    /// Further tables (per-product, per-segment), in order.
    pub tables: Vec<ReportTable>,
}

/// `counts[row][col]`, with anything missing or meaningless read as 0.
pub(super) fn confusion_count(confusion: &Confusion, row: usize, col: usize) -> f64 {
    let count = confusion
        .counts
        .get(row)
        .and_then(|r| r.get(col))
        .copied()
        .unwrap_or(0.0);
    if count.is_finite() && count > 0.0 {
        count
    } else {
        0.0
    }
}

/// Integral weights print as grouped integers ("12,345"); sample weights
/// keep one decimal.
pub(super) fn format_weight(weight: f64) -> String {
    let text = if weight.fract() == 0.0 && weight.abs() < 1e15 {
        format!("{weight:.0}")
    } else {
        format!("{weight:.1}")
    };
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, digits) = int.split_at(usize::from(int.starts_with('-')));
    let mut grouped = String::from(sign);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if !frac.is_empty() {
        grouped.push('.');
        grouped.push_str(frac);
    }
    grouped
}
