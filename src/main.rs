//! The `upsell` command line: parses arguments, calls the library, prints the
//! error once and maps it to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use upsell::Config;
use upsell::data::synth;

#[derive(Parser)]
#[command(
    name = "upsell",
    version,
    about = "Decide which paid product to offer each user, and how likely they are to buy it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr (serve's requests; train's epochs when stderr is
    /// not a terminal) as text or as JSON objects, one per line. `RUST_LOG`
    /// sets the level, e.g. `warn`, or `info,upsell::request=warn` to drop
    /// serve's request lines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "UPSELL_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Write a synthetic exposure log (Parquet), its config and its ground truth.
    Synth(SynthArgs),
    /// Print the resolved config: the file, overrides applied, defaults filled in.
    Config(ConfigArgs),
    /// Load, check, split, fit and transform the data; print a JSON report.
    Prepare(PrepareArgs),
    /// Train a model and export a checkpoint; prints the final metrics as one JSON line.
    Train(TrainArgs),
    /// Score a Parquet or CSV file with a checkpoint.
    Score(ScoreArgs),
    /// Print a checkpoint's manifest in readable form.
    Inspect(InspectArgs),
    /// Decide an offer (and context) for every input row with the checkpoint's policy.
    Recommend(RecommendArgs),
    /// Serve a checkpoint over HTTP: KServe v2, /v1/recommend, /metrics.
    Serve(ServeArgs),
    /// Evaluate a checkpoint on labelled data: metrics as JSON, optionally a report with plots.
    Eval(EvalArgs),
    /// Estimate the value of the checkpoint's policy from logged exposures (IPS, SNIPS, DR).
    Ope(OpeArgs),
    /// Run a hyperparameter sweep: `upsell train` trials as child processes, resumable, with a leaderboard.
    Sweep(SweepArgs),
    /// Measure training, scoring and data throughput against the machine's matrix-multiply rate.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Backends to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "flex,ndarray")]
    backend: Vec<upsell::config::BackendKind>,
    /// Model sizes to measure (comma-separated): small, default, large.
    #[arg(long, value_delimiter = ',', default_value = "small,default,large")]
    size: Vec<upsell::experiment::bench::ModelSize>,
    /// Synthetic training rows per epoch (three epochs run; the last one's rate is reported).
    #[arg(long, default_value_t = 100_000)]
    train_rows: u64,
    /// Training batch sizes to measure (comma-separated); the model trained at the first is the one scored.
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    train_batch: Vec<usize>,
    /// Rows of the end-to-end data preparation and `upsell score` runs.
    #[arg(long, default_value_t = 1_000_000)]
    file_rows: u64,
    /// Single-row scoring calls timed for the latency percentiles.
    #[arg(long, default_value_t = 20_000)]
    latency_calls: usize,
    /// Least seconds spent on each throughput figure.
    #[arg(long, default_value_t = 2.0)]
    min_seconds: f64,
    /// CPU threads (0: every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where temporary data goes.
    #[arg(long, value_name = "DIR", default_value = ".")]
    work: PathBuf,
}

#[derive(Args)]
struct SweepArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    paths: DataArgs,
    /// A swept key and its values, e.g. `--grid train.lr=0.001,0.003`
    /// (TOML values; commas inside [...] stay in a value), or a range for
    /// `--trials`: `uniform(LO,HI)`, `loguniform(LO,HI)`, `int(LO,HI)`,
    /// `logint(LO,HI)`; `choice(V1,...)` is a list. Repeatable: without
    /// `--trials` the trials are the grid's cartesian product.
    #[arg(long = "grid", value_name = "KEY=SPEC", required = true)]
    grid: Vec<String>,
    /// Search: run N trials in all, proposed by `--sampler` from the
    /// trials finished so far. Rerun with a larger N to search further.
    #[arg(long, value_name = "N", conflicts_with = "random")]
    trials: Option<usize>,
    /// How `--trials` proposes: tpe (random for the first third, at most
    /// 10, then tree-structured Parzen estimators) or random.
    #[arg(long, value_enum, default_value = "tpe", requires = "trials")]
    sampler: SamplerArg,
    /// Stop bad trials early: asha (rungs at epochs 1, 3, 9, ...; keep the
    /// top third), asha:MIN_EPOCHS:ETA, median, or median:STARTUP:WARMUP.
    /// Needs a metric best.FIELD.
    #[arg(long, value_name = "PRUNER")]
    prune: Option<upsell::experiment::sweep::Pruner>,
    /// Run N combinations drawn at random from the grid instead of all.
    #[arg(long, value_name = "N")]
    random: Option<usize>,
    /// Seed of `--random` and `--trials`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// With --tracking-uri, the sweep is a parent run and each trial its
    /// child run.
    #[command(flatten)]
    tracking: TrackingArgs,
    /// Trials run at once (each uses `train.threads` threads).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// The sweep directory: trials/, logs/, results/, leaderboard.csv and
    /// leaderboard.md. Rerunning the same command resumes it.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The summary field that ranks trials (dotted path).
    #[arg(long, default_value = "best.valid_loss")]
    metric: String,
    /// min or max (default: min for losses, errors and seconds, else max).
    #[arg(long)]
    goal: Option<upsell::experiment::sweep::Goal>,
    /// The compute backend of every trial, instead of `train.backend`.
    #[arg(long, value_name = "flex|ndarray|wgpu")]
    backend: Option<upsell::config::BackendKind>,
}

