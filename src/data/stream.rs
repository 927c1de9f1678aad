//! Training data larger than memory: shards read in a seeded random order
//! each epoch, rows mixed through a shuffle buffer, batches handed to the
//! training loop by a reader thread so that reading overlaps compute.
//!
//! Memory is bounded by the shuffle buffer, a few batches in flight and the
//! polars reader's own buffers, whatever the number of rows. The
//! preprocessing is fitted first, in one streaming pass over every shard or
//! on a seeded sample of them ([`fit`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use chacha20::ChaCha8Rng;
use polars::prelude::*;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use super::shard::{BATCH_ROWS, for_each_checked_batch};
use super::{Batch, DataError, Fitter, LoadReport, Table, source};
use crate::config::{ColumnRole, Config};
use crate::preprocess::Preprocessor;
use crate::{Error, Result};

/// Batches queued between the reader thread and the training loop: enough
/// to absorb a slow read, few enough to keep memory flat.
const IN_FLIGHT: usize = 4;

/// What the fitting pass learnt besides the preprocessing.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub preprocessor: Preprocessor,
    /// Training rows per epoch: counted when every shard was read, estimated
    /// from the shards' row counts when the fit used a sample.
    pub rows: usize,
    /// Rows read and dropped by the pass.
    pub report: LoadReport,
    /// The factor that brings the inverse-propensity weights to the row
    /// weights' sum (see [`crate::train::ipw_scale`]), when `train.ipw`.
    pub ipw_scale: Option<f64>,
}

/// Fits the preprocessing on `files` in one streaming pass (or on the first
/// `data.fit_rows` rows of the shards in a seeded random order), checking
/// every file's columns before reading any rows, and applying the same
/// checks as loading into memory: bad values, the share of unusable rows,
/// feature columns that are null everywhere.
pub fn fit(config: &Config, source: &Path, files: &[PathBuf]) -> Result<Fitted> {
    for file in files {
        let schema = source::schema(file)?;
        super::check_schema(file, &schema, config)?;
        source::check_ragged(file)?;
    }
    let sample = config.data.fit_rows;
    let mut order = files.to_vec();
    if sample > 0 {
        order.shuffle(&mut rng(config.seed, 0));
    }
    let names = column_names(config);
    let mut fitter = Fitter::new(config);
    let mut report = LoadReport::default();
    let mut ipw = IpwSums::default();
    let mut non_null = vec![0usize; feature_columns(config).len()];
    'files: for file in &order {
        report.files += 1;
        let mut first_row = 0;
        for_each_checked_batch(file, &names, BATCH_ROWS, |raw| {
            if sample > 0 && report.rows_used as u64 >= sample {
                return Ok(());
            }
            let (frame, dropped) = super::table::canonical_chunk(file, &raw, first_row, config)?;
            first_row += raw.height();
            report.rows_read += raw.height();
            report.rows_used += frame.height();
            for (reason, n) in dropped {
                *report.dropped.entry(reason).or_default() += n;
            }
            for (count, name) in non_null.iter_mut().zip(feature_columns(config)) {
                let column = frame.column(name).map_err(polars(file))?;
                *count += column.len() - column.null_count();
            }
            if config.train.ipw {
                ipw.add(&frame, config).map_err(polars(file))?;
            }
            fitter.update(&Table {
                frame,
                source: file.clone(),
                report: LoadReport::default(),
            })?;
            Ok(())
        })?;
        if sample > 0 && report.rows_used as u64 >= sample {
            break 'files;
        }
    }
    super::table::check_invalid(source, &report, config)?;
    if report.rows_used == 0 {
        return Err(DataError::Empty {
            path: source.to_path_buf(),
        }
        .into());
    }
    for (count, (column, role)) in non_null.iter().zip(feature_roles(config)) {
        if *count == 0 {
            return Err(DataError::AllNull {
                path: source.to_path_buf(),
                column: column.to_string(),
                role: role.key(),
            }
            .into());
        }
    }
    // A sample that filled up may have left rows unread.
    let read_all = sample == 0 || (report.rows_used as u64) < sample;
    let rows = if read_all {
        report.rows_used
    } else {
        // Unread shards are assumed to drop rows at the sample's rate.
        let mut total = 0;
        for file in files {
            total += super::shard::row_count(file)?;
        }
        let kept = report.rows_used as f64 / report.rows_read.max(1) as f64;
        (total as f64 * kept).round() as usize
    };
    Ok(Fitted {
        preprocessor: fitter.finish(),
        rows,
        report,
        ipw_scale: config.train.ipw.then(|| ipw.scale()),
    })
}

