//! The evaluation report that `upsell eval` writes: `report.md`, a
//! self-contained `report.html` and the SVG plots behind them.
//!
//! The caller computes every number (streaming, over the whole test set) and
//! hands over plain data in a [`ReportInput`]; this module only lays it out
//! and draws it. Both documents are built from the same list of blocks, so
//! the Markdown and the HTML always show the same content.
//!
//! Plots are drawn with plotters' SVG backend and no font backend, so no
//! system font library is needed. The price is that plotters guesses text
//! widths (about 0.45 × the font size per byte); layouts that depend on text
//! width (the confusion matrix's labels) reserve space from the label lengths
//! themselves, with slack for wide fonts.
//!
//! Conventions the caller relies on:
//! - The first entry of `reliability`, `roc` and `gains` is the overall one
//!   ("all products"); it is drawn black and thicker, the others take the
//!   colours of a fixed palette in order (nine colours, then they repeat).
//! - Non-finite values are skipped; a plot with nothing left to draw is left
//!   out of the report, as is a missing (or label-less) confusion matrix.
//! - Curves of any length are accepted: points closer than 0.1% of the axis
//!   to the previous one are dropped, so a 65,536-point ROC curve costs a few
//!   kilobytes of SVG rather than megabytes.

pub use crate::error::ReportError;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

/// One bin of a reliability diagram: the bins
/// [`BinaryMetrics::reliability`](crate::evaluation::metrics::BinaryMetrics::reliability)
/// gives. Bins with weight 0 (or non-finite fields) are skipped.
pub use crate::evaluation::metrics::CalibrationBin as ReliabilityBin;

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

/// Writes report.md, report.html and the SVG plots into `dir` (existing,
/// empty). Returns the paths written, in order: the SVG files, then
/// `report.md`, then `report.html`.
///
/// # Errors
///
/// [`ReportError::Plot`] if plotters fails to draw (nothing is written
/// then: every plot is drawn in memory first), [`ReportError::Io`] if a
/// file cannot be written (files before it may exist).
pub fn write_report(dir: &Path, input: &ReportInput) -> Result<Vec<PathBuf>, ReportError> {
    let blocks = elements(input)?;
    let mut written = Vec::new();
    for block in &blocks {
        if let Element::Figure { file, svg, .. } = block {
            written.push(write_file(dir, file, svg)?);
        }
    }
    written.push(write_file(
        dir,
        "report.md",
        &markdown(&input.title, &blocks),
    )?);
    written.push(write_file(
        dir,
        "report.html",
        &html(&input.title, &blocks),
    )?);
    Ok(written)
}

fn write_file(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    match std::fs::write(&path, contents) {
        Ok(()) => Ok(path),
        Err(source) => Err(ReportError::Io { path, source }),
    }
}

// ---------------------------------------------------------------------------
// The document, shared by the Markdown and HTML renderers.

/// One piece of the report, in reading order.
enum Element<'a> {
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

const RELIABILITY_CAPTION: &str = "Each point is a bin of rows with similar predictions, \
placed at their mean predicted probability (x) and observed conversion rate (y): points on \
the dashed diagonal are well calibrated, points above it are under-predicted, and a larger \
marker means a heavier bin.";
const ROC_CAPTION: &str = "Each curve traces the true positive rate against the false \
positive rate as the score threshold is lowered: the further above the dashed chance \
diagonal, the better the model ranks buyers above non-buyers (AUC is the area under it).";
const GAINS_CAPTION: &str = "Each curve shows the share of all conversions captured (y) \
when offering to the given share of the population with the highest scores (x); the dashed \
diagonal is random targeting.";
const CONFUSION_CAPTION: &str = "Rows are the plan actually bought and columns the plan \
predicted; each cell shows its share of the row, so a dark diagonal means the plan head \
picks the right plan, and the table below gives the underlying counts.";

fn elements(input: &ReportInput) -> Result<Vec<Element<'_>>, ReportError> {
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
fn confusion_table(confusion: &Confusion) -> Element<'static> {
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