/// Where runs are tracked.
#[derive(Args)]
struct TrackingArgs {
    /// Also log to this MLflow tracking server (http(s)://HOST:PORT):
    /// params, metrics per epoch, the report and checkpoint as artifacts.
    /// Credentials, certificates and retries come from MLflow's variables
    /// (MLFLOW_TRACKING_USERNAME/PASSWORD or _TOKEN, ...; see README).
    #[arg(long, value_name = "URI", env = "MLFLOW_TRACKING_URI")]
    tracking_uri: Option<String>,
    /// The MLflow experiment, created if missing.
    #[arg(
        long,
        value_name = "NAME",
        env = "MLFLOW_EXPERIMENT_NAME",
        default_value = "upsell"
    )]
    experiment: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SamplerArg {
    Tpe,
    Random,
}

#[derive(Args)]
struct EvalArgs {
    /// The checkpoint directory.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Labelled rows: a Parquet or CSV file, a directory or a glob.
    #[arg(long, value_name = "PATH")]
    data: PathBuf,
    /// Write the report (report.html, report.md, SVG plots, metrics.json)
    /// into this directory, which must not exist.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Also report metrics per value of this categorical column.
    #[arg(long, value_name = "COLUMN")]
    by: Option<String>,
    /// Ground truth for the same rows (README, "Ground truth"): adds the
    /// greedy policy's true value and share of achievable lift.
    #[arg(long, value_name = "PATH")]
    truth: Option<PathBuf>,
    /// Override the checkpoint's saved config for the decisions, e.g.
    /// `--set policy.contact_cost=0.05`.
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "truth")]
    overrides: Vec<String>,
}

#[derive(Args)]
struct OpeArgs {
    /// The checkpoint directory.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Logged exposures with their propensities (Parquet/CSV, directory or glob).
    #[arg(long, value_name = "PATH")]
    logs: PathBuf,
    /// The policy to evaluate: greedy, epsilon:E or softmax:T (default: the
    /// checkpoint's policy.exploration).
    #[arg(long, value_name = "POLICY")]
    policy: Option<upsell::config::Exploration>,
    /// Cap the importance weights at this value.
    #[arg(long, value_name = "W")]
    clip: Option<f64>,
    /// Bootstrap replicates for the 95% intervals.
    #[arg(long, default_value_t = 200)]
    bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Override the checkpoint's saved config, e.g. `--set policy.contact_cost=0.05`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

/// Every setting can also come from the environment (`UPSELL_...`), as a
/// container passes it; a flag wins over its variable.
#[derive(Args)]
struct ServeArgs {
    /// The checkpoint directory (reloaded on SIGHUP or POST /admin/reload).
    #[arg(long, value_name = "DIR", env = "UPSELL_CHECKPOINT")]
    checkpoint: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "UPSELL_ADDR")]
    addr: std::net::SocketAddr,
    /// The model's name in /v2/models/{name}.
    #[arg(long, default_value = "upsell", env = "UPSELL_MODEL_NAME")]
    name: String,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 8 << 20, env = "UPSELL_MAX_BODY_BYTES")]
    max_body_bytes: usize,
    /// The most rows (users) per request.
    #[arg(long, default_value_t = 4096, env = "UPSELL_MAX_BATCH")]
    max_batch: usize,
    /// The longest a request may take, in milliseconds.
    #[arg(long, default_value_t = 10_000, env = "UPSELL_TIMEOUT_MS")]
    timeout_ms: u64,
    /// Scoring requests handled at once; more get 503 with Retry-After.
    /// Default: two per core.
    #[arg(long, env = "UPSELL_MAX_CONCURRENT")]
    max_concurrent: Option<usize>,
    /// Open connections; more are closed on accept.
    #[arg(long, default_value_t = 1024, env = "UPSELL_MAX_CONNECTIONS")]
    max_connections: usize,
    /// The longest a client may take to send a request's headers, and the
    /// longest a kept-alive connection may stay idle, in milliseconds.
    #[arg(long, default_value_t = 5_000, env = "UPSELL_HEADER_TIMEOUT_MS")]
    header_timeout_ms: u64,
    /// How long SIGTERM waits for requests in flight, in milliseconds.
    #[arg(long, default_value_t = 20_000, env = "UPSELL_SHUTDOWN_TIMEOUT_MS")]
    shutdown_timeout_ms: u64,
    /// The most candidates a /v1/recommend decision may list (`top_k`).
    #[arg(long, default_value_t = 20, env = "UPSELL_MAX_TOP_K")]
    max_top_k: usize,
    /// A file holding the bearer token that turns POST /admin/reload on
    /// (reload over HTTP is off without a token).
    #[arg(long, value_name = "FILE", env = "UPSELL_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// The admin token itself, for platforms that pass secrets as
    /// variables; prefer --admin-token-file, which stays out of `ps`.
    #[arg(
        long,
        env = "UPSELL_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    admin_token: Option<String>,
    /// The directory reloads may load checkpoints from (default: the one
    /// holding --checkpoint).
    #[arg(long, value_name = "DIR", env = "UPSELL_RELOAD_ROOT")]
    reload_root: Option<PathBuf>,
    /// Append every decision of /v1/recommend to this CSV file as an
    /// exposure row (the columns of `recommend --exposures`).
    #[arg(long, value_name = "FILE", env = "UPSELL_LOG_DECISIONS")]
    log_decisions: Option<PathBuf>,
    /// A candidate checkpoint to serve in shadow: it decides every
    /// /v1/recommend request too, and its decisions go to --shadow-log,
    /// never to the client.
    #[arg(
        long,
        value_name = "DIR",
        env = "UPSELL_SHADOW_CHECKPOINT",
        requires = "shadow_log"
    )]
    shadow_checkpoint: Option<PathBuf>,
    /// Where the shadow checkpoint's decisions are appended, as exposure
    /// rows (the columns of `recommend --exposures`).
    #[arg(
        long,
        value_name = "FILE",
        env = "UPSELL_SHADOW_LOG",
        requires = "shadow_checkpoint"
    )]
    shadow_log: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where the experiment config comes from.