/// Training rows streamed from shards, epoch by epoch.
pub struct Stream<'a> {
    config: &'a Config,
    source: PathBuf,
    files: Vec<PathBuf>,
    fitted: Fitted,
}

impl<'a> Stream<'a> {
    /// The shards `files` of `source`, with what [`fit`] learnt from them.
    pub fn new(config: &'a Config, source: &Path, files: Vec<PathBuf>, fitted: Fitted) -> Self {
        Stream {
            config,
            source: source.to_path_buf(),
            files,
            fitted,
        }
    }

    pub fn preprocessor(&self) -> &Preprocessor {
        &self.fitted.preprocessor
    }

    /// Rows per epoch (exact after a full fitting pass, else estimated).
    pub fn rows(&self) -> usize {
        self.fitted.rows
    }

    pub fn ipw_scale(&self) -> Option<f64> {
        self.fitted.ipw_scale
    }

    /// Streams one epoch in batches of `batch_size` rows (the last may be
    /// smaller) to `consume`, which runs on the calling thread while a
    /// reader thread reads, checks, transforms and shuffles the next ones.
    /// The order depends only on the seed, the epoch and the data, so a
    /// resumed run sees the same batches. Returns the rows streamed.
    pub fn epoch(
        &self,
        epoch: usize,
        batch_size: usize,
        consume: &mut dyn FnMut(Batch) -> Result<()>,
    ) -> Result<usize> {
        let (send, receive) = sync_channel::<Batch>(IN_FLIGHT);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                self.read_epoch(epoch, batch_size, &mut |batch| {
                    // A closed channel means the training loop stopped early
                    // (an error there); the reader just stops too.
                    send.send(batch).map_err(|_| Error::Stopped)
                })
            });
            let mut outcome = Ok(0);
            for batch in receive.iter() {
                let rows = batch.features.rows;
                if let Err(e) = consume(batch) {
                    outcome = Err(e);
                    break;
                }
                if let Ok(total) = &mut outcome {
                    *total += rows;
                }
            }
            drop(receive);
            let read = reader.join().expect("the shard reader does not panic");
            let rows = outcome?;
            read?;
            Ok(rows)
        })
    }

    fn read_epoch(
        &self,
        epoch: usize,
        batch_size: usize,
        emit: &mut dyn FnMut(Batch) -> Result<()>,
    ) -> Result<()> {
        let config = self.config;
        let mut rng = rng(config.seed, epoch as u64);
        let mut files = self.files.clone();
        files.shuffle(&mut rng);
        let mut buffer = ShuffleBuffer::new(config.data.shuffle_buffer, batch_size, rng);
        let names = column_names(config);
        let mut report = LoadReport::default();
        for file in &files {
            let mut first_row = 0;
            for_each_checked_batch(file, &names, BATCH_ROWS, |raw| {
                let (frame, dropped) =
                    super::table::canonical_chunk(file, &raw, first_row, config)?;
                first_row += raw.height();
                report.rows_read += raw.height();
                for (reason, n) in dropped {
                    *report.dropped.entry(reason).or_default() += n;
                }
                let features = super::features(self.preprocessor(), &frame);
                let targets = super::targets(self.preprocessor(), &config.columns, &frame);
                let batch = Batch {
                    features: features.map_err(polars(file))?,
                    targets: targets.map_err(polars(file))?,
                };
                buffer.push(&batch, emit)
            })?;
        }
        // Shards the fit did not read (a sampled fit) are checked here.
        report.rows_used = report.rows_read - report.dropped.values().sum::<usize>();
        super::table::check_invalid(&self.source, &report, config)?;
        buffer.finish(emit)
    }
}

