//! The experiment config: parsing, validation, overrides, paths.

use std::path::{Path, PathBuf};

use upsell::config::{Config, ConfigError, SplitRule};

use crate::common::{repo, upsell, write};

const MINIMAL: &str = r#"
[data]
train = "logs/train.parquet"

[columns]
numeric = ["tenure", "hours"]
categorical = ["country"]
hashed = { region = 1024 }
offer = "offer"
context = ["surface"]
converted = "converted"
plan = "plan"

[products]
basic = 4.99
family = 19.99
"#;

fn parse(text: &str, overrides: &[&str]) -> Result<Config, ConfigError> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Config::from_toml(text, "test.toml", Path::new("/base"), &overrides)
}

fn error_of(text: &str, overrides: &[&str]) -> String {
    parse(text, overrides).unwrap_err().to_string()
}

#[test]
fn every_shipped_config_parses() {
    let dir = repo().join("configs");
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            parsed += 1;
        }
    }
    assert!(
        parsed >= 4,
        "expected the default and one config per dataset, found {parsed}"
    );
}

#[test]
fn defaults_are_filled_in() {
    let config = parse(MINIMAL, &[]).unwrap();
    assert_eq!(config.seed, 42);
    assert_eq!(config.out_dir, PathBuf::from("checkpoints"));
    assert_eq!(config.data.split, SplitRule::Random);
    assert_eq!(config.data.valid_fraction, 0.1);
    assert_eq!(config.data.max_invalid_fraction, 0.0);
    assert_eq!(config.preprocess.min_count, 5);
    assert_eq!(config.columns.hashed["region"], 1024);
    assert_eq!(config.products["family"], 19.99);
}

#[test]
fn relative_paths_in_the_file_resolve_against_its_directory() {
    let config = parse(MINIMAL, &[]).unwrap();
    assert_eq!(
        config.data.train,
        Some(PathBuf::from("/base/logs/train.parquet"))
    );
    // A path given on the command line is the user's, relative to the cwd.
    let config = parse(MINIMAL, &["data.train=other/x.csv"]).unwrap();
    assert_eq!(config.data.train, Some(PathBuf::from("other/x.csv")));
    // Another override leaves the file's path resolved against the file.
    let config = parse(MINIMAL, &["seed=7"]).unwrap();
    assert_eq!(
        config.data.train,
        Some(PathBuf::from("/base/logs/train.parquet"))
    );
}

#[test]
fn overrides_take_toml_values_and_bare_strings() {
    let config = parse(
        MINIMAL,
        &[
            "seed=7",
            "data.valid_fraction=0.25",
            "data.split=\"random\"",
            "preprocess.min_count = 2",
            "preprocess.log1p=[\"hours\"]",
            "columns.hashed.region=64",
            "products.duo=16.99",
            "data.valid=some/dir",
        ],
    )
    .unwrap();
    assert_eq!(config.seed, 7);
    assert_eq!(config.data.valid_fraction, 0.25);
    assert_eq!(config.preprocess.min_count, 2);
    assert_eq!(config.preprocess.log1p, ["hours"]);
    assert_eq!(config.columns.hashed["region"], 64);
    assert_eq!(config.products.len(), 3);
    assert_eq!(config.data.valid, Some(PathBuf::from("some/dir")));
    // Later overrides win.
    let config = parse(MINIMAL, &["seed=1", "seed=2"]).unwrap();
    assert_eq!(config.seed, 2);
}

#[test]
fn unknown_keys_are_rejected_in_files_and_overrides() {
    let text = MINIMAL.replace("[data]", "[data]\ntrian = \"x\"");
    let message = error_of(&text, &[]);
    assert!(message.contains("trian"), "{message}");
    let message = error_of(MINIMAL, &["data.shuffle_bufer=3"]);
    assert!(message.contains("shuffle_bufer"), "{message}");
    let message = error_of(MINIMAL, &["nosection.key=1"]);
    assert!(message.contains("nosection"), "{message}");
}

#[test]
fn malformed_overrides_are_rejected() {
    let message = error_of(MINIMAL, &["seed"]);
    assert!(message.contains("--set \"seed\""), "{message}");
    assert!(message.contains("section.key=value"), "{message}");
    let message = error_of(MINIMAL, &["data.train.x=1"]);
    assert!(message.contains("data.train is a value"), "{message}");
    let message = error_of(MINIMAL, &["data..train=x"]);
    assert!(message.contains("empty part"), "{message}");
    // A value of the wrong type is a typed error naming the key.
    let message = error_of(MINIMAL, &["data.valid_fraction=\"half\""]);
    assert!(message.contains("valid_fraction"), "{message}");
}

#[test]
fn validation_names_the_field() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["data.valid_fraction=1.5"],
            "data.valid_fraction",
            "(0, 1)",
        ),
        (
            &["data.max_invalid_fraction=-0.1"],
            "data.max_invalid_fraction",
            "[0, 1)",
        ),
        (
            &["columns.categorical=[\"tenure\"]"],
            "columns.categorical",
            "already used",
        ),
        (
            &["columns.hashed.region=0"],
            "columns.hashed.region",
            "at least 1",
        ),
        (&["products.basic=-1"], "products.basic", ">= 0"),
        (
            &["preprocess.log1p=[\"country\"]"],
            "preprocess.log1p",
            "not one of columns.numeric",
        ),
        (
            &["preprocess.min_count=0"],
            "preprocess.min_count",
            "at least 1",
        ),
        (&["data.split=\"time\""], "data.split", "columns.time"),
        (
            &["columns.converted=\"\""],
            "columns.converted",
            "must name a column",
        ),
    ];
    for (overrides, field, reason) in cases {
        let message = error_of(MINIMAL, overrides);
        assert!(
            message.contains(field) && message.contains(reason),
            "{overrides:?}: {message}"
        );
        assert!(message.starts_with("test.toml"), "{message}");
    }
    let no_products = MINIMAL.split("[products]").next().unwrap();
    let message = error_of(no_products, &[]);
    assert!(message.contains("[products] must list"), "{message}");
    let no_features = "[columns]\nconverted = \"y\"\n";
    assert!(error_of(no_features, &[]).contains("no features"));
    let no_label = "[columns]\nnumeric = [\"x\"]\n";
    assert!(error_of(no_label, &[]).contains("converted"));
}

