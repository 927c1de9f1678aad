//! Reading files in parts: every row in file order, batch by batch, or the
//! units of rows that `--shard I/N` deals out to N workers.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use polars::prelude::*;

use super::source;
use crate::error::DataError;
use crate::{Error, Result};

/// Rows per streamed batch: what scoring, evaluation and streamed training
/// hold in memory at a time, a few batches over.
pub const BATCH_ROWS: usize = 65_536;

/// Default rows per shard unit and per decision batch. Caps apply within a
/// batch.
pub const UNIT_ROWS: usize = 65_536;

/// One of N disjoint parts of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole input.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The shard of a Kubernetes Indexed Job, from `JOB_COMPLETION_INDEX`
    /// and `JOB_COMPLETIONS`, when both are set.
    pub fn from_env() -> Option<Result<Shard>> {
        let index = std::env::var("JOB_COMPLETION_INDEX").ok()?;
        let count = std::env::var("JOB_COMPLETIONS").ok()?;
        Some(format!("{index}/{count}").parse())
    }

    /// The output path of this shard: `scores.parquet` becomes
    /// `scores-00002-of-00004.parquet`; the whole input keeps the path.
    /// Refuses to write this shard's `output` (as [`output_path`] names
    /// it) over one of the `inputs` files, ever, or over any existing file
    /// unless `force`: an output replaces its file only when asked to.
    ///
    /// [`output_path`]: Self::output_path
    pub fn check_output(
        &self,
        output: &Path,
        inputs: &[PathBuf],
        force: bool,
        argument: &'static str,
    ) -> crate::Result<()> {
        let path = self.output_path(output);
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if let Some(input) = inputs.iter().find(|input| same(input, &path)) {
            return Err(crate::Error::Argument {
                argument,
                message: format!(
                    "{} is also an input ({}); writing it would replace the rows being read",
                    path.display(),
                    input.display()
                ),
            });
        }
        if path.exists() && !force {
            return Err(crate::Error::Argument {
                argument,
                message: format!(
                    "{} already exists; pass --force to replace it",
                    path.display()
                ),
            });
        }
        Ok(())
    }

    pub fn output_path(&self, output: &Path) -> PathBuf {
        if *self == Shard::ALL {
            return output.to_path_buf();
        }
        let stem = output
            .file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default();
        let name = match output.extension() {
            Some(ext) => format!(
                "{stem}-{:05}-of-{:05}.{}",
                self.index,
                self.count,
                ext.to_string_lossy()
            ),
            None => format!("{stem}-{:05}-of-{:05}", self.index, self.count),
        };
        output.with_file_name(name)
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Shard> {
        let bad = || Error::Argument {
            argument: "--shard",
            message: format!("{s:?}: expected I/N with 0 <= I < N"),
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// Rows in a file, from Parquet metadata or by counting CSV rows.
pub fn row_count(path: &Path) -> Result<usize> {
    let polars = |source| {
        Error::from(DataError::Polars {
            path: path.to_path_buf(),
            source,
        })
    };
    let frame = source::scan(path)?
        .select([len()])
        .collect()
        .map_err(polars)?;
    let count = frame.columns()[0].get(0).map_err(polars)?;
    Ok(count.extract::<u64>().unwrap_or(0) as usize)
}

/// A run of `len` consecutive rows of one file, starting at `offset`: the
/// unit that `--shard I/N` deals out.
pub type Unit = (PathBuf, usize, usize);

/// Splits `files` into units of `unit_rows` rows, in file order, and keeps
/// those of `shard` (every N-th unit from the I-th): the same input and N
/// always give the same split, so shards cover every row exactly once.
pub fn shard_units(files: &[PathBuf], unit_rows: usize, shard: Shard) -> Result<Vec<Unit>> {
    let unit_rows = unit_rows.max(1);
    let mut units = Vec::new();
    for file in files {
        source::check_ragged(file)?;
        let rows = row_count(file)?;
        for offset in (0..rows).step_by(unit_rows) {
            units.push((file.clone(), offset, (rows - offset).min(unit_rows)));
        }
    }
    Ok(units
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % shard.count == shard.index)
        .map(|(_, u)| u)
        .collect())
}

/// Reads the named columns of one unit.
pub fn read_unit((file, offset, len): &Unit, columns: &[&str]) -> Result<DataFrame> {
    let selection: Vec<Expr> = columns.iter().map(|c| col(*c)).collect();
    Ok(source::scan(file)?
        .select(selection)
        .slice(*offset as i64, *len as IdxSize)
        .collect()
        .map_err(source::polars_error(file))?)
}

/// Streams the named columns of a file in batches of about `chunk` rows, in
/// file order, calling `f` on each. Memory stays bounded by a few batches.
pub fn for_each_batch(
    path: &Path,
    columns: &[&str],
    chunk: usize,
    f: impl FnMut(DataFrame) -> Result<()>,
) -> Result<()> {
    source::check_ragged(path)?;
    for_each_checked_batch(path, columns, chunk, f)
}

/// [`for_each_batch`] over a file already checked for ragged rows
/// ([`source::check_ragged`]): a streamed run checks its files once, not
/// at every epoch.
pub(crate) fn for_each_checked_batch(
    path: &Path,
    columns: &[&str],
    chunk: usize,
    mut f: impl FnMut(DataFrame) -> Result<()>,
) -> Result<()> {
    let polars = |source: PolarsError| Error::from(source::polars_error(path)(source));
    let selection: Vec<Expr> = columns.iter().map(|c| col(*c)).collect();
    let (send, receive) = sync_channel::<DataFrame>(2);
    let frame = source::scan(path)?
        .select(selection)
        .sink_batches(
            // Returning true stops the query: the consumer has gone away.
            PlanCallback::new(move |df: DataFrame| Ok(send.send(df).is_err())),
            true,
            NonZeroUsize::new(chunk),
        )
        .map_err(polars)?;
    let runner =
        std::thread::spawn(move || frame.collect_with_engine(Engine::Streaming).map(|_| ()));
    let mut outcome = Ok(());
    for batch in receive.iter() {
        if batch.height() == 0 {
            continue;
        }
        if let Err(e) = f(batch) {
            outcome = Err(e);
            break;
        }
    }
    drop(receive);
    let ran = runner
        .join()
        .expect("the polars query thread does not panic");
    outcome?;
    ran.map_err(polars)
}