/// A shuffle buffer of `capacity` rows, as in tf.data: once full, each
/// incoming row takes the place of a uniformly chosen held row, which goes
/// out. The output depends on the order of the rows and the seed, not on
/// how they were cut into batches. Capacity 0 passes rows through.
pub struct ShuffleBuffer {
    capacity: usize,
    batch_size: usize,
    held: Batch,
    out: Batch,
    rng: ChaCha8Rng,
}

impl ShuffleBuffer {
    pub fn new(capacity: usize, batch_size: usize, rng: ChaCha8Rng) -> Self {
        ShuffleBuffer {
            capacity,
            batch_size: batch_size.max(1),
            held: Batch::default(),
            out: Batch::default(),
            rng,
        }
    }

    /// Takes in `incoming`'s rows, emitting every full batch.
    pub fn push(
        &mut self,
        incoming: &Batch,
        emit: &mut dyn FnMut(Batch) -> Result<()>,
    ) -> Result<()> {
        for row in 0..incoming.features.rows {
            if self.held.features.rows < self.capacity {
                copy_row(&mut self.held, None, incoming, row);
                continue;
            }
            if self.capacity == 0 {
                copy_row(&mut self.out, None, incoming, row);
            } else {
                let slot = self.rng.random_range(0..self.capacity);
                copy_row(&mut self.out, None, &self.held, slot);
                copy_row(&mut self.held, Some(slot), incoming, row);
            }
            if self.out.features.rows == self.batch_size {
                emit(std::mem::take(&mut self.out))?;
            }
        }
        Ok(())
    }

    /// Emits the held rows in random order, then the last, partial batch.
    pub fn finish(mut self, emit: &mut dyn FnMut(Batch) -> Result<()>) -> Result<()> {
        let mut order: Vec<usize> = (0..self.held.features.rows).collect();
        order.shuffle(&mut self.rng);
        for slot in order {
            copy_row(&mut self.out, None, &self.held, slot);
            if self.out.features.rows == self.batch_size {
                emit(std::mem::take(&mut self.out))?;
            }
        }
        if self.out.features.rows > 0 {
            emit(self.out)?;
        }
        Ok(())
    }
}

/// Copies row `row` of `src` to the end of `dst` (`at` = None) or over row
/// `at` of `dst`.
fn copy_row(dst: &mut Batch, at: Option<usize>, src: &Batch, row: usize) {
    fn one<T: Copy>(dst: &mut Vec<T>, at: Option<usize>, src: &[T], rows: usize, row: usize) {
        if src.is_empty() {
            return;
        }
        let width = src.len() / rows;
        let values = &src[row * width..(row + 1) * width];
        match at {
            None => dst.extend_from_slice(values),
            Some(at) => dst[at * width..(at + 1) * width].copy_from_slice(values),
        }
    }
    let rows = src.features.rows;
    let (f, s) = (&mut dst.features, &src.features);
    one(&mut f.numeric, at, &s.numeric, rows, row);
    one(&mut f.embedded, at, &s.embedded, rows, row);
    one(&mut f.offer, at, &s.offer, rows, row);
    one(&mut f.context, at, &s.context, rows, row);
    let (t, s) = (&mut dst.targets, &src.targets);
    one(&mut t.converted, at, &s.converted, rows, row);
    one(&mut t.plan, at, &s.plan, rows, row);
    one(&mut t.weight, at, &s.weight, rows, row);
    one(&mut t.propensity, at, &s.propensity, rows, row);
    one(&mut t.value, at, &s.value, rows, row);
    if at.is_none() {
        f.rows += 1;
    }
}

/// The random stream of one epoch's shard order and shuffle (epoch 0: the
/// fitting sample): independent of the other epochs, so that a resumed
/// epoch needs no replay.
fn rng(seed: u64, epoch: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    rng
}

/// Sums for the inverse-propensity weights' normalisation.
#[derive(Default)]
struct IpwSums {
    weights: f64,
    raw: f64,
}

