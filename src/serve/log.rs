//! The server's decision log (`upsell serve --log-decisions FILE`): every
//! decision of `/v1/recommend` appended as an exposure row to a CSV file, in
//! the columns and order `upsell recommend --exposures` writes, so that once
//! the outcomes are joined `train`, `eval` and `ope` read it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value as Json};

use crate::Scorer;
use crate::config::PolicyConfig;
use crate::policy::Decision;
use crate::{Error, Result};

/// An append-only CSV of exposure rows. The header is fixed when the server
/// starts; an existing file must have the same one.
pub struct DecisionLog {
    path: PathBuf,
    file: Mutex<File>,
    /// Feature and rule columns read from each user.
    features: Vec<String>,
    context: Vec<String>,
    with_holdout: bool,
    /// The offer value a "no offer" decision is logged as
    /// (`columns.no_offer`; empty without it).
    no_offer: String,
}

impl DecisionLog {
    /// Opens (or creates) the log for the model serving now: its scorer and
    /// policy.
    pub fn open(path: &Path, scorer: &Scorer, policy: &PolicyConfig) -> Result<DecisionLog> {
        let pre = &scorer.manifest().preprocessor;
        let columns = scorer.manifest().saved_config(&[])?.columns;
        let context: Vec<String> = pre.context.iter().map(|v| v.column().to_string()).collect();
        let offer = pre.offer.clone().unwrap_or_else(|| "offer".into());
        let mut features: Vec<String> = scorer
            .decision_columns()
            .into_iter()
            .map(str::to_string)
            .collect();
        for column in policy.rule_columns() {
            if !features.iter().any(|c| c == column) {
                features.push(column.to_string());
            }
        }
        let id = columns.id.clone().unwrap_or_else(|| "id".into());
        let with_holdout = policy.holdout > 0.0;
        let mut header: Vec<&str> = features.iter().map(String::as_str).collect();
        header.push(&id);
        header.extend(context.iter().map(String::as_str));
        header.extend([
            offer.as_str(),
            columns.propensity_or_default(),
            columns.time_or_default(),
            "model_version",
        ]);
        if with_holdout {
            header.push("holdout");
        }
        let header = header
            .iter()
            .map(|c| field(c))
            .collect::<Vec<_>>()
            .join(",");
        let existing = match File::open(path) {
            Ok(file) => BufReader::new(file).lines().next().transpose(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        }
        .map_err(|e| Error::io(path, e))?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        match existing {
            None => writeln!(file, "{header}").map_err(|e| Error::io(path, e))?,
            Some(line) if line == header => {}
            Some(line) => {
                return Err(Error::Argument {
                    argument: "--log-decisions",
                    message: format!(
                        "{}: its header ({line}) is not this model's ({header}); log to a new file",
                        path.display()
                    ),
                });
            }
        }
        Ok(DecisionLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            features,
            context,
            with_holdout,
            no_offer: pre.no_offer.clone().unwrap_or_default(),
        })
    }

    /// Appends one row per decision, in one write.
    pub fn append(
        &self,
        users: &[Map<String, Json>],
        decisions: &[Decision],
        version: &str,
    ) -> Result<()> {
        let time = timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        );
        let mut rows = String::new();
        for (user, decision) in users.iter().zip(decisions) {
            let mut cells: Vec<String> = self
                .features
                .iter()
                .map(|c| field(&text(user.get(c)).unwrap_or_default()))
                .collect();
            cells.push(field(decision.id.as_deref().unwrap_or("")));
            for column in &self.context {
                let chosen = decision.context.iter().find(|(c, _)| c == column);
                cells.push(field(chosen.map_or("", |(_, v)| v.as_str())));
            }
            cells.push(field(decision.offer.as_deref().unwrap_or(&self.no_offer)));
            cells.push(decision.propensity.to_string());
            cells.push(time.clone());
            cells.push(field(version));
            if self.with_holdout {
                cells.push(decision.holdout.to_string());
            }
            rows += &cells.join(",");
            rows.push('\n');
        }
        let mut file = self.file.lock().expect("not poisoned");
        file.write_all(rows.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// A JSON value as the text a rule or a log reads: strings as they are,
/// other values as JSON; null and absent are none.
pub(super) fn text(value: Option<&Json>) -> Option<String> {
    match value? {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A CSV field, quoted when it must be.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmm` (UTC, without
/// the zone suffix), as polars writes a datetime to CSV.
fn timestamp(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let mut text = humantime::format_rfc3339_millis(at).to_string();
    text.pop(); // the trailing `Z`
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_fields_are_written_as_polars_reads_them() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000");
        // 2026-01-05T00:01:57.445Z, the synthetic log's first exposure.
        assert_eq!(timestamp(1_767_571_317_445), "2026-01-05T00:01:57.445");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("plain"), "plain");
    }
}
