//! The report's content as a list of elements (headings, tables, figures),
//! which the Markdown and the HTML writers both render, so the two always
//! show the same thing.

use super::charts::{GAINS, ROC, confusion_svg, curves_svg, reliability_svg};
use super::input::{Confusion, ReportInput, confusion_count, format_weight};
use crate::error::ReportError;

/// One piece of the report, in reading order.
pub(super) enum Element<'a> {
    /// A second-level heading.
    Heading(String),
    /// Key/value lines.
    About(&'a [(String, String)]),
    /// A plot: written to `file` and shown with `caption` under it.
    Figure {
        file: &'static str,
        alt: &'static str,
        caption: &'static str,
        svg: String,
    },
    /// A table of preformatted cells.
    Table {
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
    },
}

pub(super) const RELIABILITY_CAPTION: &str = "Each point is a bin of rows with similar predictions, \
placed at their mean predicted probability (x) and observed conversion rate (y): points on \
the dashed diagonal are well calibrated, points above it are under-predicted, and a larger \
marker means a heavier bin.";

pub(super) const ROC_CAPTION: &str = "Each curve traces the true positive rate against the false \
positive rate as the score threshold is lowered: the further above the dashed chance \
diagonal, the better the model ranks buyers above non-buyers (AUC is the area under it).";

pub(super) const GAINS_CAPTION: &str = "Each curve shows the share of all conversions captured (y) \
when offering to the given share of the population with the highest scores (x); the dashed \
diagonal is random targeting.";

pub(super) const CONFUSION_CAPTION: &str = "Rows are the plan actually bought and columns the plan \
predicted; each cell shows its share of the row, so a dark diagonal means the plan head \
picks the right plan, and the table below gives the underlying counts.";

pub(super) fn elements(input: &ReportInput) -> Result<Vec<Element<'_>>, ReportError> {
    let mut blocks = Vec::new();
    if !input.about.is_empty() {
        blocks.push(Element::About(&input.about));
    }
    if !input.headline.is_empty() {
        blocks.push(Element::Heading("Headline metrics".into()));
        blocks.push(Element::Table {
            columns: vec!["Metric".into(), "Value".into()],
            rows: input
                .headline
                .iter()
                .map(|(name, value)| vec![name.clone(), value.clone()])
                .collect(),
        });
    }
    if let Some(svg) = reliability_svg(&input.reliability)? {
        blocks.push(Element::Heading("Calibration".into()));
        blocks.push(Element::Figure {
            file: "reliability.svg",
            alt: "Reliability diagram",
            caption: RELIABILITY_CAPTION,
            svg,
        });
    }
    if let Some(svg) = curves_svg(&ROC, &input.roc)? {
        blocks.push(Element::Heading("Ranking".into()));
        blocks.push(Element::Figure {
            file: "roc.svg",
            alt: "ROC curves",
            caption: ROC_CAPTION,
            svg,
        });
    }
    if let Some(svg) = curves_svg(&GAINS, &input.gains)? {
        blocks.push(Element::Heading("Cumulative gains".into()));
        blocks.push(Element::Figure {
            file: "gains.svg",
            alt: "Cumulative gains curves",
            caption: GAINS_CAPTION,
            svg,
        });
    }
    if let Some(confusion) = input.confusion.as_ref().filter(|c| !c.labels.is_empty()) {
        blocks.push(Element::Heading("Plan choice".into()));
        blocks.push(Element::Figure {
            file: "confusion.svg",
            alt: "Plan-choice confusion matrix",
            caption: CONFUSION_CAPTION,
            svg: confusion_svg(confusion)?,
        });
        blocks.push(confusion_table(confusion));
    }
    for table in &input.tables {
        blocks.push(Element::Heading(table.title.clone()));
        blocks.push(Element::Table {
            columns: table.columns.clone(),
            rows: table.rows.clone(),
        });
    }
    Ok(blocks)
}

/// The confusion matrix as counts, with row totals.
pub(super) fn confusion_table(confusion: &Confusion) -> Element<'static> {
    let mut columns = vec!["actual \\ predicted".to_string()];
    columns.extend(confusion.labels.iter().cloned());
    columns.push("total".into());
    let rows = confusion
        .labels
        .iter()
        .enumerate()
        .map(|(row, label)| {
            let counts: Vec<f64> = (0..confusion.labels.len())
                .map(|col| confusion_count(confusion, row, col))
                .collect();
            let mut cells = vec![label.clone()];
            cells.extend(counts.iter().map(|&c| format_weight(c)));
            cells.push(format_weight(counts.iter().sum()));
            cells
        })
        .collect();
    Element::Table { columns, rows }
}

/// A column is right-aligned when every cell that says something is a
/// number (optionally signed, with thousands separators or a % sign).
pub(super) fn numeric_columns(columns: usize, rows: &[Vec<String>]) -> Vec<bool> {
    (0..columns)
        .map(|col| {
            let mut any = false;
            for cell in rows.iter().filter_map(|row| row.get(col)) {
                let cell = cell.trim();
                if matches!(cell, "" | "-" | "–" | "—" | "n/a" | "NA") {
                    continue;
                }
                let number = cell.trim_end_matches('%').trim().replace(',', "");
                if number.replace('−', "-").parse::<f64>().is_err() {
                    return false;
                }
                any = true;
            }
            any
        })
        .collect()
}

/// Header and rows padded to the same width, so ragged input still renders
/// as a rectangular table.
pub(super) fn rectangular(
    columns: &[String],
    rows: &[Vec<String>],
) -> (Vec<String>, Vec<Vec<String>>) {
    let width = rows.iter().map(Vec::len).fold(columns.len(), usize::max);
    let pad = |cells: &[String]| {
        let mut cells = cells.to_vec();
        cells.resize(width, String::new());
        cells
    };
    (pad(columns), rows.iter().map(|row| pad(row)).collect())
}

// ---------------------------------------------------------------------------
// Markdown.
