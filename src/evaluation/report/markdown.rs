//! `report.md`.

use super::document::{Element, numeric_columns, rectangular};
use std::fmt::Write as _;

pub(super) fn markdown(title: &str, blocks: &[Element<'_>]) -> String {
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

pub(super) fn md_row(md: &mut String, cells: &[String]) {
    let cells: Vec<String> = cells.iter().map(|c| md_escape(c)).collect();
    let _ = writeln!(md, "| {} |", cells.join(" | "));
}

/// Escapes the characters that would change Markdown's meaning (`|` would
/// split a table cell, `*` and `_` start emphasis) and flattens newlines,
/// which would end a table row.
pub(super) fn md_escape(text: &str) -> String {
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