/// `counts[row][col]`, with anything missing or meaningless read as 0.
fn confusion_count(confusion: &Confusion, row: usize, col: usize) -> f64 {
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
fn format_weight(weight: f64) -> String {
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

/// A column is right-aligned when every cell that says something is a
/// number (optionally signed, with thousands separators or a % sign).
fn numeric_columns(columns: usize, rows: &[Vec<String>]) -> Vec<bool> {
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
fn rectangular(columns: &[String], rows: &[Vec<String>]) -> (Vec<String>, Vec<Vec<String>>) {
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

fn markdown(title: &str, blocks: &[Element<'_>]) -> String {
    let mut md = format!("# {}\n\n", md_escape(title));
    for block in blocks {
        match block {
            Element::Heading(text) => {
                let _ = writeln!(md, "## {}\n", md_escape(text));
            }
            Element::About(lines) => {
                for (key, value) in lines.iter() {
                    let _ = writeln!(md, "- **{}**: {}", md_escape(key), md_escape(value));
                }
                md.push('\n');
            }
            Element::Figure {
                file, alt, caption, ..
            } => {
                let _ = writeln!(md, "![{alt}]({file})\n\n*{caption}*\n");
            }
            Element::Table { columns, rows } => {
                let (columns, rows) = rectangular(columns, rows);
                if columns.is_empty() {
                    continue;
                }
                let numeric = numeric_columns(columns.len(), &rows);
                md_row(&mut md, &columns);
                let rule: Vec<String> = numeric
                    .iter()
                    .map(|&n| if n { "---:" } else { "---" }.to_string())
                    .collect();
                let _ = writeln!(md, "|{}|", rule.join("|"));
                for row in &rows {
                    md_row(&mut md, row);
                }
                md.push('\n');
            }
        }
    }
    md
}

fn md_row(md: &mut String, cells: &[String]) {
    let cells: Vec<String> = cells.iter().map(|c| md_escape(c)).collect();
    let _ = writeln!(md, "| {} |", cells.join(" | "));
}

/// Escapes the characters that would change Markdown's meaning (`|` would
/// split a table cell, `*` and `_` start emphasis) and flattens newlines,
/// which would end a table row.
fn md_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// HTML.

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1a1a1a;\
background:#fff;margin:0;line-height:1.45}
main{max-width:1280px;margin:0 auto;padding:1.5rem 2rem 4rem}
h1{font-size:1.7rem;margin:.5rem 0 1rem}
h2{font-size:1.25rem;margin:2.2rem 0 .8rem;padding-bottom:.2rem;border-bottom:1px solid #ddd}
dl.about{display:grid;grid-template-columns:max-content auto;gap:.15rem 1.2rem;margin:0}
dl.about dt{font-weight:600;color:#555}
dl.about dd{margin:0;word-break:break-all}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.92rem}
th,td{border:1px solid #c8c8c8;padding:.3rem .65rem;text-align:left;vertical-align:top}
th{background:#f2f4f7}
tbody tr:nth-child(even){background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:0 0 1rem}
figure svg{max-width:100%;height:auto;display:block}
figcaption{color:#444;font-size:.92rem;max-width:50rem;margin-top:.4rem}
";

fn html(title: &str, blocks: &[Element<'_>]) -> String {
    let title = html_escape(title);
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n\
         <h1>{title}</h1>\n"
    );
    for block in blocks {
        match block {
            Element::Heading(text) => {
                let _ = writeln!(out, "<h2>{}</h2>", html_escape(text));
            }
            Element::About(lines) => {
                out.push_str("<dl class=\"about\">\n");
                for (key, value) in lines.iter() {
                    let _ = writeln!(
                        out,
                        "<dt>{}</dt><dd>{}</dd>",
                        html_escape(key),
                        html_escape(value)
                    );
                }
                out.push_str("</dl>\n");
            }
            Element::Figure { caption, svg, .. } => {
                let _ = writeln!(
                    out,
                    "<figure>\n{}\n<figcaption>{}</figcaption>\n</figure>",
                    inline_svg(svg),
                    html_escape(caption)
                );
            }
            Element::Table { columns, rows } => {
                let (columns, rows) = rectangular(columns, rows);
                if columns.is_empty() {
                    continue;
                }
                let numeric = numeric_columns(columns.len(), &rows);
                let class = |col: usize| if numeric[col] { " class=\"num\"" } else { "" };
                out.push_str("<table>\n<thead><tr>");
                for (col, cell) in columns.iter().enumerate() {
                    let _ = write!(out, "<th{}>{}</th>", class(col), html_escape(cell));
                }
                out.push_str("</tr></thead>\n<tbody>\n");
                for row in &rows {
                    out.push_str("<tr>");
                    for (col, cell) in row.iter().enumerate() {
                        let _ = write!(out, "<td{}>{}</td>", class(col), html_escape(cell));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody>\n</table>\n");
            }
        }
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// SVG markup ready to sit inside an HTML page: no XML prolog (invalid
/// there) and no `xmlns` (HTML puts `<svg>` in the SVG namespace itself), so
/// the page contains no URL at all.
fn inline_svg(svg: &str) -> String {
    let svg = match svg.find("?>") {
        Some(end) if svg.trim_start().starts_with("<?xml") => &svg[end + 2..],
        _ => svg,
    };
    svg.trim()
        .replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Plots.

type DrawResult<T> = Result<T, Box<dyn StdError>>;

/// plotters' SVG backend writes `font-size = size / 1.24`, so 15 renders at
/// about 12 px.
const FONT: &str = "sans-serif";
const TITLE_SIZE: f64 = 24.0;
const DESC_SIZE: f64 = 18.0;
const TICK_SIZE: f64 = 15.0;
const LEGEND_SIZE: f64 = 15.0;

/// Pixels reserved per character of a rendered label at `TICK_SIZE`: wide
/// fonts such as DejaVu Sans average about 0.6 em.
const CHAR_PX: u32 = 7;

/// Tableau's category colours without its grey, which the diagonals use.
const PALETTE: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const DIAGONAL: RGBColor = RGBColor(150, 150, 150);
const HEAT: RGBColor = RGBColor(8, 81, 156);

/// The first entry is the overall one: black, so it reads as the reference.
fn colour(index: usize) -> RGBColor {
    match index {
        0 => BLACK,
        i => PALETTE[(i - 1) % PALETTE.len()],
    }
}

fn stroke(index: usize) -> ShapeStyle {
    colour(index).stroke_width(if index == 0 { 3 } else { 2 })
}

/// Draws into a string with `draw` and maps plotters' errors to `plot`.
fn render(
    plot: &'static str,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult<()>,
) -> Result<String, ReportError> {
    let mut svg = String::new();
    let result: DrawResult<()> = (|| {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
        Ok(())
    })();
    result.map_err(|e| ReportError::Plot {
        plot,
        message: e.to_string(),
    })?;
    Ok(svg)
}

/// Finite points clamped to `[0, 1]`², dropping any point within `tol` of
/// the last one kept in both coordinates (the last point is always kept, so
/// a curve still ends where it should).
fn thin(points: &[(f64, f64)], tol: f64) -> Vec<(f64, f64)> {
    let finite: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|&(x, y)| (x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)))
        .collect();
    let mut kept: Vec<(f64, f64)> = Vec::new();
    for (i, &(x, y)) in finite.iter().enumerate() {
        let last = i + 1 == finite.len();
        match kept.last() {
            Some(&(kx, ky)) if !last && (x - kx).abs() < tol && (y - ky).abs() < tol => {}
            _ => kept.push((x, y)),
        }
    }
    kept
}

/// Draws a rotated or anchored line of text at a pixel position.
fn label(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    text: &str,
    at: (i32, i32),
    size: f64,
    colour: &RGBColor,
    pos: Pos,
    transform: FontTransform,
) -> DrawResult<()> {
    let style = (FONT, size)
        .into_font()
        .transform(transform)
        .color(colour)
        .pos(pos);
    area.draw(&Text::new(text.to_string(), at, style))?;
    Ok(())
}

/// What differs between the ROC and the gains plot.
struct CurvePlot {
    plot: &'static str,
    title: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    diagonal: &'static str,
    percent: bool,
}

const ROC: CurvePlot = CurvePlot {
    plot: "roc",
    title: "ROC curves",
    x_desc: "False positive rate",
    y_desc: "True positive rate",
    diagonal: "chance",
    percent: false,
};

const GAINS: CurvePlot = CurvePlot {
    plot: "gains",
    title: "Cumulative gains",
    x_desc: "Population targeted, highest scores first",
    y_desc: "Conversions captured",
    diagonal: "random targeting",
    percent: true,
};

/// Legends up to this many entries and characters fit in the lower-right
/// corner, which curves above the diagonal leave empty; larger ones go
/// beside the plot, so they never hide a curve.
const INSET_LEGEND_ENTRIES: usize = 10;
const INSET_LEGEND_CHARS: usize = 40;

/// Width of the square-ish plot area of the ROC and gains figures.
const CURVES_SIZE: (u32, u32) = (680, 600);

/// Products past the palette's first cycle are drawn dashed, so colours can
/// repeat without two curves looking the same.
fn dashed(index: usize) -> bool {
    index > 0 && ((index - 1) / PALETTE.len()) % 2 == 1
}

/// A legend entry: text, line style, dashed or not.
type LegendEntry = (String, ShapeStyle, bool);

/// None when no curve has a point to draw.
fn curves_svg(spec: &CurvePlot, curves: &[Curve]) -> Result<Option<String>, ReportError> {
    // About 0.5 px at this size: finer detail cannot show.
    let thinned: Vec<Vec<(f64, f64)>> = curves.iter().map(|c| thin(&c.points, 1e-3)).collect();
    if thinned.iter().all(Vec::is_empty) {
        return Ok(None);
    }
    let mut legend: Vec<LegendEntry> = curves
        .iter()
        .zip(&thinned)
        .enumerate()
        .map(|(i, (curve, points))| {
            let text = if points.is_empty() {
                format!("{} (no data)", curve.label)
            } else {
                curve.label.clone()
            };
            (text, stroke(i), dashed(i))
        })
        .collect();
    legend.push((spec.diagonal.to_string(), DIAGONAL.stroke_width(2), true));
    let chars = legend
        .iter()
        .map(|e| e.0.chars().count())
        .max()
        .unwrap_or(0);
    let side = legend.len() > INSET_LEGEND_ENTRIES || chars > INSET_LEGEND_CHARS;
    let (mut width, mut height) = CURVES_SIZE;
    if side {
        width += 40 + chars as u32 * CHAR_PX + 20;
        height = height.max(80 + 20 * legend.len() as u32);
    }
    let svg = render(spec.plot, (width, height), |root| {
        draw_curves(root, spec, &thinned, &legend, side)
    })?;
    Ok(Some(svg))
}

fn draw_curves(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    spec: &CurvePlot,
    thinned: &[Vec<(f64, f64)>],
    legend: &[LegendEntry],
    side: bool,
) -> DrawResult<()> {
    let (plot, beside) = root.split_horizontally(CURVES_SIZE.0);
    let mut chart = ChartBuilder::on(&plot)
        .caption(spec.title, (FONT, TITLE_SIZE))
        .margin(14)
        .margin_right(30)
        .x_label_area_size(58)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    let format = |v: &f64| {
        if spec.percent {
            format!("{:.0}%", v * 100.0)
        } else {
            format!("{v:.1}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(spec.x_desc)
        .y_desc(spec.y_desc)
        .axis_desc_style((FONT, DESC_SIZE))
        .label_style((FONT, TICK_SIZE))
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&format)
        .y_label_formatter(&format)
        .bold_line_style(BLACK.mix(0.08))
        .light_line_style(TRANSPARENT)
        .draw()?;

    // Drawn first, underneath the curves; its legend entry comes last.
    chart.draw_series(DashedLineSeries::new(
        [(0.0, 0.0), (1.0, 1.0)],
        8,
        6,
        DIAGONAL.stroke_width(2),
    ))?;
    for (points, (text, style, dashed)) in thinned.iter().zip(legend) {
        let (style, dashed) = (*style, *dashed);
        let anno = if dashed {
            chart.draw_series(DashedLineSeries::new(points.iter().copied(), 10, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(points.iter().copied(), style))?
        };
        if !side {
            anno.label(text)
                .legend(move |(x, y)| legend_line((x, y), style, dashed));
        }
        if points.len() == 1 {
            // A one-point line draws nothing; a marker at least shows where it is.
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, style.filled())))?;
        }
    }
    if side {
        for (k, (text, style, dashed)) in legend.iter().enumerate() {
            let y = 70 + 20 * k as i32;
            beside.draw(&legend_line((10, y), *style, *dashed))?;
            label(
                &beside,
                text,
                (42, y),
                LEGEND_SIZE,
                &BLACK,
                Pos::new(HPos::Left, VPos::Center),
                FontTransform::None,
            )?;
        }
        return Ok(());
    }
    let (text, style, dashed) = legend.last().cloned().expect("the diagonal's entry");
    chart
        .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
        .label(text)
        .legend(move |(x, y)| legend_line((x, y), style, dashed));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .margin(10)
        .legend_area_size(30)
        .label_font((FONT, LEGEND_SIZE))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// The 24-pixel sample line of a legend entry.
fn legend_line<DB: DrawingBackend>(
    (x, y): (i32, i32),
    style: ShapeStyle,
    dashed: bool,
) -> DynElement<'static, DB, (i32, i32)> {
    let points = vec![(x, y), (x + 24, y)];
    if dashed {
        DashedPathElement::new(points, 6, 4, style).into_dyn()
    } else {
        PathElement::new(points, style).into_dyn()
    }
}

// Reliability diagram: small multiples, one panel per entry, because seven
// or eight lines bunched near the origin are unreadable in one panel. Each
// panel has its own (square) scale: on a shared one, the top bin of an 8%
// product squeezes a 1% product into a corner.

const PANEL: (u32, u32) = (300, 290);

/// The bins worth drawing, sorted by mean prediction.
fn valid_bins(bins: &[ReliabilityBin]) -> Vec<&ReliabilityBin> {
    let mut valid: Vec<&ReliabilityBin> = bins
        .iter()
        .filter(|b| {
            b.mean_prediction.is_finite()
                && b.observed_rate.is_finite()
                && b.weight.is_finite()
                && b.weight > 0.0
        })
        .collect();
    valid.sort_by(|a, b| a.mean_prediction.total_cmp(&b.mean_prediction));
    valid
}

/// The axis end for data up to `max`: padded by 10% and rounded up to a
/// round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × a power of ten), or 1
/// (the full range) if that is over a half.
fn axis_upper(max: f64) -> f64 {
    let padded = max.min(1.0) * 1.1;
    if padded.is_nan() || padded <= 0.0 || padded > 0.5 {
        return 1.0;
    }
    // Dividing by a positive power of ten gives the nearest double to 0.3,
    // where multiplying by 0.1 would give 0.30000000000000004.
    let exponent = padded.log10().floor() as i32;
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| {
            if exponent < 0 {
                m / 10f64.powi(-exponent)
            } else {
                m * 10f64.powi(exponent)
            }
        })
        .find(|&c| c >= padded * (1.0 - 1e-9))
        .unwrap_or(1.0)
        .min(1.0)
}

/// Decimals a percentage tick needs when about five ticks span `upper`.
fn percent_decimals(upper: f64) -> usize {
    let step = upper * 100.0 / 5.0;
    if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    }
}

/// `share` as a percentage with up to `decimals` decimals, trailing zeros
/// dropped ("1%" and "1.5%" on the same axis, not "1.0%").
fn percent(share: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, share * 100.0);
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}%")
}

/// One panel: its label, drawable bins and axis end.
struct Panel<'a> {
    name: &'a str,
    bins: Vec<&'a ReliabilityBin>,
    upper: f64,
}

fn reliability_svg(
    entries: &[(String, Vec<ReliabilityBin>)],
) -> Result<Option<String>, ReportError> {
    let panels: Vec<Panel<'_>> = entries
        .iter()
        .map(|(name, bins)| {
            let bins = valid_bins(bins);
            let max = bins
                .iter()
                .map(|b| b.mean_prediction.max(b.observed_rate))
                .fold(0.0, f64::max);
            Panel {
                name,
                upper: axis_upper(max),
                bins,
            }
        })
        .collect();
    if panels.iter().all(|p| p.bins.is_empty()) {
        return Ok(None);
    }
    // Rows of at most four panels, balanced (7 → 4 + 3, not 4 + 3 + 0).
    let n = panels.len();
    let rows = n.div_ceil(4);
    let cols = n.div_ceil(rows);
    let (pw, ph) = if n == 1 { (600, 460) } else { PANEL };
    let size = (40 + pw * cols as u32, 56 + ph * rows as u32 + 44);
    let svg = render("reliability", size, |root| {
        draw_reliability(root, &panels, (rows, cols))
    })?;
    Ok(Some(svg))
}

fn draw_reliability(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    panels: &[Panel<'_>],
    grid: (usize, usize),
) -> DrawResult<()> {
    let body = root.titled(
        "Reliability: observed rate against mean prediction",
        (FONT, TITLE_SIZE),
    )?;
    let (bw, bh) = body.dim_in_pixel();
    let (body, bottom) = body.split_vertically(bh - 44);
    let (left, area) = body.split_horizontally(40);

    // The zoom note goes under the x axis only: the rotated y label must fit
    // the height of a single row of panels.
    let zoom = match panels {
        [only] if only.upper < 1.0 => format!(
            " (both axes zoomed to 0–{})",
            percent(only.upper, percent_decimals(only.upper))
        ),
        _ if panels.iter().any(|p| p.upper < 1.0) => {
            " (each panel's axes zoomed to its data)".into()
        }
        _ => String::new(),
    };
    let centre = Pos::new(HPos::Center, VPos::Center);
    label(
        &bottom,
        &format!("Mean predicted probability{zoom}"),
        (40 + (bw as i32 - 40) / 2, 22),
        DESC_SIZE,
        &BLACK,
        centre,
        FontTransform::None,
    )?;
    label(
        &left,
        "Observed conversion rate",
        (16, (bh as i32 - 44) / 2),
        DESC_SIZE,
        &BLACK,
        centre,
        FontTransform::Rotate270,
    )?;

    for (i, (panel, area)) in panels.iter().zip(area.split_evenly(grid)).enumerate() {
        let upper = panel.upper;
        let decimals = percent_decimals(upper);
        let format = |v: &f64| percent(*v, decimals);
        // Panel titles render about 8 px a character; longer ones would
        // run into the neighbouring panels.
        let fits = (area.dim_in_pixel().0 as usize).saturating_sub(16) / 8;
        let mut chart = ChartBuilder::on(&area)
            .caption(shorten(panel.name, fits), (FONT, 17))
            .margin(8)
            .margin_right(16)
            .x_label_area_size(26)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..upper, 0.0..upper)?;
        chart
            .configure_mesh()
            .label_style((FONT, 13))
            .x_labels(5)
            .y_labels(5)
            .x_label_formatter(&format)
            .y_label_formatter(&format)
            .bold_line_style(BLACK.mix(0.08))
            .light_line_style(TRANSPARENT)
            .draw()?;
        chart.draw_series(DashedLineSeries::new(
            [(0.0, 0.0), (upper, upper)],
            6,
            5,
            DIAGONAL.stroke_width(2),
        ))?;
        if panel.bins.is_empty() {
            let plot = chart.plotting_area().strip_coord_spec();
            let (pw, ph) = plot.dim_in_pixel();
            // Below the diagonal, which crosses the centre.
            label(
                &plot,
                "no data",
                (pw as i32 * 3 / 4, ph as i32 * 3 / 4),
                16.0,
                &DIAGONAL,
                centre,
                FontTransform::None,
            )?;
            continue;
        }
        let point = |b: &ReliabilityBin| {
            (
                b.mean_prediction.clamp(0.0, upper),
                b.observed_rate.clamp(0.0, upper),
            )
        };
        chart.draw_series(LineSeries::new(
            panel.bins.iter().map(|b| point(b)),
            stroke(i),
        ))?;
        // Marker area proportional to the bin's weight, so a noisy bin of a
        // few rows does not look as trustworthy as a full one.
        let heaviest = panel.bins.iter().map(|b| b.weight).fold(0.0, f64::max);
        chart.draw_series(panel.bins.iter().map(|b| {
            let radius = 2.0 + 4.0 * (b.weight / heaviest).sqrt();
            Circle::new(point(b), radius.round() as i32, colour(i).filled())
        }))?;
    }
    Ok(())
}

// Confusion matrix: drawn by hand in pixels, because the labels decide the
// layout and plotters' category axes cannot rotate or budget them.

/// Plot labels longer than this are shortened with an ellipsis (the counts
/// table keeps them whole).
const MAX_LABEL_CHARS: usize = 32;

/// `text` cut to at most `max` characters, an ellipsis marking the cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
        short.push('…');
        short
    }
}

/// Pixel geometry of the confusion plot, computed before drawing because
/// the canvas size depends on it.
struct ConfusionLayout {
    n: usize,
    cell: u32,
    left: u32,
    top: u32,
    label_px: u32,
    size: (u32, u32),
}

impl ConfusionLayout {
    fn new(confusion: &Confusion) -> Self {
        let n = confusion.labels.len();
        let chars = confusion
            .labels
            .iter()
            .map(|l| shorten(l, MAX_LABEL_CHARS).chars().count())
            .max()
            .unwrap_or(0) as u32;
        let label_px = chars * CHAR_PX + 10;
        let cell = (520 / n.max(1) as u32).clamp(26, 76);
        let grid = cell * n as u32;
        // Room for the row totals right of the grid.
        let total_px = 90;
        // Wide enough for the title; a small matrix is centred in it.
        let needed = 36 + label_px + grid + total_px;
        let width = needed.max(MIN_CONFUSION_WIDTH);
        let left = 36 + label_px + (width - needed) / 2;
        let top = 64;
        let height = top + grid + label_px + 44;
        Self {
            n,
            cell,
            left,
            top,
            label_px,
            size: (width, height),
        }
    }
}

/// The title renders about 560 px wide.
const MIN_CONFUSION_WIDTH: u32 = 620;

fn confusion_svg(confusion: &Confusion) -> Result<String, ReportError> {
    let layout = ConfusionLayout::new(confusion);
    render("confusion", layout.size, |root| {
        draw_confusion(root, confusion, &layout)
    })
}

/// A row share as a cell label: whole percent, or one decimal below 10% so
/// small shares do not all read "0%".
fn format_share(share: f64) -> String {
    if share == 0.0 {
        "0%".into()
    } else if share < 0.001 {
        "<0.1%".into()
    } else if share < 0.1 {
        format!("{:.1}%", share * 100.0)
    } else {
        format!("{:.0}%", share * 100.0)
    }
}

fn mix(share: f64) -> RGBColor {
    let t = share.clamp(0.0, 1.0);
    let channel = |c: u8| (255.0 + (f64::from(c) - 255.0) * t).round() as u8;
    RGBColor(channel(HEAT.0), channel(HEAT.1), channel(HEAT.2))
}

fn draw_confusion(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    confusion: &Confusion,
    layout: &ConfusionLayout,
) -> DrawResult<()> {
    let &ConfusionLayout {
        n,
        cell,
        left,
        top,
        label_px,
        size: (width, _),
    } = layout;
    let (n32, cell_i, left_i, top_i) = (n as i32, cell as i32, left as i32, top as i32);
    let grid = cell_i * n32;
    let centre = Pos::new(HPos::Center, VPos::Center);
    label(
        root,
        "Plan choice: share of each actual plan by predicted plan",
        (width as i32 / 2, 26),
        TITLE_SIZE - 2.0,
        &BLACK,
        centre,
        FontTransform::None,
    )?;

    let labels: Vec<String> = confusion
        .labels
        .iter()
        .map(|l| shorten(l, MAX_LABEL_CHARS))
        .collect();
    let text_size = (f64::from(cell) * 0.36).min(16.0);
    for (row, name) in labels.iter().enumerate() {
        let counts: Vec<f64> = (0..n).map(|c| confusion_count(confusion, row, c)).collect();
        let total: f64 = counts.iter().sum();
        let y0 = top_i + row as i32 * cell_i;
        for (col, &count) in counts.iter().enumerate() {
            let share = if total > 0.0 { count / total } else { 0.0 };
            let x0 = left_i + col as i32 * cell_i;
            root.draw(&Rectangle::new(
                [(x0, y0), (x0 + cell_i, y0 + cell_i)],
                mix(share).filled(),
            ))?;
            // Thin white gaps keep neighbouring cells of similar shade apart.
            root.draw(&Rectangle::new(
                [(x0, y0), (x0 + cell_i, y0 + cell_i)],
                WHITE.stroke_width(1),
            ))?;
            let ink = if share > 0.5 { WHITE } else { BLACK };
            label(
                root,
                &format_share(share),
                (x0 + cell_i / 2, y0 + cell_i / 2),
                text_size,
                &ink,
                centre,
                FontTransform::None,
            )?;
        }
        label(
            root,
            name,
            (left_i - 8, y0 + cell_i / 2),
            TICK_SIZE,
            &BLACK,
            Pos::new(HPos::Right, VPos::Center),
            FontTransform::None,
        )?;
        label(
            root,
            &format_weight(total),
            (left_i + grid + 8, y0 + cell_i / 2),
            13.0,
            &RGBColor(90, 90, 90),
            Pos::new(HPos::Left, VPos::Center),
            FontTransform::None,
        )?;
    }
    root.draw(&Rectangle::new(
        [(left_i, top_i), (left_i + grid, top_i + grid)],
        BLACK.mix(0.4).stroke_width(1),
    ))?;
    label(
        root,
        "total",
        (left_i + grid + 8, top_i - 10),
        13.0,
        &RGBColor(90, 90, 90),
        Pos::new(HPos::Left, VPos::Bottom),
        FontTransform::None,
    )?;
    for (col, text) in labels.iter().enumerate() {
        // Read bottom to top, ending just under the grid.
        label(
            root,
            text,
            (left_i + col as i32 * cell_i + cell_i / 2, top_i + grid + 8),
            TICK_SIZE,
            &BLACK,
            Pos::new(HPos::Right, VPos::Center),
            FontTransform::Rotate270,
        )?;
    }
    label(
        root,
        "Predicted plan",
        (left_i + grid / 2, top_i + grid + label_px as i32 + 26),
        DESC_SIZE,
        &BLACK,
        centre,
        FontTransform::None,
    )?;
    label(
        root,
        "Actual plan",
        (left_i - label_px as i32 - 20, top_i + grid / 2),
        DESC_SIZE,
        &BLACK,
        centre,
        FontTransform::Rotate270,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, base rate, AUC): the product catalogue of the examples.
    const PRODUCTS: [(&str, f64, f64); 7] = [
        ("Free", 0.08, 0.76),
        ("Premium Individual", 0.05, 0.81),
        ("Premium Duo", 0.02, 0.78),
        ("Premium Family", 0.03, 0.84),
        ("Premium Student", 0.06, 0.79),
        ("Audiobooks+", 0.01, 0.75),
        ("Podcast Pass", 0.015, 0.83),
    ];

    /// A deterministic wobble in [-1, 1], so examples need no RNG.
    fn wobble(i: usize, seed: usize) -> f64 {
        ((i * 7919 + seed * 104_729) as f64 * 0.618).sin()
    }

    /// Ten decile bins around `base`, over-confident by `slope`, plus the
    /// empty trailing bin a fixed-width histogram leaves.
    fn reliability_bins(base: f64, slope: f64, seed: usize) -> Vec<ReliabilityBin> {
        let spread = [0.15, 0.3, 0.45, 0.6, 0.75, 0.95, 1.15, 1.45, 1.9, 2.9];
        let mut bins: Vec<ReliabilityBin> = spread
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let mean = base * m;
                let bias = 1.0 + slope * (k as f64 - 4.5) / 4.5 + 0.08 * wobble(k, seed);
                ReliabilityBin {
                    mean_prediction: mean,
                    observed_rate: (mean * bias).clamp(0.0, 1.0),
                    weight: 40_000.0 / (k as f64 + 1.0),
                }
            })
            .collect();
        bins.push(ReliabilityBin {
            mean_prediction: f64::NAN,
            observed_rate: f64::NAN,
            weight: 0.0,
        });
        bins
    }

    /// A concave ROC curve with the given AUC: TPR = FPR^(1/AUC - 1).
    fn roc_points(auc: f64) -> Vec<(f64, f64)> {
        let k = 1.0 / auc - 1.0;
        (0..=200)
            .map(|i| {
                let fpr = i as f64 / 200.0;
                (fpr, fpr.powf(k))
            })
            .collect()
    }

    /// The gains curve of the same ranking: targeting the rows above a
    /// threshold reaches `base·TPR + (1 - base)·FPR` of the population.
    fn gains_points(auc: f64, base: f64) -> Vec<(f64, f64)> {
        roc_points(auc)
            .into_iter()
            .map(|(fpr, tpr)| (base * tpr + (1.0 - base) * fpr, tpr))
            .collect()
    }

    fn realistic_input() -> ReportInput {
        let overall = ("All products", 0.04, 0.80);
        let all = std::iter::once(overall).chain(PRODUCTS);
        let reliability = all
            .clone()
            .enumerate()
            .map(|(i, (name, base, _))| (name.to_string(), reliability_bins(base, 0.15, i)))
            .collect();
        let roc = all
            .clone()
            .map(|(name, _, auc)| Curve {
                label: format!("{name} (AUC {auc:.3})"),
                points: roc_points(auc),
            })
            .collect();
        let gains = all
            .map(|(name, base, auc)| Curve {
                label: name.to_string(),
                points: gains_points(auc, base),
            })
            .collect();
        let n = PRODUCTS.len();
        let counts = (0..n)
            .map(|row| {
                (0..n)
                    .map(|col| {
                        if row == col {
                            800.0 + 300.0 * row as f64
                        } else {
                            // Duo and Family (2, 3) are easy to mix up.
                            let near = if row + col == 5 && row.abs_diff(col) == 1 {
                                200.0
                            } else {
                                0.0
                            };
                            (40.0 + 30.0 * wobble(row * n + col, 3)).round() + near
                        }
                    })
                    .collect()
            })
            .collect();
        let per_product = ReportTable {
            title: "Per product".into(),
            columns: ["Product", "Rows", "Base rate", "AUC", "Log loss", "ECE"]
                .map(String::from)
                .to_vec(),
            rows: PRODUCTS
                .iter()
                .map(|(name, base, auc)| {
                    vec![
                        name.to_string(),
                        format_weight(1_250_000.0 * base),
                        format!("{:.1}%", base * 100.0),
                        format!("{auc:.3}"),
                        format!("{:.4}", 0.2 * base.sqrt()),
                        format!("{:.4}", base / 25.0),
                    ]
                })
                .collect(),
        };
        let per_segment = ReportTable {
            title: "Per segment".into(),
            columns: ["Segment", "Rows", "AUC", "Note"]
                .map(String::from)
                .to_vec(),
            rows: vec![
                ["country=SE | age 18-24", "84,211", "0.802", "—"]
                    .map(String::from)
                    .to_vec(),
                ["tenure < 1 year", "311,092", "0.771", "new & <trial>"]
                    .map(String::from)
                    .to_vec(),
                ["tenure ≥ 1 year", "854,697", "0.815", "n/a"]
                    .map(String::from)
                    .to_vec(),
            ],
        };
        ReportInput {
            title: "Evaluation of checkpoints/run-7/epoch-12".into(),
            about: vec![
                ("Checkpoint".into(), "checkpoints/run-7/epoch-12".into()),
                ("Test data".into(), "data/test_2024-06.parquet".into()),
                ("Rows".into(), "1,250,000".into()),
                ("Machine".into(), "2 cores, burn-flex CPU backend".into()),
                ("Date".into(), "2024-07-01 12:00 UTC".into()),
            ],
            headline: vec![
                ("AUC (all products)".into(), "0.801".into()),
                ("Log loss".into(), "0.1412".into()),
                ("Brier score".into(), "0.0367".into()),
                ("Expected calibration error".into(), "0.0021".into()),
                ("Plan accuracy".into(), "71.4%".into()),
            ],
            reliability,
            roc,
            gains,
            confusion: Some(Confusion {
                labels: PRODUCTS.iter().map(|p| p.0.to_string()).collect(),
                counts,
            }),
            tables: vec![per_product, per_segment],
        }
    }

    fn empty_input() -> ReportInput {
        ReportInput {
            title: "Empty".into(),
            about: vec![],
            headline: vec![],
            reliability: vec![],
            roc: vec![],
            gains: vec![],
            confusion: None,
            tables: vec![],
        }
    }

    /// Writes `input` into a fresh directory; returns it (kept alive) and
    /// the file names written.
    fn write(input: &ReportInput) -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_report(dir.path(), input).unwrap();
        let names = paths
            .iter()
            .map(|p| {
                assert_eq!(p.parent(), Some(dir.path()));
                p.file_name().unwrap().to_str().unwrap().to_string()
            })
            .collect();
        (dir, names)
    }

    fn read(dir: &tempfile::TempDir, name: &str) -> String {
        std::fs::read_to_string(dir.path().join(name)).unwrap()
    }

    /// Checks that `svg` is one `<svg>` element with balanced tags: the
    /// structure a browser or `rsvg-convert` needs (plotters escapes `<` and
    /// `>` in text and attributes, so every `<` starts a tag).
    fn assert_svg_document(svg: &str) {
        assert!(svg.trim_start().starts_with("<svg "), "not an <svg> root");
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        let mut roots = 0;
        while let Some(start) = rest.find('<') {
            let end = start + rest[start..].find('>').expect("unterminated tag");
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
            } else {
                if stack.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    stack.push(tag.split_whitespace().next().unwrap());
                }
            }
        }
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
        assert_eq!(roots, 1);
        assert!(rest.trim().is_empty());
    }

    /// The way plotters escapes text in SVG.
    fn svg_text(text: &str) -> String {
        html_escape(text).replace("&#39;", "&apos;")
    }

    #[test]
    fn writes_every_file_non_empty() {
        let (dir, names) = write(&realistic_input());
        assert_eq!(
            names,
            [
                "reliability.svg",
                "roc.svg",
                "gains.svg",
                "confusion.svg",
                "report.md",
                "report.html"
            ]
        );
        for name in &names {
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len > 200, "{name} is {len} bytes");
        }
    }

    #[test]
    fn svgs_are_documents_showing_every_label() {
        let input = realistic_input();
        let (dir, _) = write(&input);
        let confusion = input.confusion.as_ref().unwrap();
        let expected: [(&str, Vec<&String>); 4] = [
            (
                "reliability.svg",
                input.reliability.iter().map(|r| &r.0).collect(),
            ),
            ("roc.svg", input.roc.iter().map(|c| &c.label).collect()),
            ("gains.svg", input.gains.iter().map(|c| &c.label).collect()),
            ("confusion.svg", confusion.labels.iter().collect()),
        ];
        for (file, labels) in expected {
            let svg = read(&dir, file);
            assert_svg_document(&svg);
            for label in labels {
                assert!(svg.contains(&svg_text(label)), "{file} lacks {label:?}");
            }
        }
        assert!(
            read(&dir, "reliability.svg").contains("(each panel&apos;s axes zoomed to its data)")
        );
    }

    #[test]
    fn html_is_offline_and_shows_every_cell() {
        let input = realistic_input();
        let (dir, _) = write(&input);
        let html = read(&dir, "report.html");
        let cells = input
            .tables
            .iter()
            .flat_map(|t| t.columns.iter().chain(t.rows.iter().flatten()))
            .chain(input.headline.iter().flat_map(|(k, v)| [k, v]))
            .chain(input.about.iter().flat_map(|(k, v)| [k, v]));
        for cell in cells {
            assert!(html.contains(&html_escape(cell)), "HTML lacks {cell:?}");
        }
        assert!(html.contains("new &amp; &lt;trial&gt;"));
        for remote in ["http://", "https://", "<script", "<link", "<img", "<?xml"] {
            assert!(!html.contains(remote), "HTML contains {remote:?}");
        }
        assert_eq!(html.matches("<svg ").count(), 4);
        assert_eq!(html.matches("</svg>").count(), 4);
        assert!(html.contains("<td class=\"num\">0.802</td>"));
    }

    #[test]
    fn markdown_references_plots_and_escapes_pipes() {
        let (dir, names) = write(&realistic_input());
        let md = read(&dir, "report.md");
        for svg in names.iter().filter(|n| n.ends_with(".svg")) {
            assert!(md.contains(&format!("]({svg})")), "report.md lacks {svg}");
        }
        assert!(md.contains("| country=SE \\| age 18-24 | 84,211 |"));
        // Every row of the per-segment table has exactly five cell borders.
        let rows = md
            .lines()
            .skip_while(|l| *l != "## Per segment")
            .filter(|l| l.starts_with('|'));
        for row in rows {
            let borders = row.replace("\\|", "").matches('|').count();
            assert_eq!(borders, 5, "{row}");
        }
        assert!(md.contains("|---|---:|---:|---|"));
        // The confusion matrix also appears as counts.
        assert!(md.contains("| actual \\\\ predicted | Free |"));
    }

    #[test]
    fn empty_input_writes_only_the_documents() {
        let (dir, names) = write(&empty_input());
        assert_eq!(names, ["report.md", "report.html"]);
        assert!(!read(&dir, "report.md").contains(".svg"));
        assert!(!read(&dir, "report.html").contains("<svg"));
    }

    #[test]
    fn degenerate_plots_are_skipped_or_drawn_without_panicking() {
        let mut input = empty_input();
        input.roc = vec![
            Curve {
                label: "nothing".into(),
                points: vec![],
            },
            Curve {
                label: "NaN only".into(),
                points: vec![(f64::NAN, 0.5), (0.2, f64::INFINITY)],
            },
            Curve {
                label: "one point".into(),
                points: vec![(0.3, 0.7)],
            },
        ];
        input.gains = vec![Curve {
            label: "NaN only".into(),
            points: vec![(f64::NAN, f64::NAN)],
        }];
        input.reliability = vec![
            (
                "all products".into(),
                vec![ReliabilityBin {
                    mean_prediction: 0.1,
                    observed_rate: 0.0,
                    weight: 0.0,
                }],
            ),
            (
                "NaN".into(),
                vec![ReliabilityBin {
                    mean_prediction: f64::NAN,
                    observed_rate: 0.1,
                    weight: 5.0,
                }],
            ),
        ];
        input.confusion = Some(Confusion {
            labels: vec!["A".into(), "B".into()],
            // Row B is empty and row A is ragged.
            counts: vec![vec![3.0]],
        });
        let (dir, names) = write(&input);
        assert_eq!(
            names,
            ["roc.svg", "confusion.svg", "report.md", "report.html"]
        );
        let roc = read(&dir, "roc.svg");
        assert_svg_document(&roc);
        assert!(roc.contains("nothing (no data)"));
        assert!(
            roc.contains("<circle"),
            "the one-point curve needs a marker"
        );
        let confusion = read(&dir, "confusion.svg");
        assert_svg_document(&confusion);
        assert!(confusion.contains(">\n0%\n<") || confusion.contains(">0%<"));
        let md = read(&dir, "report.md");
        assert!(!md.contains("gains.svg") && !md.contains("reliability.svg"));

        // A matrix without labels is no matrix.
        input.confusion = Some(Confusion {
            labels: vec![],
            counts: vec![],
        });
        let (_, names) = write(&input);
        assert!(!names.iter().any(|n| n == "confusion.svg"));
    }

    #[test]
    fn single_reliability_entry_zooms_only_when_it_helps() {
        let mut input = empty_input();
        input.reliability = vec![(
            "all products".into(),
            vec![ReliabilityBin {
                mean_prediction: 0.6,
                observed_rate: 0.7,
                weight: 1.0,
            }],
        )];
        let (dir, names) = write(&input);
        assert_eq!(names[0], "reliability.svg");
        let svg = read(&dir, "reliability.svg");
        assert_svg_document(&svg);
        assert!(!svg.contains("zoomed"));

        input.reliability[0].1[0] = ReliabilityBin {
            mean_prediction: 0.03,
            observed_rate: 0.05,
            weight: 1.0,
        };
        let (dir, _) = write(&input);
        let svg = read(&dir, "reliability.svg");
        assert!(svg.contains("(both axes zoomed to 0–6%)"));
    }

    #[test]
    fn long_curves_are_thinned() {
        let mut input = empty_input();
        // The size of the AUC histogram behind a streaming ROC curve.
        let points: Vec<(f64, f64)> = (0..=65_536)
            .map(|i| {
                let fpr = f64::from(i) / 65_536.0;
                (fpr, fpr.sqrt())
            })
            .collect();
        input.roc = vec![Curve {
            label: "all products".into(),
            points,
        }];
        let (dir, _) = write(&input);
        let len = read(&dir, "roc.svg").len();
        assert!(len < 60_000, "roc.svg is {len} bytes");
    }

    #[test]
    fn axis_upper_is_a_round_number_above_the_data() {
        assert_eq!(axis_upper(0.09), 0.1);
        assert_eq!(axis_upper(0.03), 0.04);
        assert_eq!(axis_upper(0.27), 0.3);
        assert_eq!(axis_upper(0.02), 0.025);
        assert_eq!(axis_upper(0.004), 0.005);
        assert_eq!(axis_upper(0.6), 1.0);
        assert_eq!(axis_upper(0.0), 1.0);
        assert_eq!(axis_upper(f64::NAN), 1.0);
        assert_eq!(percent_decimals(0.1), 0);
        assert_eq!(percent_decimals(0.025), 1);
        assert_eq!(percent(0.01, 1), "1%");
        assert_eq!(percent(0.015, 1), "1.5%");
        assert_eq!(percent(0.2, 0), "20%");
    }

    #[test]
    fn weights_and_shares_format_for_reading() {
        assert_eq!(format_weight(1_234_567.0), "1,234,567");
        assert_eq!(format_weight(-1234.0), "-1,234");
        assert_eq!(format_weight(999.0), "999");
        assert_eq!(format_weight(1234.56), "1,234.6");
        assert_eq!(format_weight(0.0), "0");
        assert_eq!(format_share(0.0), "0%");
        assert_eq!(format_share(0.0004), "<0.1%");
        assert_eq!(format_share(0.043), "4.3%");
        assert_eq!(format_share(0.62), "62%");
    }

    /// Twelve products with long names: the crowded end of what the layout
    /// is meant for.
    fn crowded_input() -> ReportInput {
        let names: Vec<String> = (0..12)
            .map(|i| match i {
                0 => "All products".to_string(),
                3 => "Premium Family with Kids Add-on & Hi-Fi".to_string(),
                _ => format!("Bundle «{i}» Premium Family"),
            })
            .collect();
        let mut input = realistic_input();
        input.reliability = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let base = 0.005 + 0.01 * i as f64;
                (name.clone(), reliability_bins(base, 0.3, i))
            })
            .collect();
        input.roc = names
            .iter()
            .enumerate()
            .map(|(i, name)| Curve {
                label: format!("{name} (AUC {:.3})", 0.7 + 0.02 * i as f64),
                points: roc_points(0.7 + 0.02 * i as f64),
            })
            .collect();
        input.gains = input.roc.clone();
        let n = names.len() - 1;
        input.confusion = Some(Confusion {
            labels: names[1..].to_vec(),
            counts: (0..n)
                .map(|r| {
                    (0..n)
                        .map(|c| if r == c { 1000.0 } else { 10.0 * c as f64 })
                        .collect()
                })
                .collect(),
        });
        input
    }

    #[test]
    fn crowded_legends_move_beside_the_plot() {
        let input = crowded_input();
        let (dir, _) = write(&input);
        for file in ["roc.svg", "gains.svg"] {
            let svg = read(&dir, file);
            assert_svg_document(&svg);
            assert!(
                !svg.starts_with("<svg width=\"680\""),
                "{file} has no side legend"
            );
            for curve in &input.roc {
                assert!(
                    svg.contains(&svg_text(&curve.label)),
                    "{file} lacks {:?}",
                    curve.label
                );
            }
        }
        // Over-long names are cut in the plot, kept whole in the table.
        let long = "Premium Family with Kids Add-on &amp; Hi-Fi";
        assert!(!read(&dir, "confusion.svg").contains(long));
        assert!(read(&dir, "report.html").contains(long));
    }
}