#[derive(Args)]
struct ConfigArgs {
    /// The experiment config (TOML). Default: the built-in
    /// configs/default.toml (the synthetic world).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set train.lr=0.003`; TOML value syntax,
    /// bare words are strings. Repeatable; later ones win.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> upsell::Result<Config> {
        self.load_edited(|_| {})
    }

    /// The config with what other flags set applied before it is validated.
    fn load_edited(&self, edit: impl FnOnce(&mut Config)) -> upsell::Result<Config> {
        let config = match &self.config {
            Some(path) => Config::load_edited(path, &self.overrides, edit)?,
            None => Config::builtin_edited(&self.overrides, edit)?,
        };
        Ok(config)
    }
}

/// Data paths that override the config's.
#[derive(Args)]
struct DataArgs {
    /// Training data, instead of `data.train`.
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Validation data, instead of `data.valid`.
    #[arg(long, value_name = "PATH")]
    valid: Option<PathBuf>,
}

impl DataArgs {
    fn apply(&self, config: &mut Config) {
        if let Some(data) = &self.data {
            config.data.train = Some(data.clone());
        }
        if let Some(valid) = &self.valid {
            config.data.valid = Some(valid.clone());
        }
    }

    /// [`apply`](Self::apply), and `--backend` when given.
    fn apply_with(&self, config: &mut Config, backend: Option<upsell::config::BackendKind>) {
        self.apply(config);
        if let Some(backend) = backend {
            config.train.backend = backend;
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    paths: DataArgs,
    /// The run directory (must not exist). Default: the next free
    /// `run-NNN` under `out_dir`.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The compute backend, instead of `train.backend`.
    #[arg(long, value_name = "flex|ndarray|wgpu")]
    backend: Option<upsell::config::BackendKind>,
    /// Print the resolved config before training.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    tracking: TrackingArgs,
    /// Register the uploaded checkpoint as a new version of this model in
    /// MLflow's model registry.
    #[arg(long, value_name = "NAME", requires = "tracking_uri")]
    register_model: Option<String>,
    /// Log the run as a child of this MLflow run (a sweep sets it).
    #[arg(long, value_name = "RUN_ID", env = "UPSELL_MLFLOW_PARENT_RUN")]
    parent_run: Option<String>,
    /// Continue the run in this directory from its last resumable state
    /// (resume.bin), with the config it started with. With a tracking
    /// server, the resumed run is logged as a new MLflow run holding every
    /// epoch, those before the interruption included.
    #[arg(
        long,
        value_name = "RUN_DIR",
        conflicts_with_all = ["config", "overrides", "data", "valid", "out", "backend", "print_config"]
    )]
    resume: Option<PathBuf>,
}

/// A checkpoint applied to rows from files.
#[derive(Args)]
struct BatchArgs {
    /// The checkpoint directory.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Input rows: a Parquet or CSV file, a directory or a glob.
    #[arg(long, value_name = "PATH")]
    input: PathBuf,
    /// Where to write the results (.parquet or .csv); `--shard
    /// I/N` writes `NAME-0000I-of-0000N.EXT` beside it.
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// Replace outputs that already exist (never an input file).
    #[arg(long)]
    force: bool,
}

impl BatchArgs {
    fn scorer(&self) -> upsell::Result<upsell::Scorer> {
        Ok(upsell::Scorer::load(&self.checkpoint)?)
    }

    /// Refuses an output (`--output`, or another output file such as
    /// `--exposures`) that is an input, or that exists without `--force`.
    fn check_output(
        &self,
        shard: upsell::data::shard::Shard,
        output: &std::path::Path,
        argument: &'static str,
    ) -> upsell::Result<()> {
        let inputs = upsell::data::source::resolve(&self.input)?;
        shard.check_output(output, &inputs, self.force, argument)
    }
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    batch: BatchArgs,
    #[command(flatten)]
    shard: ShardArgs,
}

