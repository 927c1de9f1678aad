//! `report.html`: self-contained, the SVG plots inline.

use super::document::{Element, numeric_columns, rectangular};
use std::fmt::Write as _;

pub(super) const CSS: &str = "\
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

pub(super) fn html(title: &str, blocks: &[Element<'_>]) -> String {
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
pub(super) fn inline_svg(svg: &str) -> String {
    let svg = match svg.find("?>") {
        Some(end) if svg.trim_start().starts_with("<?xml") => &svg[end + 2..],
        _ => svg,
    };
    svg.trim()
        .replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

pub(super) fn html_escape(text: &str) -> String {
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
