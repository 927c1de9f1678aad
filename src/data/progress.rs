//! Progress of the long batch commands (synth, score, recommend, eval,
//! ope): a spinner with the rows done and the rate on a terminal; otherwise
//! (a pod, a sweep, `nohup`) a log line every ten seconds and one at the
//! end, through `tracing`, so that a run no one watches still shows it is
//! alive.

use std::time::{Duration, Instant};

/// How often a run without a terminal logs its progress.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Rows done by one command.
pub struct Progress {
    what: &'static str,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    logged: Instant,
    rows: u64,
}

impl Progress {
    /// Progress of `what` (the command's name, as logged).
    pub fn new(what: &'static str) -> Progress {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} {spinner} {msg}: {human_pos} rows, {per_sec}",
                )
                .expect("a valid template"),
            );
            bar.set_message(what);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            what,
            bar,
            started: now,
            logged: now,
            rows: 0,
        }
    }

    /// Counts `rows` more rows done.
    pub fn add(&mut self, rows: usize) {
        self.rows += rows as u64;
        match &self.bar {
            Some(bar) => bar.set_position(self.rows),
            None if self.logged.elapsed() >= LOG_EVERY => {
                self.logged = Instant::now();
                self.log("in progress");
            }
            None => {}
        }
    }

    /// Ends the display; without a terminal, logs the totals.
    pub fn finish(self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => self.log("done"),
        }
    }

    fn log(&self, message: &'static str) {
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(
            target: "upsell::progress",
            command = self.what,
            rows = self.rows,
            seconds,
            rows_per_sec = self.rows as f64 / seconds.max(1e-9),
            "{message}"
        );
    }
}