/// Which part of the input this process handles.
#[derive(Args)]
struct ShardArgs {
    /// Process one of N disjoint parts of the input (default: from
    /// JOB_COMPLETION_INDEX/JOB_COMPLETIONS when set, else everything).
    #[arg(long, value_name = "I/N")]
    shard: Option<upsell::data::shard::Shard>,
    /// Rows per shard unit (and, for recommend, per decision batch: caps hold per batch).
    #[arg(long, default_value_t = upsell::data::shard::UNIT_ROWS)]
    unit_rows: usize,
}

impl ShardArgs {
    fn shard(&self) -> upsell::Result<upsell::data::shard::Shard> {
        Ok(match self.shard {
            Some(shard) => shard,
            None => upsell::data::shard::Shard::from_env()
                .transpose()?
                .unwrap_or(upsell::data::shard::Shard::ALL),
        })
    }
}

#[derive(Args)]
struct RecommendArgs {
    #[command(flatten)]
    batch: BatchArgs,
    /// Exploration, instead of `policy.exploration`: greedy, epsilon:E or softmax:T.
    #[arg(long, value_name = "POLICY")]
    policy: Option<upsell::config::Exploration>,
    #[command(flatten)]
    shard: ShardArgs,
    /// Override the checkpoint's saved config, e.g. `--set policy.contact_cost=0.05`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Also log every decision as an exposure row here (.parquet or .csv),
    /// in the format `train`, `eval` and `ope` read once the outcome columns
    /// are joined.
    #[arg(long, value_name = "FILE")]
    exposures: Option<PathBuf>,
    /// Candidates listed in each decision's `candidates` column, best first
    /// (a number at least the candidates' count lists every one); the
    /// choice is made over all of them either way.
    #[arg(long, value_name = "N", default_value_t = upsell::api::DEFAULT_TOP_K)]
    top_k: usize,
}

#[derive(Args)]
struct InspectArgs {
    /// The checkpoint directory.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Print the whole manifest as JSON instead.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SynthArgs {
    /// Number of exposures (rows).
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Seed of the simulated world and of every draw in it.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output directory; must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Rows per Parquet file (shard).
    #[arg(long, default_value_t = 1_000_000)]
    rows_per_file: u64,
    /// Write the ground truth of the first N files only (default: every
    /// file); the truth is about ten times the size of the log.
    #[arg(long, value_name = "N")]
    truth_files: Option<usize>,
    /// The world: default, weak_interactions, noisy, switchers, rare,
    /// regional, price_sensitive or holdout (README, "Synthetic data").
    #[arg(long, default_value = "default")]
    world: String,
    /// Change one of the world's parameters, e.g. `--world-set hidden_sd=0.8`.
    #[arg(long = "world-set", value_name = "KEY=VALUE")]
    world_set: Vec<String>,
}

#[derive(Args)]
struct PrepareArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    paths: DataArgs,
    /// Also write the fitted preprocessing as JSON to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            // Library errors already name their cause; print the message once.
            eprintln!("error: {err}");
            let code = err
                .downcast_ref::<upsell::Error>()
                .map_or(1, upsell::Error::exit_code);
            ExitCode::from(code)
        }
    }
}

/// Training allocates and frees megabyte-sized buffers at every step.
/// glibc's malloc serves those with `mmap` and hands them back (the kernel
/// then zeroes fresh pages on the next one) until its dynamic threshold
/// adapts, which made a 200,000-row run's first epoch take up to 1.6 s
/// against 0.9 s for the others (benches/torch-reference.md). Fixed
/// thresholds keep such buffers on the heap from the first step. The server keeps glibc's defaults, which give
/// memory back after a burst of large requests.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_buffers_on_the_heap() {
    // SAFETY: mallopt only changes allocator parameters, and runs before
    // this process starts any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_buffers_on_the_heap() {}

/// Log lines go to stderr (stdout carries each command's JSON result),
/// at `RUST_LOG`'s level (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Where a run came from, saved beside its config as `run.json`: the
/// command line, upsell's version and the commit it was built from (when
/// built from a git checkout), and when the run started.
fn write_provenance(run_dir: &std::path::Path) -> upsell::Result<()> {
    let provenance = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "version": env!("CARGO_PKG_VERSION"),
        "commit": option_env!("UPSELL_GIT_COMMIT"),
        "started": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    });
    let text = serde_json::to_vec_pretty(&provenance).expect("JSON serialises");
    upsell::atomic::write(&run_dir.join("run.json"), &text)
}