impl IpwSums {
    fn add(&mut self, frame: &DataFrame, config: &Config) -> PolarsResult<()> {
        let columns = &config.columns;
        let propensity = frame
            .column(
                columns
                    .propensity
                    .as_deref()
                    .expect("validated: ipw needs a propensity"),
            )?
            .f64()?
            .clone();
        let weights: Vec<f64> = match &columns.weight {
            Some(name) => frame
                .column(name)?
                .f64()?
                .iter()
                .map(|w| w.unwrap_or(0.0))
                .collect(),
            None => vec![1.0; frame.height()],
        };
        let clip = config.train.ipw_clip;
        for (w, p) in weights.iter().zip(propensity.iter()) {
            let p = p.expect("null propensities are dropped");
            // The same f32 values as the in-memory path's.
            let (w, p) = (f64::from(*w as f32), f64::from(p as f32));
            self.weights += w;
            self.raw += w * (1.0 / p).min(clip);
        }
        Ok(())
    }

    fn scale(&self) -> f64 {
        self.weights / self.raw.max(f64::MIN_POSITIVE)
    }
}

fn column_names(config: &Config) -> Vec<&str> {
    config.columns.roles().iter().map(|(c, _)| *c).collect()
}

/// The feature columns, which must not be null in every row.
fn feature_roles(config: &Config) -> Vec<(&str, ColumnRole)> {
    config
        .columns
        .roles()
        .into_iter()
        .filter(|(_, role)| super::table::is_feature(*role))
        .collect()
}

fn feature_columns(config: &Config) -> Vec<&str> {
    feature_roles(config).into_iter().map(|(c, _)| c).collect()
}

fn polars(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |source| {
        Error::from(DataError::Polars {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{Features, Targets};

    /// Rows `start..end`, each identified by its numeric value.
    fn rows(start: usize, end: usize) -> Batch {
        let ids: Vec<f32> = (start..end).map(|i| i as f32).collect();
        Batch {
            features: Features {
                rows: ids.len(),
                numeric: ids.iter().flat_map(|&i| [i, -i]).collect(),
                embedded: ids.iter().map(|&i| i as u32).collect(),
                ..Features::default()
            },
            targets: Targets {
                converted: ids.clone(),
                plan: ids.iter().map(|&i| i as i32).collect(),
                weight: ids,
                ..Targets::default()
            },
        }
    }

    /// Streams rows 0..n cut into pieces of `piece` rows; returns the row
    /// ids in output order and the batch sizes, checking that every array
    /// of a row moved together.
    fn shuffle(n: usize, piece: usize, capacity: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
        let mut buffer = ShuffleBuffer::new(capacity, 100, ChaCha8Rng::seed_from_u64(seed));
        let (mut order, mut sizes) = (Vec::new(), Vec::new());
        let mut emit = |batch: Batch| {
            sizes.push(batch.features.rows);
            for r in 0..batch.features.rows {
                let id = batch.features.numeric[2 * r];
                assert_eq!(batch.features.numeric[2 * r + 1], -id);
                assert_eq!(batch.features.embedded[r], id as u32);
                assert_eq!(batch.targets.plan[r], id as i32);
                assert_eq!(batch.targets.weight[r], id);
                order.push(id as usize);
            }
            Ok(())
        };
        for start in (0..n).step_by(piece) {
            buffer
                .push(&rows(start, (start + piece).min(n)), &mut emit)
                .unwrap();
        }
        buffer.finish(&mut emit).unwrap();
        (order, sizes)
    }

    #[test]
    fn every_row_comes_out_once_whatever_the_pieces() {
        let (order, sizes) = shuffle(1_050, 64, 300, 7);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1_050).collect::<Vec<_>>());
        assert_eq!(sizes, [vec![100; 10], vec![50]].concat());
        assert_ne!(order, sorted, "shuffled");
        // The output depends on the rows and the seed, not on the pieces.
        assert_eq!(shuffle(1_050, 1_000, 300, 7).0, order);
        assert_eq!(shuffle(1_050, 1, 300, 7).0, order);
        assert_ne!(shuffle(1_050, 64, 300, 8).0, order);
    }

    #[test]
    fn the_buffer_bounds_how_far_rows_move_early() {
        // Before the input ends, the k-th row out was among the first
        // capacity + k rows in.
        let (order, _) = shuffle(5_000, 128, 200, 1);
        for (k, &id) in order[..5_000 - 200].iter().enumerate() {
            assert!(id < 200 + k + 1, "row {id} out at {k}");
        }
        // Capacity 0 passes rows through in order.
        assert_eq!(shuffle(500, 64, 0, 1).0, (0..500).collect::<Vec<_>>());
    }
}
