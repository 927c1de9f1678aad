//! The `upsell` command line: parses arguments, calls the library, prints the
//! error once and maps it to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use upsell::{Config, synth};

#[derive(Parser)]
#[command(
    name = "upsell",
    version,
    about = "Decide which paid product to offer each user, and how likely they are to buy it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
}

#[derive(Args)]
struct ServeArgs {
    /// The checkpoint directory (reloaded on SIGHUP or POST /admin/reload).
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// The model's name in /v2/models/{name}.
    #[arg(long, default_value = "upsell")]
    name: String,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// The most rows (users) per request.
    #[arg(long, default_value_t = 4096)]
    max_batch: usize,
    /// The longest a request may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
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
        let config = match &self.config {
            Some(path) => Config::load(path, &self.overrides)?,
            None => Config::from_toml(
                DEFAULT_CONFIG,
                "built-in configs/default.toml",
                std::path::Path::new(""),
                &self.overrides,
            )?,
        };
        Ok(config)
    }
}

/// The shipped default config, compiled in so `upsell train` runs anywhere.
const DEFAULT_CONFIG: &str = include_str!("../configs/default.toml");

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
    /// Where to write the results (.parquet or .csv); `recommend --shard
    /// I/N` writes `NAME-0000I-of-0000N.EXT` beside it.
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
}

impl BatchArgs {
    fn scorer(&self) -> upsell::Result<upsell::Scorer> {
        Ok(upsell::Scorer::load(&self.checkpoint)?)
    }
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    batch: BatchArgs,
}

#[derive(Args)]
struct RecommendArgs {
    #[command(flatten)]
    batch: BatchArgs,
    /// Exploration, instead of `policy.exploration`: greedy, epsilon:E or softmax:T.
    #[arg(long, value_name = "POLICY")]
    policy: Option<upsell::policy::Exploration>,
    /// Process one of N disjoint parts of the input (default: from
    /// JOB_COMPLETION_INDEX/JOB_COMPLETIONS when set, else everything).
    #[arg(long, value_name = "I/N")]
    shard: Option<upsell::data::recommend::Shard>,
    /// Rows per shard unit and per decision batch (caps hold per batch).
    #[arg(long, default_value_t = upsell::data::recommend::UNIT_ROWS)]
    unit_rows: usize,
    /// Override the checkpoint's saved config, e.g. `--set policy.contact_cost=0.05`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Synth(args) => {
            let options = synth::SynthOptions {
                rows_per_file: args.rows_per_file,
                ..synth::SynthOptions::new(args.rows, args.seed, args.out)
            };
            let summary = synth::write(&options)?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::Config(args) => {
            print!("{}", args.load()?.to_toml());
        }
        Command::Prepare(args) => {
            let mut config = args.config.load()?;
            args.paths.apply(&mut config);
            let prepared = upsell::data::prepare(&config)?;
            if let Some(out) = &args.out {
                let json = serde_json::to_vec_pretty(&prepared.preprocessor)?;
                upsell::atomic::write(out, &json)?;
            }
            println!("{}", serde_json::to_string(&prepared.report)?);
        }
        Command::Train(args) => {
            let mut config = args.config.load()?;
            args.paths.apply(&mut config);
            if let Some(backend) = args.backend {
                config.train.backend = backend;
            }
            if args.print_config {
                eprint!("{}", config.to_toml());
            }
            upsell::device::set_threads(config.train.threads);
            let device = upsell::device::device(config.train.backend)?;
            let run_dir = match args.out {
                Some(dir) => {
                    upsell::train::claim_run_dir(&dir)?;
                    dir
                }
                None => upsell::train::new_run_dir(&config.out_dir)?,
            };
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let summary = upsell::train::train(&config, &run_dir, &device, progress)?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::Score(args) => {
            let scorer = args.batch.scorer()?;
            let report =
                upsell::data::score::score_files(&scorer, &args.batch.input, &args.batch.output)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Recommend(args) => {
            let scorer = args.batch.scorer()?;
            let origin = format!("{} (saved config)", args.batch.checkpoint.display());
            let config = Config::from_toml(
                &scorer.manifest().config,
                &origin,
                std::path::Path::new(""),
                &args.overrides,
            )
            .map_err(upsell::Error::from)?;
            let shard = match args.shard {
                Some(shard) => shard,
                None => upsell::data::recommend::Shard::from_env()
                    .transpose()?
                    .unwrap_or(upsell::data::recommend::Shard::ALL),
            };
            let options = upsell::data::recommend::RecommendOptions {
                exploration: args.policy.unwrap_or(config.policy.exploration),
                seed: config.seed,
                shard,
                unit_rows: args.unit_rows,
            };
            let report = upsell::data::recommend::recommend_files(
                &scorer,
                config.policy.clone(),
                &options,
                &args.batch.input,
                &args.batch.output,
            )?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let model = upsell::serve::Model::load(&args.checkpoint)?;
            let limits = upsell::serve::Limits {
                max_body_bytes: args.max_body_bytes,
                max_batch: args.max_batch,
                timeout: std::time::Duration::from_millis(args.timeout_ms),
            };
            let state = std::sync::Arc::new(upsell::serve::AppState::new(
                model,
                args.checkpoint,
                args.name,
                limits,
            ));
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(upsell::serve::serve(state, args.addr))?;
        }
        Command::Inspect(args) => {
            let manifest =
                upsell::checkpoint::read_manifest(&args.checkpoint).map_err(upsell::Error::from)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
            } else {
                print!("{}", upsell::checkpoint::describe(&manifest));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