/// Adds when the run ended, and how, to `run.json` (a resumed run's end
/// replaces the interrupted one's). A failure here only warns: the run's
/// own outcome is what the command reports.
fn record_end<T>(run_dir: &std::path::Path, outcome: &upsell::Result<T>) {
    let path = run_dir.join("run.json");
    let Ok(text) = std::fs::read(&path) else {
        return; // A run that failed before it started has no record.
    };
    let Ok(serde_json::Value::Object(mut record)) = serde_json::from_slice(&text) else {
        eprintln!(
            "warning: {}: not a JSON object; its end time is not recorded",
            path.display()
        );
        return;
    };
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    record.insert("ended".into(), now.into());
    let status = if outcome.is_ok() {
        "finished"
    } else {
        "failed"
    };
    record.insert("status".into(), status.into());
    let text = serde_json::to_vec_pretty(&record).expect("JSON serialises");
    if let Err(e) = upsell::atomic::write(&path, &text) {
        eprintln!("warning: {e}");
    }
}

/// One log line per epoch, for runs that no one watches on a terminal
/// (sweeps, pods, `nohup`): the progress bar is hidden there.
fn log_epoch(m: &upsell::train::EpochMetrics) {
    tracing::info!(
        target: "upsell::train",
        epoch = m.epoch,
        seconds = m.seconds,
        rows_per_sec = m.train_rows_per_sec,
        lr = m.lr,
        train_loss = m.train_loss,
        valid_loss = m.valid_loss,
        valid_conversion_loss = m.valid_conversion_loss,
        valid_conversion_auc = m.valid_conversion_auc,
        valid_plan_accuracy = m.valid_plan_accuracy,
        "epoch done"
    );
}

/// `upsell sweep`: checks every trial's config, starts the MLflow parent
/// run when tracking, runs the grid or the search, prints the summary.
fn sweep(args: SweepArgs) -> anyhow::Result<()> {
    use upsell::experiment::sweep;
    // Validate the config and every override once, before any trial.
    let base = args
        .config
        .load_edited(|config| args.paths.apply_with(config, args.backend))?;
    let base_args = sweep::train_args(
        args.config.config.as_deref(),
        args.paths.data.as_deref(),
        args.paths.valid.as_deref(),
        args.backend,
        &args.config.overrides,
    );
    let space = sweep::Space::parse(&args.grid).map_err(upsell::Error::from)?;
    // Trials are named within the resolved base config, so editing the
    // config file reruns them rather than reusing stale results.
    let context = base.to_toml();
    let (trials, search) = match args.trials {
        Some(n) => {
            let sampler = match args.sampler {
                SamplerArg::Tpe => sweep::Sampler::tpe_for(n),
                SamplerArg::Random => sweep::Sampler::Random,
            };
            let search = sweep::Search {
                trials: n,
                sampler,
                seed: args.seed,
                context: context.clone(),
            };
            (Vec::new(), Some(search))
        }
        None => {
            let grid = space.grid().ok_or_else(|| upsell::Error::Argument {
                argument: "--grid",
                message: "a range (uniform, loguniform, int, logint) needs --trials N".into(),
            })?;
            let trials: Vec<_> = sweep::trials(&grid, args.random.map(|n| (n, args.seed)))
                .map_err(upsell::Error::from)?
                .into_iter()
                .map(|trial| trial.within(&context))
                .collect();
            (trials, None)
        }
    };
    // Every trial's config is checked (a misspelt grid key, a value of the
    // wrong type) before any trial starts, rather than found by each failing
    // in turn. A search is checked at each parameter's extremes.
    let probes: Vec<Vec<(String, String)>> = match &search {
        None => trials.iter().map(|t| t.overrides.clone()).collect(),
        Some(_) => {
            let firsts: Vec<(String, String)> = space
                .0
                .iter()
                .map(|(key, param)| (key.clone(), param.probe_values().remove(0)))
                .collect();
            let mut probes = Vec::new();
            for (i, (key, param)) in space.0.iter().enumerate() {
                for value in param.probe_values() {
                    let mut probe = firsts.clone();
                    probe[i] = (key.clone(), value);
                    probes.push(probe);
                }
            }
            probes
        }
    };
    for overrides in &probes {
        let with_trial = ConfigArgs {
            config: args.config.config.clone(),
            overrides: args
                .config
                .overrides
                .iter()
                .cloned()
                .chain(overrides.iter().map(|(k, v)| format!("{k}={v}")))
                .collect(),
        };
        with_trial
            .load_edited(|config| args.paths.apply_with(config, args.backend))
            .map_err(|e| {
                let label: Vec<String> =
                    overrides.iter().map(|(k, v)| format!("{k}={v}")).collect();
                upsell::Error::Argument {
                    argument: "--grid",
                    message: format!("trial {}: {e}", label.join(" ")),
                }
            })?;
    }
    let goal = args
        .goal
        .unwrap_or_else(|| sweep::Goal::for_metric(&args.metric));
    let mut options = sweep::SweepOptions {
        program: std::env::current_exe()?,
        base_args,
        out: args.out.clone(),
        parallel: args.parallel,
        metric: args.metric.clone(),
        goal,
        pruner: args.prune,
        resume_args: vec!["train".into()],
        env: Vec::new(),
    };
    let parent = match &args.tracking.tracking_uri {
        Some(uri) => Some(sweep_parent_run(&args, uri, &mut options)?),
        None => None,
    };
    let outcome = match &search {
        Some(search) => sweep::search(&options, &space, search),
        None => sweep::run(&options, &trials),
    };
    if let Some(parent) = parent {
        finish_sweep_parent_run(&parent, outcome.as_ref().ok());
    }
    let report = outcome.map_err(upsell::Error::from)?;
    println!("{}", report.summary());
    let failed = report.failed().len();
    if failed > 0 {
        // Exit 1: the summary above and the leaderboard say which.
        anyhow::bail!("{failed} trial(s) failed; see the leaderboard");
    }
    Ok(())
}