#[test]
fn resolved_config_round_trips() {
    let config = parse(MINIMAL, &["seed=9"]).unwrap();
    let again = Config::from_toml(&config.to_toml(), "again", Path::new(""), &[]).unwrap();
    assert_eq!(again, config);
}

#[test]
fn config_command_prints_the_resolved_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "exp.toml", MINIMAL);
    let output = upsell()
        .args(["config", "--config"])
        .arg(&path)
        .args(["--set", "seed=11", "--set", "preprocess.min_count=3"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    let config = Config::from_toml(&printed, "printed", Path::new(""), &[]).unwrap();
    assert_eq!(config.seed, 11);
    assert_eq!(config.preprocess.min_count, 3);
    assert_eq!(
        config.data.train,
        Some(dir.path().join("logs/train.parquet"))
    );

    let output = upsell()
        .args(["config", "--config"])
        .arg(&path)
        .args(["--set", "data.bogus=1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("bogus"), "{stderr}");
}

#[test]
fn the_default_config_shows_the_real_defaults() {
    let config = Config::load(&repo().join("configs/default.toml"), &[]).unwrap();
    assert_eq!(config.model, upsell::config::ModelConfig::default());
    assert_eq!(config.train, upsell::config::TrainConfig::default());
    assert_eq!(config.data, upsell::config::DataConfig::default());
    assert_eq!(config.seed, 42);
    let defaults = upsell::config::PreprocessConfig::default();
    assert_eq!(config.preprocess.min_count, defaults.min_count);
    assert_eq!(config.preprocess.max_vocab, defaults.max_vocab);
    // It describes the built-in synthetic world column for column.
    assert_eq!(config.columns, upsell::data::synth::config().columns);
    assert_eq!(config.products, upsell::data::synth::config().products);
}

/// Every "Default X" in a field's doc comment in src/config/sections.rs names the
/// value `Default` gives it, so the docs cannot drift from the code (and,
/// by the test above, from configs/default.toml).
#[test]
fn the_documented_defaults_are_the_real_ones() {
    let source = std::fs::read_to_string(repo().join("src/config/sections.rs")).unwrap();
    use upsell::config::{DataConfig, ModelConfig, PolicyConfig, PreprocessConfig, TrainConfig};
    let sections = [
        (
            "DataConfig",
            toml::Table::try_from(DataConfig::default()).unwrap(),
        ),
        (
            "PreprocessConfig",
            toml::Table::try_from(PreprocessConfig::default()).unwrap(),
        ),
        (
            "ModelConfig",
            toml::Table::try_from(ModelConfig::default()).unwrap(),
        ),
        (
            "TrainConfig",
            toml::Table::try_from(TrainConfig::default()).unwrap(),
        ),
        (
            "PolicyConfig",
            toml::Table::try_from(PolicyConfig::default()).unwrap(),
        ),
    ];
    let mut checked = 0;
    for (name, table) in &sections {
        let section = name;
        let start = source.find(&format!("pub struct {name} {{")).unwrap();
        let body = &source[start..start + source[start..].find("\n}\n").unwrap()];
        let mut doc = String::new();
        for line in body.lines().map(str::trim) {
            if let Some(text) = line.strip_prefix("///") {
                doc.push_str(text);
                continue;
            }
            let Some(field) = line.strip_prefix("pub ").and_then(|l| l.split(':').next()) else {
                continue;
            };
            let documented = std::mem::take(&mut doc);
            let Some(at) = documented.rfind("Default") else {
                continue;
            };
            let said = documented[at + "Default".len()..]
                .trim_start_matches(':')
                .trim();
            let value = table.get(field);
            let shown = |v: &toml::Value| v.to_string().trim_matches('"').to_string();
            let ok = match said.chars().next() {
                Some('`') => {
                    let word = &said[1..1 + said[1..].find('`').unwrap()];
                    value.is_some_and(|v| shown(v).replace(' ', "") == word.replace(' ', ""))
                }
                Some('[') => {
                    let list = &said[..=said.find(']').unwrap()];
                    value.is_some_and(|v| shown(v).replace(' ', "") == list.replace(' ', ""))
                }
                Some(c) if c.is_ascii_digit() => {
                    let number: String = said
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
                        .filter(|c| *c != ',')
                        .collect();
                    let number: f64 = number.trim_end_matches('.').parse().unwrap();
                    match value {
                        Some(toml::Value::Integer(i)) => *i as f64 == number,
                        Some(toml::Value::Float(f)) => *f == number,
                        // "Default 1 for every product": an empty map of weights.
                        Some(toml::Value::Table(t)) => t.is_empty(),
                        _ => false,
                    }
                }
                _ if said.starts_with("true") || said.starts_with("false") => {
                    value.is_some_and(|v| said.starts_with(&v.to_string()))
                }
                // "none", "empty", "no caps": nothing set.
                _ => match value {
                    None => true,
                    Some(toml::Value::Array(a)) => a.is_empty(),
                    Some(toml::Value::Table(t)) => t.is_empty(),
                    Some(_) => false,
                },
            };
            assert!(
                ok,
                "src/config/sections.rs: {section}.{field} is documented as \"Default {said}\" but defaults to {value:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} documented defaults found");
}
