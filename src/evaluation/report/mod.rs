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

mod charts;
mod document;
mod html;
mod input;
mod markdown;

pub use crate::error::ReportError;
use document::{Element, elements};
use html::html;
pub use input::{Confusion, Curve, ReportInput, ReportTable};
use markdown::markdown;
use std::path::{Path, PathBuf};

/// One bin of a reliability diagram: the bins
/// [`BinaryMetrics::reliability`](crate::evaluation::metrics::BinaryMetrics::reliability)
/// gives. Bins with weight 0 (or non-finite fields) are skipped.
pub use crate::evaluation::metrics::CalibrationBin as ReliabilityBin;

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

#[cfg(test)]
mod tests {
    use super::charts::*;

    use super::html::*;
    use super::input::*;
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