/// Starts the sweep's MLflow parent run and has every trial log to the
/// same server and experiment as its child.
fn sweep_parent_run(
    args: &SweepArgs,
    uri: &str,
    options: &mut upsell::experiment::sweep::SweepOptions,
) -> anyhow::Result<upsell::experiment::tracking::Tracker> {
    use upsell::experiment::tracking::{Connection, RunOptions, Tracker};
    let name = args.out.file_name().map_or_else(
        || "sweep".to_string(),
        |n| format!("sweep {}", n.to_string_lossy()),
    );
    let mut params: Vec<(String, String)> = args
        .grid
        .iter()
        .filter_map(|g| g.split_once('='))
        .map(|(k, v)| (format!("grid.{}", k.trim()), v.trim().to_string()))
        .collect();
    params.push(("sweep.metric".into(), options.metric.clone()));
    params.push(("sweep.goal".into(), options.goal.to_string()));
    if let Some(n) = args.trials {
        params.push(("sweep.trials".into(), n.to_string()));
    }
    if let Some(pruner) = &args.prune {
        params.push(("sweep.prune".into(), format!("{pruner:?}")));
    }
    let run = RunOptions {
        connection: Connection::from_env().map_err(upsell::Error::from)?,
        tags: vec![("upsell.sweep_dir".into(), args.out.display().to_string())],
        ..RunOptions::default()
    };
    let parent = Tracker::start_with(uri, &args.tracking.experiment, &name, &params, &run)
        .map_err(upsell::Error::from)?;
    options.env.extend([
        ("MLFLOW_TRACKING_URI".into(), uri.into()),
        (
            "MLFLOW_EXPERIMENT_NAME".into(),
            args.tracking.experiment.clone().into(),
        ),
        ("UPSELL_MLFLOW_PARENT_RUN".into(), parent.run_id().into()),
    ]);
    Ok(parent)
}

