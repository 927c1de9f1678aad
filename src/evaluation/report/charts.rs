//! The SVG plots: reliability diagrams, ROC and gains curves, and the plan
//! confusion matrix, drawn with plotters' SVG backend and no font backend.
//! One file for the three plots: they share the palette, the guessed text
//! widths and the axis helpers.

use super::input::{Confusion, Curve, confusion_count, format_weight};
use crate::error::ReportError;
use crate::evaluation::metrics::CalibrationBin as ReliabilityBin;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::error::Error as StdError;

pub(super) type DrawResult<T> = Result<T, Box<dyn StdError>>;

/// plotters' SVG backend writes `font-size = size / 1.24`, so 15 renders at
/// about 12 px.
pub(super) const FONT: &str = "sans-serif";

pub(super) const TITLE_SIZE: f64 = 24.0;

pub(super) const DESC_SIZE: f64 = 18.0;

pub(super) const TICK_SIZE: f64 = 15.0;

pub(super) const LEGEND_SIZE: f64 = 15.0;

/// Pixels reserved per character of a rendered label at `TICK_SIZE`: wide
/// fonts such as DejaVu Sans average about 0.6 em.
pub(super) const CHAR_PX: u32 = 7;

/// Tableau's category colours without its grey, which the diagonals use.
pub(super) const PALETTE: [RGBColor; 9] = [
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

pub(super) const DIAGONAL: RGBColor = RGBColor(150, 150, 150);

pub(super) const HEAT: RGBColor = RGBColor(8, 81, 156);

/// The first entry is the overall one: black, so it reads as the reference.
pub(super) fn colour(index: usize) -> RGBColor {
    match index {
        0 => BLACK,
        i => PALETTE[(i - 1) % PALETTE.len()],
    }
}

pub(super) fn stroke(index: usize) -> ShapeStyle {
    colour(index).stroke_width(if index == 0 { 3 } else { 2 })
}

/// Draws into a string with `draw` and maps plotters' errors to `plot`.
pub(super) fn render(
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
pub(super) fn thin(points: &[(f64, f64)], tol: f64) -> Vec<(f64, f64)> {
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
pub(super) fn label(
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
pub(super) struct CurvePlot {
    plot: &'static str,
    title: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    diagonal: &'static str,
    percent: bool,
}

pub(super) const ROC: CurvePlot = CurvePlot {
    plot: "roc",
    title: "ROC curves",
    x_desc: "False positive rate",
    y_desc: "True positive rate",
    diagonal: "chance",
    percent: false,
};

pub(super) const GAINS: CurvePlot = CurvePlot {
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
pub(super) const INSET_LEGEND_ENTRIES: usize = 10;

pub(super) const INSET_LEGEND_CHARS: usize = 40;

/// Width of the square-ish plot area of the ROC and gains figures.
pub(super) const CURVES_SIZE: (u32, u32) = (680, 600);

/// Products past the palette's first cycle are drawn dashed, so colours can
/// repeat without two curves looking the same.
pub(super) fn dashed(index: usize) -> bool {
    index > 0 && ((index - 1) / PALETTE.len()) % 2 == 1
}

/// A legend entry: text, line style, dashed or not.
pub(super) type LegendEntry = (String, ShapeStyle, bool);

/// None when no curve has a point to draw.
pub(super) fn curves_svg(
    spec: &CurvePlot,
    curves: &[Curve],
) -> Result<Option<String>, ReportError> {
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

pub(super) fn draw_curves(
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
pub(super) fn legend_line<DB: DrawingBackend>(
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

pub(super) const PANEL: (u32, u32) = (300, 290);

/// The bins worth drawing, sorted by mean prediction.
pub(super) fn valid_bins(bins: &[ReliabilityBin]) -> Vec<&ReliabilityBin> {
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
pub(super) fn axis_upper(max: f64) -> f64 {
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
pub(super) fn percent_decimals(upper: f64) -> usize {
    let step = upper * 100.0 / 5.0;
    if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    }
}

/// `share` as a percentage with up to `decimals` decimals, trailing zeros
/// dropped ("1%" and "1.5%" on the same axis, not "1.0%").
pub(super) fn percent(share: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, share * 100.0);
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}%")
}

/// One panel: its label, drawable bins and axis end.
pub(super) struct Panel<'a> {
    name: &'a str,
    bins: Vec<&'a ReliabilityBin>,
    upper: f64,
}

pub(super) fn reliability_svg(
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

pub(super) fn draw_reliability(
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
pub(super) const MAX_LABEL_CHARS: usize = 32;

/// `text` cut to at most `max` characters, an ellipsis marking the cut.
pub(super) fn shorten(text: &str, max: usize) -> String {
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
pub(super) struct ConfusionLayout {
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
pub(super) const MIN_CONFUSION_WIDTH: u32 = 620;

pub(super) fn confusion_svg(confusion: &Confusion) -> Result<String, ReportError> {
    let layout = ConfusionLayout::new(confusion);
    render("confusion", layout.size, |root| {
        draw_confusion(root, confusion, &layout)
    })
}

/// A row share as a cell label: whole percent, or one decimal below 10% so
/// small shares do not all read "0%".
pub(super) fn format_share(share: f64) -> String {
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

pub(super) fn mix(share: f64) -> RGBColor {
    let t = share.clamp(0.0, 1.0);
    let channel = |c: u8| (255.0 + (f64::from(c) - 255.0) * t).round() as u8;
    RGBColor(channel(HEAT.0), channel(HEAT.1), channel(HEAT.2))
}

pub(super) fn draw_confusion(
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
