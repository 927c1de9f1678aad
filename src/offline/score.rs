//! Batch scoring of files: stream the input in batches through polars'
//! streaming engine, score each batch, and write the scores in input order
//! to Parquet or CSV, atomically.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use crate::config::ColumnRole;
use crate::data::shard::{BATCH_ROWS, for_each_batch};
use crate::data::{DataError, source};
use crate::preprocess::{Features, Preprocessor};
use crate::scoring::{Scorer, Scores};
use crate::{Error, Result};

/// What [`score_files`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreReport {
    pub files: usize,
    pub rows: usize,
    pub seconds: f64,
    pub rows_per_sec: f64,
    pub output: PathBuf,
}

/// Brings a scoring batch's columns to canonical types and transforms them.
/// Unlike training data, there is no label, and the offer is optional.
pub fn input_features(
    path: &Path,
    pre: &Preprocessor,
    frame: &DataFrame,
    first_row: usize,
) -> Result<Features> {
    let polars = |source: PolarsError| {
        Error::from(DataError::Polars {
            path: path.to_path_buf(),
            source,
        })
    };
    let bad = |column: &str, row: usize, reason: String| {
        Error::from(DataError::BadValue {
            path: path.to_path_buf(),
            column: column.to_string(),
            row: first_row + row + 1,
            reason,
        })
    };
    let mut columns = Vec::new();
    for feature in &pre.numeric {
        let values = frame
            .column(&feature.column)
            .and_then(|c| c.cast(&DataType::Float64))
            .map_err(polars)?;
        for (row, v) in values.f64().map_err(polars)?.iter().enumerate() {
            if let Some(v) = v.filter(|v| !v.is_finite()) {
                return Err(bad(
                    &feature.column,
                    row,
                    format!("{v} is not a finite number"),
                ));
            }
        }
        columns.push(values);
    }
    let text_columns = pre
        .categorical
        .iter()
        .map(|v| v.column())
        .chain(pre.hashed.iter().map(|h| h.column.as_str()))
        .chain(pre.context.iter().map(|v| v.column()));
    for name in text_columns {
        let values = frame
            .column(name)
            .and_then(|c| c.cast(&DataType::String))
            .map_err(polars)?;
        columns.push(values);
    }
    let mut with_offer = false;
    if let Some(offer) = &pre.offer
        && frame.column(offer).is_ok()
    {
        let values = frame
            .column(offer)
            .and_then(|c| c.cast(&DataType::String))
            .map_err(polars)?;
        for (row, v) in values.str().map_err(polars)?.iter().enumerate() {
            match v {
                None => return Err(bad(offer, row, "the offer is null".into())),
                Some(name) if pre.offer_index(name).is_none() => {
                    let names: Vec<&str> = pre
                        .products
                        .iter()
                        .map(|p| p.name.as_str())
                        .chain(pre.no_offer.as_deref())
                        .collect();
                    return Err(bad(
                        offer,
                        row,
                        format!(
                            "{name:?} is not a product of this checkpoint ({})",
                            names.join(", ")
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        columns.push(values);
        with_offer = true;
    }
    let canonical = DataFrame::new(frame.height(), columns).map_err(polars)?;
    let mut pre_view = pre.clone();
    if !with_offer {
        pre_view.offer = None;
    }
    crate::data::check_range(&pre_view, &canonical, path, first_row)?;
    let mut features = crate::data::features(&pre_view, &canonical).map_err(polars)?;
    if !with_offer && pre.offer.is_some() {
        // Scored for every product; the offer index is unused.
        features.offer = vec![0; features.rows];
    }
    Ok(features)
}

/// Output columns of a batch of scores: the id, `p_convert` (the row's own
/// offer, or the only probability of a model without offers),
/// `p_convert__<product>` and `p_plan__<product>`.
fn score_columns(
    scores: &Scores,
    model_has_offer: bool,
    with_offer: bool,
    has_plan: bool,
    id: Option<Column>,
) -> Vec<Column> {
    let mut columns: Vec<Column> = id.into_iter().collect();
    let width = scores.convert_width();
    if !model_has_offer {
        columns.push(Column::new("p_convert".into(), &scores.p_convert));
    } else {
        if with_offer {
            columns.push(Column::new("p_convert".into(), &scores.p_offer));
        }
        for (j, product) in scores.products.iter().enumerate() {
            let values: Vec<f32> = (0..scores.rows)
                .map(|r| scores.p_convert[r * width + j])
                .collect();
            columns.push(Column::new(format!("p_convert__{product}").into(), values));
        }
    }
    if has_plan {
        let plans = scores.products.len();
        for (j, product) in scores.products.iter().enumerate() {
            let values: Vec<f32> = (0..scores.rows)
                .map(|r| scores.p_plan[r * plans + j])
                .collect();
            columns.push(Column::new(format!("p_plan__{product}").into(), values));
        }
    }
    columns
}

/// One output writer per run, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Sink {
    Parquet(polars::io::parquet::write::BatchedWriter<std::fs::File>),
    Csv(polars::io::csv::write::BatchedWriter<std::fs::File>),
}

/// Appends frames to a staging file as Parquet or CSV; the schema comes
/// from the first frame.
pub struct Writer {
    format: source::Format,
    sink: Option<Sink>,
}

impl Writer {
    pub fn new(format: source::Format) -> Writer {
        Writer { format, sink: None }
    }

    /// Appends `frame` to `staging`; `output` names the file in errors.
    pub fn write(
        &mut self,
        staging: &tempfile::NamedTempFile,
        frame: &DataFrame,
        output: &Path,
    ) -> Result<()> {
        let fail = |source| {
            Error::from(DataError::Polars {
                path: output.to_path_buf(),
                source,
            })
        };
        if self.sink.is_none() {
            let handle = staging
                .as_file()
                .try_clone()
                .map_err(|e| Error::io(output, e))?;
            self.sink = Some(match self.format {
                source::Format::Parquet => Sink::Parquet(
                    ParquetWriter::new(handle)
                        .batched(frame.schema())
                        .map_err(fail)?,
                ),
                source::Format::Csv => Sink::Csv(
                    CsvWriter::new(handle)
                        .batched(frame.schema())
                        .map_err(fail)?,
                ),
            });
        }
        match self.sink.as_mut().expect("created above") {
            Sink::Parquet(w) => w.write_batch(frame).map_err(fail),
            Sink::Csv(w) => w.write_batch(frame).map_err(fail),
        }
    }

    /// Completes the file (the Parquet footer); `false` when nothing was
    /// written.
    pub fn finish(self, output: &Path) -> Result<bool> {
        let fail = |source| {
            Error::from(DataError::Polars {
                path: output.to_path_buf(),
                source,
            })
        };
        match self.sink {
            Some(Sink::Parquet(w)) => w.finish().map(|_| true).map_err(fail),
            Some(Sink::Csv(mut w)) => w.finish().map(|_| true).map_err(fail),
            None => Ok(false),
        }
    }
}

/// Moves a complete staging file into place with the usual permissions.
pub fn persist(staging: tempfile::NamedTempFile, output: &Path) -> Result<()> {
    staging
        .as_file()
        .sync_all()
        .map_err(|e| Error::io(output, e))?;
    crate::atomic::make_readable(staging.as_file(), output)?;
    staging
        .persist(output)
        .map_err(|e| Error::io(output, e.error))?;
    let dir = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    crate::atomic::sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Scores every row of `input` (a file, directory or glob) and writes one
/// output row per input row, in input order, to `output` (Parquet or CSV by
/// extension). The output appears only once complete.
pub fn score_files(scorer: &Scorer, input: &Path, output: &Path) -> Result<ScoreReport> {
    score_shard(
        scorer,
        input,
        output,
        crate::data::shard::Shard::ALL,
        crate::data::shard::UNIT_ROWS,
    )
}

/// [`score_files`] for one shard of the input: units of `unit_rows` rows
/// dealt out as by `upsell recommend --shard`, written to the shard's own
/// output (`NAME-0000I-of-0000N.EXT` beside `output`), atomically.
pub fn score_shard(
    scorer: &Scorer,
    input: &Path,
    output: &Path,
    shard: crate::data::shard::Shard,
    unit_rows: usize,
) -> Result<ScoreReport> {
    let started = std::time::Instant::now();
    let output = &shard.output_path(output);
    let format = source::Format::of(output).ok_or_else(|| {
        Error::from(DataError::UnsupportedFormat {
            path: output.to_path_buf(),
        })
    })?;
    let pre = &scorer.manifest().preprocessor;
    let id_column = scorer.manifest().id_column.clone();
    let files = source::resolve(input)?;
    // Every file is checked before anything is scored or written.
    let mut with_offer = None;
    // The id is carried when every file has it.
    let mut carries_id = id_column.is_some();
    for file in &files {
        let schema = source::schema(file)?;
        carries_id &= id_column
            .as_ref()
            .is_some_and(|id| schema.get(id).is_some());
        for name in pre.input_columns() {
            let is_offer = pre.offer.as_deref() == Some(name);
            if !is_offer && schema.get(name).is_none() {
                return Err(DataError::MissingColumn {
                    path: file.clone(),
                    column: name.to_string(),
                    role: "feature",
                    available: format!("{} columns", schema.len()),
                }
                .into());
            }
        }
        // Text in a numeric column is refused, as by eval, not read as null.
        for feature in &pre.numeric {
            if let Some(dtype) = schema.get(&feature.column) {
                crate::data::check_type(file, &feature.column, ColumnRole::Numeric, dtype)?;
            }
        }
        let has_offer = pre
            .offer
            .as_deref()
            .is_some_and(|o| schema.get(o).is_some());
        if *with_offer.get_or_insert(has_offer) != has_offer {
            return Err(DataError::Mismatch {
                path: file.clone(),
                reason: "some input files have the offer column and some do not".into(),
            }
            .into());
        }
    }
    let with_offer = with_offer.unwrap_or(false);
    let mut read: Vec<&str> = pre.input_columns();
    if !with_offer {
        read.retain(|c| Some(*c) != pre.offer.as_deref());
    }
    if carries_id {
        read.push(id_column.as_deref().expect("carries_id"));
    }

    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".upsell-score-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let mut writer = Writer::new(format);
    let mut rows = 0usize;
    let model_has_offer = scorer.manifest().network.has_offer;
    // Without offers, an offer-aware plan head has nothing to say.
    let has_plan =
        scorer.manifest().network.products > 0 && (with_offer || !scorer.plan_needs_offer());
    let mut score_batch = |file: &Path, batch: DataFrame, first_row: usize| -> Result<usize> {
        let features = input_features(file, pre, &batch, first_row)?;
        let scores = scorer.score_features(&features);
        let polars = |source| DataError::Polars {
            path: file.to_path_buf(),
            source,
        };
        let id = carries_id
            .then(|| {
                batch
                    .column(id_column.as_deref().expect("carries_id"))
                    .cloned()
            })
            .transpose()
            .map_err(polars)?;
        let mut columns = score_columns(&scores, model_has_offer, with_offer, has_plan, id);
        // What the user does unoffered, beside what each offer does: the
        // difference is the offer's uplift.
        if let Some(none) = &pre.no_offer
            && scorer.no_offer_index().is_some()
        {
            let (p_none, _) = scorer.score_no_offer(&features);
            columns.push(Column::new(format!("p_convert__{none}").into(), p_none));
        }
        let frame = DataFrame::new(batch.height(), columns).map_err(polars)?;
        writer.write(&staging, &frame, output)?;
        Ok(batch.height())
    };
    let mut progress = crate::data::progress::Progress::new("score");
    if shard == crate::data::shard::Shard::ALL {
        for file in &files {
            let mut file_rows = 0usize;
            for_each_batch(file, &read, BATCH_ROWS, |batch| {
                let done = score_batch(file, batch, file_rows)?;
                file_rows += done;
                progress.add(done);
                Ok(())
            })?;
            rows += file_rows;
        }
    } else {
        for unit in crate::data::shard::shard_units(&files, unit_rows, shard)? {
            let batch = crate::data::shard::read_unit(&unit, &read)?;
            let done = score_batch(&unit.0, batch, unit.1)?;
            rows += done;
            progress.add(done);
        }
        if rows == 0 {
            // More shards than units: this shard's output is empty, with
            // the same columns as the others.
            let first = files.first().expect("resolve returns a file");
            let batch = crate::data::shard::read_unit(&(first.clone(), 0, 0), &read)?;
            score_batch(first, batch, 0)?;
        }
    }
    progress.finish();
    if !writer.finish(output)? {
        return Err(DataError::Empty {
            path: input.to_path_buf(),
        }
        .into());
    }
    persist(staging, output)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(ScoreReport {
        files: files.len(),
        rows,
        seconds,
        rows_per_sec: rows as f64 / seconds,
        output: output.to_path_buf(),
    })
}