/// Logs the sweep's best trial to its parent run and ends the run.
fn finish_sweep_parent_run(
    parent: &upsell::experiment::tracking::Tracker,
    report: Option<&upsell::experiment::sweep::SweepReport>,
) {
    use upsell::experiment::tracking::RunStatus;
    let status = match report {
        Some(report) => {
            let summary = report.summary();
            let count = |key: &str| summary[key].as_f64().unwrap_or(0.0);
            let mut metrics: Vec<(String, f64)> =
                ["trials", "finished", "skipped", "pruned", "failed"]
                    .iter()
                    .map(|k| (format!("sweep.{k}"), count(k)))
                    .collect();
            if let Some(best) = report.best() {
                metrics.push(("best.metric".into(), best.metric.unwrap_or(f64::NAN)));
                let tags = vec![
                    ("upsell.best_trial".to_string(), best.trial.name.clone()),
                    ("upsell.best_overrides".to_string(), best.trial.label()),
                ];
                if let Err(e) = parent.set_tags(&tags) {
                    eprintln!("warning: MLflow parent run tags: {e}");
                }
            }
            if let Err(e) = parent.log_metrics(0, &metrics) {
                eprintln!("warning: MLflow parent run metrics: {e}");
            }
            let artifact = report.leaderboard_md.clone();
            if let Err(e) = parent.log_artifact(&artifact, "leaderboard.md") {
                eprintln!("warning: MLflow parent run artifacts: {e}");
            }
            if report.failed().is_empty() {
                RunStatus::Finished
            } else {
                RunStatus::Failed
            }
        }
        None => RunStatus::Failed,
    };
    if let Err(e) = parent.finish(status) {
        eprintln!("warning: MLflow parent run status: {e}");
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging(cli.log_format);
    if !matches!(cli.command, Command::Serve(_)) {
        keep_large_buffers_on_the_heap();
    }
    // The batch commands score on this thread: it joins the CPU pool (every
    // core). `train` and `bench` size the pool themselves.
    if matches!(
        cli.command,
        Command::Score(_) | Command::Eval(_) | Command::Ope(_) | Command::Recommend(_)
    ) {
        upsell::model::device::set_threads(0);
    }
    match cli.command {
        Command::Synth(args) => {
            let params =
                synth::WorldParams::preset(&args.world)?.with_overrides(&args.world_set)?;
            let options = synth::SynthOptions {
                rows_per_file: args.rows_per_file,
                world: (args.world, params),
                truth_files: args.truth_files,
                ..synth::SynthOptions::new(args.rows, args.seed, args.out)
            };
            let summary = synth::write(&options)?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::Config(args) => {
            print!("{}", args.load()?.to_toml());
        }
        Command::Prepare(args) => {
            let config = args.config.load_edited(|config| args.paths.apply(config))?;
            let prepared = upsell::data::prepare(&config)?;
            if let Some(out) = &args.out {
                let json = serde_json::to_vec_pretty(&prepared.preprocessor)?;
                upsell::atomic::write(out, &json)?;
            }
            println!("{}", serde_json::to_string(&prepared.report)?);
        }
        Command::Train(args) => {
            // Tracking settings are checked before a run directory is made.
            let tracking = match &args.tracking.tracking_uri {
                None => None,
                Some(uri) => Some(upsell::experiment::tracking::TrainingTracking {
                    uri: uri.clone(),
                    experiment: args.tracking.experiment.clone(),
                    run: upsell::experiment::tracking::RunOptions {
                        connection: upsell::experiment::tracking::Connection::from_env()
                            .map_err(upsell::Error::from)?,
                        parent_run_id: args.parent_run.clone(),
                        tags: Vec::new(),
                    },
                    register_model: args.register_model.clone(),
                }),
            };
            let (config, run_dir) = match args.resume.clone() {
                Some(run_dir) => {
                    let saved = run_dir.join("config.toml");
                    let config = Config::load(&saved, &[]).map_err(upsell::Error::from)?;
                    // burn materialises a loaded optimiser state on its
                    // default device (wgpu when built in) before moving it to
                    // the training device; on a CPU run that would start a
                    // GPU driver for nothing.
                    if upsell::model::device::is_cpu(&upsell::train::replicas(&config.train)?[0])
                        && std::env::var_os("BURN_DEVICE").is_none()
                    {
                        // SAFETY: no other thread exists yet (the rayon pool
                        // and the device come after), so nothing reads the
                        // environment concurrently.
                        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
                    }
                    (config, run_dir)
                }
                None => {
                    let config = args
                        .config
                        .load_edited(|config| args.paths.apply_with(config, args.backend))?;
                    if args.print_config {
                        eprint!("{}", config.to_toml());
                    }
                    let run_dir = match &args.out {
                        Some(dir) => {
                            upsell::train::claim_run_dir(dir)?;
                            dir.clone()
                        }
                        None => upsell::train::new_run_dir(&config.out_dir)?,
                    };
                    write_provenance(&run_dir)?;
                    (config, run_dir)
                }
            };
            upsell::model::device::set_threads(config.train.threads);
            // Data-parallel replicas, when configured, are started by the
            // training loop; the weights live on the first device.
            let device = upsell::train::replicas(&config.train)?.remove(0);
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let train = |on_epoch: &mut dyn FnMut(&upsell::train::EpochMetrics)| {
                // Without a terminal (no progress bar), each epoch is logged.
                let on_epoch = &mut |m: &upsell::train::EpochMetrics| {
                    if !progress {
                        log_epoch(m);
                    }
                    on_epoch(m);
                };
                match &args.resume {
                    Some(_) => {
                        upsell::train::resume_observed(&run_dir, &device, progress, on_epoch)
                    }
                    None => upsell::train::train_observed(
                        &config, &run_dir, &device, progress, on_epoch,
                    ),
                }
            };
            let summary = match &tracking {
                None => train(&mut |_| {}),
                Some(tracking) => {
                    upsell::experiment::tracking::track_training(&config, &run_dir, tracking, train)
                }
            };
            record_end(&run_dir, &summary);
            // A fresh run that failed before leaving anything to resume
            // leaves no run directory behind.
            if summary.is_err() && args.resume.is_none() {
                upsell::train::discard_unstarted_run(&run_dir);
            }
            let summary = summary?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::Score(args) => {
            args.batch
                .check_output(args.shard.shard()?, &args.batch.output, "--output")?;
            let scorer = args.batch.scorer()?;
            let report = upsell::offline::score::score_shard(
                &scorer,
                &args.batch.input,
                &args.batch.output,
                args.shard.shard()?,
                args.shard.unit_rows,
            )?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Eval(args) => {
            let scorer = upsell::Scorer::load(&args.checkpoint)?;
            let mut evaluation = upsell::offline::eval::evaluate(
                &scorer,
                &args.checkpoint,
                &args.data,
                args.by.as_deref(),
            )?;
            if let Some(truth) = &args.truth {
                let config = scorer
                    .manifest()
                    .saved_config(&args.overrides)
                    .map_err(upsell::Error::from)?;
                evaluation.summary.decisions = Some(upsell::offline::truth::decision_quality(
                    &scorer,
                    config.policy,
                    config.seed,
                    &args.data,
                    truth,
                )?);
            }
            let json = serde_json::to_string(&evaluation.summary)?;
            if let Some(dir) = &args.report {
                let about = vec![
                    (
                        "checkpoint".to_string(),
                        args.checkpoint.display().to_string(),
                    ),
                    ("data".to_string(), args.data.display().to_string()),
                    (
                        "command".to_string(),
                        std::env::args().collect::<Vec<_>>().join(" "),
                    ),
                ];
                let mut input = evaluation.report_input(about);
                input.title = format!("upsell evaluation: {}", args.checkpoint.display());
                upsell::offline::eval::write_report(dir, &input, json.as_bytes())?;
            }
            println!("{json}");
        }
        Command::Ope(args) => {
            let scorer = upsell::Scorer::load(&args.checkpoint)?;
            let config = scorer
                .manifest()
                .saved_config(&args.overrides)
                .map_err(upsell::Error::from)?;
            let options = upsell::offline::ope::OpeOptions {
                exploration: args.policy.unwrap_or(config.policy.exploration),
                seed: config.seed,
                clip: args.clip,
                bootstrap: args.bootstrap,
                bootstrap_seed: args.seed,
            };
            let summary = upsell::offline::ope::evaluate(
                &scorer,
                &args.checkpoint,
                config.policy.clone(),
                &args.logs,
                &options,
            )?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::Bench(args) => {
            upsell::model::device::set_threads(args.threads);
            let options = upsell::experiment::bench::BenchOptions {
                backends: args.backend,
                sizes: args.size,
                train_rows: args.train_rows,
                train_batches: args.train_batch,
                file_rows: args.file_rows,
                latency_calls: args.latency_calls.max(1),
                min_time: std::time::Duration::from_secs_f64(args.min_seconds),
            };
            upsell::experiment::bench::run(&options, &args.work)?;
        }
        Command::Sweep(args) => sweep(args)?,
        Command::Recommend(args) => {
            let shard = args.shard.shard()?;
            args.batch
                .check_output(shard, &args.batch.output, "--output")?;
            if let Some(exposures) = &args.exposures {
                args.batch.check_output(shard, exposures, "--exposures")?;
            }
            let scorer = args.batch.scorer()?;
            let config = scorer
                .manifest()
                .saved_config(&args.overrides)
                .map_err(upsell::Error::from)?;
            let shard = args.shard.shard()?;
            let options = upsell::offline::recommend::RecommendOptions {
                exploration: args.policy.unwrap_or(config.policy.exploration),
                seed: config.seed,
                shard,
                unit_rows: args.shard.unit_rows,
                top_k: args.top_k,
            };
            let exposures = args
                .exposures
                .map(|path| upsell::offline::recommend::ExposureLog {
                    path,
                    propensity: config.columns.propensity_or_default().to_string(),
                    time: config.columns.time_or_default().to_string(),
                    model_version: scorer.manifest().version(),
                });
            let report = upsell::offline::recommend::recommend_files(
                &scorer,
                config.policy.clone(),
                &options,
                &args.batch.input,
                &args.batch.output,
                exposures.as_ref(),
            )?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Serve(args) => {
            let model = upsell::serve::Model::load(&args.checkpoint)?;
            let log = args
                .log_decisions
                .as_deref()
                .map(|path| upsell::serve::DecisionLog::open(path, model.scorer(), model.policy()))
                .transpose()?;
            let token = match (&args.admin_token_file, &args.admin_token) {
                (Some(file), _) => {
                    Some(std::fs::read_to_string(file).map_err(|e| upsell::Error::io(file, e))?)
                }
                (None, token) => token.clone(),
            };
            let admin = token
                .map(|token| {
                    let root = match &args.reload_root {
                        Some(root) => root.clone(),
                        None => std::path::absolute(&args.checkpoint)?
                            .parent()
                            .map_or_else(|| PathBuf::from("/"), PathBuf::from),
                    };
                    anyhow::Ok(upsell::serve::Admin::new(&token, &root)?)
                })
                .transpose()?;
            let limits = upsell::serve::Limits {
                max_body_bytes: args.max_body_bytes,
                max_batch: args.max_batch,
                timeout: std::time::Duration::from_millis(args.timeout_ms),
                max_concurrent: args
                    .max_concurrent
                    .unwrap_or_else(upsell::serve::default_concurrency),
                max_connections: args.max_connections,
                header_timeout: std::time::Duration::from_millis(args.header_timeout_ms),
                shutdown_timeout: std::time::Duration::from_millis(args.shutdown_timeout_ms),
                max_top_k: args.max_top_k,
            };
            let mut state = upsell::serve::AppState::new(model, args.checkpoint, args.name, limits);
            if let Some(log) = log {
                state = state.with_decision_log(log);
            }
            if let Some(admin) = admin {
                state = state.with_admin(admin);
            }
            if let (Some(dir), Some(log)) = (&args.shadow_checkpoint, &args.shadow_log) {
                if args.log_decisions.as_ref() == Some(log) {
                    anyhow::bail!(upsell::Error::Argument {
                        argument: "--shadow-log",
                        message: "must be another file than --log-decisions: the two models' rows would mix".into(),
                    });
                }
                state = state.with_shadow(upsell::serve::Shadow::load(dir, log)?);
            }
            let state = std::sync::Arc::new(state);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(upsell::serve::serve(state, args.addr))?;
        }
        Command::Inspect(args) => {
            let manifest = upsell::scoring::checkpoint::read_manifest(&args.checkpoint)
                .map_err(upsell::Error::from)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
            } else {
                print!("{}", upsell::scoring::checkpoint::describe(&manifest));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
