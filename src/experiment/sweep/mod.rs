//! Hyper-parameter sweeps: many `upsell train` runs over a grid of config
//! overrides, or a search over ranges ([`search`](mod@search): TPE or
//! random proposals, ASHA or median pruning), each a child process,
//! resumable, and ranked by one metric.
//!
//! A sweep directory holds:
//!
//! ```text
//! OUT/sweep.json          metric, goal, train arguments and the trials so far (a
//!                         search resumes from it)
//! OUT/trials/NAME/        the trial's run directory (train's --out)
//! OUT/logs/NAME.log       the trial's command line, then its stdout and stderr
//! OUT/results/NAME.json   the trial's summary line: present once, and only once, it finished
//! OUT/leaderboard.csv     one row per trial, ranked by the metric
//! OUT/leaderboard.md
//! ```
//!
//! A trial's name is a hash of its overrides, not its position, so rerunning
//! the same command skips finished trials and reruns the rest, and adding grid
//! values (or raising `--random N`) reuses every trial that already finished.

mod grid;
mod results;
mod runner;
pub mod search;

pub use crate::error::SweepError;
pub use grid::{MAX_FULL_GRID, Trial, parse_grid, trials};
pub use results::{Goal, SweepReport, TrialResult, TrialStatus};
pub use runner::{Search, SweepOptions, run, search, train_args};
pub use search::{Param, Pruner, Sampler, Space, parse_param};

#[cfg(all(test, unix))]
mod tests {
    use std::collections::HashSet;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use super::grid::*;
    use super::results::*;
    use super::runner::*;
    use super::*;

    /// A stand-in for `upsell train`: reads `--set lr=`, `hidden=`, `sleep=`
    /// and `--out`, logs each call, refuses an existing `--out`, stamps start
    /// and end times, fails on `lr=bad` (exit 2) and prints no JSON on
    /// `lr=garbage`. Its metrics are `lr` itself.
    const FAKE_TRAIN: &str = r#"#!/bin/sh
here=$(dirname "$0")
out= lr= hidden= sleep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --set)
            case "$2" in
                lr=*) lr=${2#lr=} ;;
                hidden=*) hidden=${2#hidden=} ;;
                sleep=*) sleep=${2#sleep=} ;;
            esac
            shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) shift ;;
    esac
done
echo "$out" >> "$here/calls.log"
if [ -e "$out" ]; then echo "error: $out: already exists; refusing to overwrite it" >&2; exit 2; fi
mkdir "$out"
date +%s%N > "$out/start"
sleep "$sleep"
date +%s%N > "$out/end"
echo "epoch 1/1"
case "$lr" in
    bad) echo "warning: about to fail" >&2; echo "error: train.lr: expected a number, got \"bad\"" >&2; exit 2 ;;
    garbage) echo "not json"; exit 0 ;;
esac
echo "{\"status\":\"ok\",\"seconds\":0.5,\"hidden\":\"$hidden\",\"best\":{\"epoch\":1,\"valid_loss\":$lr,\"valid_auc\":$lr}}"
echo "a late warning on stderr" >&2
"#;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("train.sh"), FAKE_TRAIN).unwrap();
            Fixture { dir }
        }

        /// Options running the fake through /bin/sh, which avoids exec'ing a
        /// just-written file ("text file busy" while other tests fork).
        fn options(&self, metric: &str, goal: Goal) -> SweepOptions {
            SweepOptions {
                program: PathBuf::from("/bin/sh"),
                base_args: vec![self.dir.path().join("train.sh").into(), "train".into()],
                out: self.dir.path().join("sweep"),
                parallel: 1,
                metric: metric.to_string(),
                goal,
                pruner: None,
                resume_args: vec![self.dir.path().join("train.sh").into(), "train".into()],
                env: Vec::new(),
            }
        }

        /// The run directories the fake was called with, in call order.
        fn calls(&self) -> Vec<String> {
            match fs::read_to_string(self.dir.path().join("calls.log")) {
                Ok(text) => text
                    .lines()
                    .map(|l| l.rsplit('/').next().unwrap().to_string())
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
    }

    fn grid(args: &[&str]) -> Vec<(String, Vec<String>)> {
        args.iter().map(|a| parse_grid(a).unwrap()).collect()
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    fn order(report: &SweepReport) -> Vec<String> {
        report
            .results
            .iter()
            .map(|r| r.trial.overrides[0].1.clone())
            .collect()
    }

    fn stamp(run_dir: &Path, which: &str) -> u128 {
        fs::read_to_string(run_dir.join(which))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn grid_values_split_at_top_level_commas() {
        let (key, values) = parse_grid("model.hidden=[256,128],[64]").unwrap();
        assert_eq!(key, "model.hidden");
        assert_eq!(values, strings(&["[256,128]", "[64]"]));
        let (_, values) = parse_grid(r#"x={a=1,b=[2,3]}, "p,q" ,'r,s',"t\",u",7"#).unwrap();
        assert_eq!(
            values,
            strings(&["{a=1,b=[2,3]}", r#""p,q""#, "'r,s'", r#""t\",u""#, "7"])
        );
        let (key, values) = parse_grid(" train.lr =0.01").unwrap();
        assert_eq!((key.as_str(), values), ("train.lr", strings(&["0.01"])));
    }

    #[test]
    fn malformed_grids_are_errors_naming_the_argument() {
        for arg in [
            "", "lr", "=1,2", "lr=", "lr= ", "lr=1,,2", "lr=1,", "lr=[1,2", "lr=1],2", "lr=\"a,b",
            "lr=1,1",
        ] {
            let err = parse_grid(arg).unwrap_err();
            assert!(
                matches!(&err, SweepError::Grid { arg: a, .. } if a == arg),
                "{arg:?}: {err}"
            );
            assert!(
                err.to_string().starts_with(&format!("--grid {arg}:")),
                "{err}"
            );
        }
    }

    #[test]
    fn full_grid_is_the_product_with_the_last_key_fastest() {
        let trials = trials(&grid(&["lr=1,2", "hidden=a,b,c"]), None).unwrap();
        let combos: Vec<String> = trials.iter().map(Trial::label).collect();
        assert_eq!(
            combos,
            [
                "lr=1 hidden=a",
                "lr=1 hidden=b",
                "lr=1 hidden=c",
                "lr=2 hidden=a",
                "lr=2 hidden=b",
                "lr=2 hidden=c"
            ]
        );
    }

    #[test]
    fn bad_grids_are_rejected() {
        let err = trials(&grid(&["lr=1,2", "h=a", "lr=3"]), None).unwrap_err();
        assert!(
            matches!(&err, SweepError::DuplicateKey { key } if key == "lr"),
            "{err}"
        );
        assert!(matches!(trials(&[], None), Err(SweepError::NoGrid)));
        assert!(matches!(
            trials(&grid(&["lr=1"]), Some((0, 1))),
            Err(SweepError::NoTrials)
        ));
        let values: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let huge = vec![("a".to_string(), values.clone()), ("b".to_string(), values)];
        assert!(matches!(
            trials(&huge, None),
            Err(SweepError::GridTooLarge {
                combinations: Some(1_000_000)
            })
        ));
        assert_eq!(trials(&huge, Some((3, 1))).unwrap().len(), 3);
    }

    #[test]
    fn names_depend_on_the_combination_only() {
        let a = trials(&grid(&["lr=1,2", "hidden=[8],[16,8]"]), None).unwrap();
        let b = trials(&grid(&["hidden=[16,8],[8]", "lr=2,1"]), None).unwrap();
        let names = |ts: &[Trial]| {
            let mut names: Vec<String> = ts.iter().map(|t| t.name.clone()).collect();
            names.sort();
            names
        };
        assert_eq!(names(&a), names(&b));
        assert_eq!(names(&a).len(), 4);
        for trial in &a {
            assert_eq!(trial.name.len(), 14);
            assert!(trial.name.starts_with("t-"));
            assert!(trial.name[2..].chars().all(|c| c.is_ascii_hexdigit()));
        }
        // Same pair, different position: same name.
        let alone = Trial::new(vec![
            ("hidden".into(), "[8]".into()),
            ("lr".into(), "2".into()),
        ]);
        assert!(
            a.iter()
                .any(|t| t.name == alone.name && t.label() == "lr=2 hidden=[8]")
        );
    }

    #[test]
    fn random_trials_are_seeded_distinct_and_from_the_grid() {
        let g = grid(&["a=0,1,2,3,4,5,6,7,8,9", "b=0,1,2,3,4,5,6,7,8,9", "c=x,y"]);
        let full = trials(&g, None).unwrap();
        let drawn = trials(&g, Some((15, 7))).unwrap();
        assert_eq!(drawn.len(), 15);
        assert_eq!(drawn, trials(&g, Some((15, 7))).unwrap());
        assert_ne!(drawn, trials(&g, Some((15, 8))).unwrap());
        let names: HashSet<&str> = drawn.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), 15);
        assert!(drawn.iter().all(|t| full.contains(t)));
        // Raising n with the same seed keeps what was drawn: growing a sweep.
        let more = trials(&g, Some((40, 7))).unwrap();
        assert!(drawn.iter().all(|t| more.contains(t)));
        assert_eq!(trials(&g, Some((200, 7))).unwrap(), full);
        assert_eq!(trials(&g, Some((1000, 7))).unwrap(), full);
    }

    #[test]
    fn leaderboard_ranks_by_goal_with_failures_last() {
        for (goal, metric, expected) in [
            (Goal::Min, "best.valid_loss", ["0.1", "0.2", "0.3", "bad"]),
            (Goal::Max, "best.valid_auc", ["0.3", "0.2", "0.1", "bad"]),
        ] {
            let fx = Fixture::new();
            let list = trials(&grid(&["lr=0.3,bad,0.1,0.2"]), None).unwrap();
            let report = run(&fx.options(metric, goal), &list).unwrap();
            assert_eq!(order(&report), expected);
            assert_eq!(report.failed().len(), 1);
            assert_eq!(
                report.best().unwrap().metric,
                Some(expected[0].parse().unwrap())
            );
            let TrialStatus::Failed { code, error } = &report.results[3].status else {
                panic!("{:?}", report.results[3].status);
            };
            assert_eq!(*code, Some(2));
            assert!(
                error.ends_with("error: train.lr: expected a number, got \"bad\""),
                "{error}"
            );

            let csv = fs::read_to_string(&report.leaderboard_csv).unwrap();
            let mut lines = csv.lines();
            assert_eq!(
                lines.next().unwrap(),
                format!("rank,trial,lr,{metric},status,seconds,run_dir")
            );
            let first: Vec<&str> = lines.next().unwrap().split(',').collect();
            assert_eq!(
                &first[..5],
                [
                    "1",
                    &report.results[0].trial.name,
                    expected[0],
                    expected[0],
                    "ok"
                ]
            );
            assert!(csv.lines().last().unwrap().starts_with(&format!(
                ",{},bad,,failed (exit 2),",
                report.results[3].trial.name
            )));
            let md = fs::read_to_string(&report.leaderboard_md).unwrap();
            assert!(
                md.starts_with(&format!("# Sweep leaderboard: {metric} ({goal}, ")),
                "{md}"
            );
            assert!(md.contains("## Failed"), "{md}");
            // Only finished trials have a result file.
            assert_eq!(
                fs::read_dir(fx.dir.path().join("sweep/results"))
                    .unwrap()
                    .count(),
                3
            );
        }
    }

    #[test]
    fn parallel_trials_overlap() {
        let fx = Fixture::new();
        let mut options = fx.options("best.valid_loss", Goal::Min);
        options.parallel = 2;
        options
            .base_args
            .extend(["--set".into(), "sleep=0.5".into()]);
        let report = run(&options, &trials(&grid(&["lr=0.1,0.2"]), None).unwrap()).unwrap();
        assert!(report.failed().is_empty());
        let [a, b] = [&report.results[0].run_dir, &report.results[1].run_dir];
        assert!(stamp(a, "start") < stamp(b, "end") && stamp(b, "start") < stamp(a, "end"));
    }

    #[test]
    fn sequential_trials_do_not_overlap() {
        let fx = Fixture::new();
        let mut options = fx.options("best.valid_loss", Goal::Min);
        options
            .base_args
            .extend(["--set".into(), "sleep=0.2".into()]);
        let report = run(&options, &trials(&grid(&["lr=0.1,0.2"]), None).unwrap()).unwrap();
        let [a, b] = [&report.results[0].run_dir, &report.results[1].run_dir];
        assert!(stamp(a, "end") <= stamp(b, "start") || stamp(b, "end") <= stamp(a, "start"));
    }

    #[test]
    fn rerun_skips_finished_trials_and_reruns_the_rest() {
        let fx = Fixture::new();
        let options = fx.options("best.valid_loss", Goal::Min);
        let list = trials(&grid(&["lr=0.1,bad,0.3"]), None).unwrap();
        let [done, failed, interrupted] = [&list[0].name, &list[1].name, &list[2].name];
        let first = run(&options, &list).unwrap();
        assert_eq!(first.failed().len(), 1);
        // As if the sweep was killed after the trial's run directory was made.
        fs::remove_file(
            fx.dir
                .path()
                .join(format!("sweep/results/{interrupted}.json")),
        )
        .unwrap();
        assert_eq!(fx.calls().len(), 3);

        // Growing the grid too: a new value runs, finished ones do not.
        let grown = trials(&grid(&["lr=0.1,bad,0.3,0.2"]), None).unwrap();
        let second = run(&options, &grown).unwrap();
        let calls = fx.calls();
        assert!(!calls[3..].contains(done), "{calls:?}");
        assert!(
            calls[3..].contains(failed) && calls[3..].contains(interrupted),
            "{calls:?}"
        );
        assert_eq!(calls.len(), 6);
        let status = |name: &str| {
            let r = second
                .results
                .iter()
                .find(|r| r.trial.name == name)
                .unwrap();
            (r.status_label(), r.metric)
        };
        assert_eq!(status(done), ("skipped".into(), Some(0.1)));
        assert_eq!(status(failed), ("failed (exit 2)".into(), None));
        assert_eq!(status(interrupted), ("ok".into(), Some(0.3)));
        assert_eq!(order(&second), ["0.1", "0.2", "0.3", "bad"]);
        assert_eq!(second.summary()["skipped"], 1);

        // Nothing left but the failure; the result files are untouched.
        let before =
            fs::read_to_string(fx.dir.path().join(format!("sweep/results/{done}.json"))).unwrap();
        run(&options, &grown).unwrap();
        assert_eq!(fx.calls().len(), 7);
        let after =
            fs::read_to_string(fx.dir.path().join(format!("sweep/results/{done}.json"))).unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn a_metric_in_no_summary_is_an_error_listing_the_paths() {
        let fx = Fixture::new();
        let list = trials(&grid(&["lr=0.1,0.2"]), None).unwrap();
        let err = run(&fx.options("best.valid_los", Goal::Min), &list).unwrap_err();
        let SweepError::MetricNotFound {
            metric, available, ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(metric, "best.valid_los");
        assert!(
            available.contains(&"best.valid_loss".to_string()),
            "{available:?}"
        );
        assert!(err.to_string().contains("best.valid_loss"), "{err}");
        // With the typo fixed, nothing is trained again.
        let report = run(&fx.options("best.valid_loss", Goal::Min), &list).unwrap();
        assert_eq!(fx.calls().len(), 2);
        assert_eq!(order(&report), ["0.1", "0.2"]);
        // The typo is caught before training when earlier trials finished.
        let more = trials(&grid(&["lr=0.1,0.2,0.3"]), None).unwrap();
        assert!(run(&fx.options("best.valid_los", Goal::Min), &more).is_err());
        assert_eq!(fx.calls().len(), 2);
    }

    #[test]
    fn a_summary_that_lacks_the_metric_in_some_trials_ranks_them_last() {
        let fx = Fixture::new();
        // lr=null gives `"valid_loss":null`: present, not a number.
        let list = trials(&grid(&["lr=null,0.5"]), None).unwrap();
        let report = run(&fx.options("best.valid_loss", Goal::Min), &list).unwrap();
        assert_eq!(order(&report), ["0.5", "null"]);
        assert!(report.failed().is_empty());
        assert_eq!(report.results[1].metric, None);
    }

    #[test]
    fn exit_zero_without_a_json_summary_is_a_failure() {
        let fx = Fixture::new();
        let list = trials(&grid(&["lr=garbage"]), None).unwrap();
        let report = run(&fx.options("best.valid_loss", Goal::Min), &list).unwrap();
        let TrialStatus::Failed { code, error } = &report.results[0].status else {
            panic!("{:?}", report.results[0].status);
        };
        assert_eq!(*code, Some(0));
        assert!(error.contains("not json"), "{error}");
        assert!(
            !fx.dir
                .path()
                .join(format!("sweep/results/{}.json", list[0].name))
                .exists()
        );
    }

    #[test]
    fn the_log_holds_the_command_and_both_streams() {
        let fx = Fixture::new();
        let list = trials(&grid(&["lr=0.1", "hidden=[8, 4]"]), None).unwrap();
        let report = run(&fx.options("best.valid_loss", Goal::Min), &list).unwrap();
        let log = fs::read_to_string(&report.results[0].log).unwrap();
        assert!(log.starts_with("$ /bin/sh "), "{log}");
        assert!(
            log.contains("--set lr=0.1 --set 'hidden=[8, 4]' --out "),
            "{log}"
        );
        assert!(
            log.contains("epoch 1/1") && log.contains("a late warning on stderr"),
            "{log}"
        );
        assert_eq!(report.results[0].summary().unwrap()["hidden"], "[8, 4]");
    }

    #[test]
    fn a_sweep_directory_is_locked_and_bound_to_its_train_arguments() {
        let fx = Fixture::new();
        let options = fx.options("best.valid_loss", Goal::Min);
        let list = trials(&grid(&["lr=0.1"]), None).unwrap();
        run(&options, &list).unwrap();

        let held = lock(&options.out).unwrap();
        assert!(matches!(run(&options, &list), Err(SweepError::Busy { .. })));
        drop(held);

        let mut changed = options.clone();
        changed
            .base_args
            .extend(["--set".into(), "train.epochs=5".into()]);
        assert!(matches!(
            run(&changed, &list),
            Err(SweepError::ArgsChanged { .. })
        ));
        assert_eq!(fx.calls().len(), 1);
    }

    #[test]
    fn trials_keep_the_directory_locked_after_the_sweep_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let held = lock(dir.path()).unwrap();
        // A trial is started as run_trial starts it: the lock file as stdin.
        let mut trial = Command::new("/bin/sh")
            .args(["-c", "while [ ! -e \"$1\" ]; do sleep 0.02; done", "sh"])
            .arg(&go)
            .stdin(Stdio::from(held.try_clone().unwrap()))
            .spawn()
            .unwrap();
        drop(held);
        assert!(matches!(lock(dir.path()), Err(SweepError::Busy { .. })));
        fs::write(&go, "").unwrap();
        assert!(trial.wait().unwrap().success());
        lock(dir.path()).unwrap();
    }

    #[test]
    fn bad_options_and_trial_names_are_rejected() {
        let fx = Fixture::new();
        let list = trials(&grid(&["lr=0.1"]), None).unwrap();
        let mut options = fx.options("best.valid_loss", Goal::Min);
        options.parallel = 0;
        assert!(matches!(run(&options, &list), Err(SweepError::Parallel)));
        let options = fx.options("best..valid_loss", Goal::Min);
        assert!(matches!(
            run(&options, &list),
            Err(SweepError::BadMetric { .. })
        ));
        let evil = Trial {
            name: "../x".into(),
            overrides: vec![],
        };
        let options = fx.options("best.valid_loss", Goal::Min);
        assert!(matches!(
            run(&options, &[evil]),
            Err(SweepError::BadTrialName { .. })
        ));
        assert!(fx.calls().is_empty());
    }

    #[test]
    fn a_program_that_cannot_start_fails_its_trials_only() {
        let fx = Fixture::new();
        let mut options = fx.options("best.valid_loss", Goal::Min);
        options.program = fx.dir.path().join("no-such-upsell");
        let report = run(&options, &trials(&grid(&["lr=0.1,0.2"]), None).unwrap()).unwrap();
        assert_eq!(report.failed().len(), 2);
        assert_eq!(report.summary()["status"], "failed");
    }

    #[test]
    fn goals_parse_and_default_by_metric_name() {
        assert_eq!("min".parse::<Goal>(), Ok(Goal::Min));
        assert_eq!("max".parse::<Goal>(), Ok(Goal::Max));
        assert!("up".parse::<Goal>().is_err());
        assert_eq!(Goal::for_metric("best.valid_loss"), Goal::Min);
        assert_eq!(
            Goal::for_metric("best.valid_conversion_log_loss"),
            Goal::Min
        );
        assert_eq!(Goal::for_metric("seconds"), Goal::Min);
        assert_eq!(Goal::for_metric("best.valid_conversion_auc"), Goal::Max);
        assert_eq!(Goal::for_metric("train_rows_per_sec"), Goal::Max);
    }

    /// A stand-in for `upsell train` that trains for epochs: each epoch
    /// (0.3 s) appends `valid_loss = lr + 1/epoch` to `metrics.jsonl` and
    /// saves `resume.bin`; `crash=K` kills it after epoch K (once: not when
    /// resumed); `--resume DIR` continues from the saved epoch.
    const FAKE_EPOCHS: &str = r#"#!/bin/sh
out= lr=0.5 epochs=3 crash=0 resumed=false
while [ $# -gt 0 ]; do
    case "$1" in
        --set)
            case "$2" in
                lr=*) lr=${2#lr=} ;;
                epochs=*) epochs=${2#epochs=} ;;
                crash=*) crash=${2#crash=} ;;
            esac
            shift 2 ;;
        --out) out=$2; mkdir "$out" || exit 2; echo "$lr $epochs" > "$out/trial"; shift 2 ;;
        --resume) out=$2; resumed=true; shift 2 ;;
        *) shift ;;
    esac
done
read lr epochs < "$out/trial"
done_epochs=0
[ -f "$out/resume.bin" ] && done_epochs=$(cat "$out/resume.bin")
epoch=$((done_epochs + 1))
while [ "$epoch" -le "$epochs" ]; do
    sleep 0.3
    loss=$(echo "$lr $epoch" | awk '{ printf "%.4f", $1 + 1 / $2 }')
    echo "{\"epoch\":$epoch,\"valid_loss\":$loss}" >> "$out/metrics.jsonl"
    echo "$epoch" > "$out/resume.bin"
    if [ "$resumed" = false ] && [ "$epoch" -eq "$crash" ]; then kill -9 $$; fi
    epoch=$((epoch + 1))
done
rm -f "$out/resume.bin"
echo "{\"status\":\"ok\",\"resumed\":$resumed,\"best\":{\"valid_loss\":$loss}}"
"#;

    fn epochs_fixture() -> (tempfile::TempDir, SweepOptions) {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("train.sh");
        fs::write(&script, FAKE_EPOCHS).unwrap();
        let options = SweepOptions {
            program: PathBuf::from("/bin/sh"),
            base_args: vec![script.clone().into(), "train".into()],
            out: dir.path().join("sweep"),
            parallel: 1,
            metric: "best.valid_loss".into(),
            goal: Goal::Min,
            pruner: None,
            resume_args: vec![script.into(), "train".into()],
            env: Vec::new(),
        };
        (dir, options)
    }

    #[test]
    fn asha_stops_trials_that_fall_behind_at_a_rung() {
        let (_dir, mut options) = epochs_fixture();
        options.pruner = Some("asha".parse().unwrap());
        let list = trials(&grid(&["lr=0.1,0.2,0.3,0.4"]), None).unwrap();
        let report = run(&options, &list).unwrap();
        let pruned: Vec<&TrialResult> = report.results.iter().filter(|r| r.is_pruned()).collect();
        // The first trial sets the bar at epoch 1; the others are worse.
        assert_eq!(pruned.len(), 3, "{:?}", report.summary());
        for result in &pruned {
            assert_eq!(result.status_label(), "pruned at epoch 1");
            let lines = fs::read_to_string(result.run_dir.join("metrics.jsonl")).unwrap();
            assert!(lines.lines().count() < 3, "ran to the end: {lines}");
        }
        let best = report.best().unwrap();
        assert_eq!(best.trial.overrides[0].1, "0.1");
        assert_eq!(report.summary()["pruned"], 3);
        assert!(
            fs::read_to_string(&report.leaderboard_md)
                .unwrap()
                .contains("3 pruned")
        );
        // Pruned trials are done: a rerun runs nothing.
        let again = run(&options, &list).unwrap();
        assert_eq!(again.summary()["pruned"], 3);
        assert_eq!(again.summary()["skipped"], 1);
    }

    #[test]
    fn an_interrupted_trial_resumes_from_its_saved_state() {
        let (_dir, options) = epochs_fixture();
        let list = trials(&grid(&["lr=0.1", "crash=2"]), None).unwrap();
        let first = run(&options, &list).unwrap();
        assert_eq!(first.failed().len(), 1);
        let run_dir = &first.results[0].run_dir;
        assert_eq!(
            fs::read_to_string(run_dir.join("resume.bin"))
                .unwrap()
                .trim(),
            "2"
        );

        let second = run(&options, &list).unwrap();
        let result = &second.results[0];
        let summary = result
            .summary()
            .unwrap_or_else(|| panic!("{:?}", result.status));
        assert_eq!(summary["resumed"], true);
        // Epochs 1 and 2 were not trained again.
        let epochs = fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
        assert_eq!(epochs.lines().count(), 3, "{epochs}");
        let log = fs::read_to_string(&result.log).unwrap();
        assert!(log.contains("--resume"), "{log}");
    }

    /// How many differently named trials a report holds.
    fn distinct_names(report: &SweepReport) -> usize {
        let names: HashSet<&str> = report
            .results
            .iter()
            .map(|r| r.trial.name.as_str())
            .collect();
        names.len()
    }

    #[test]
    fn a_search_proposes_distinct_trials_and_resumes() {
        let (_dir, options) = epochs_fixture();
        let space = Space::parse(&["lr=uniform(0.1,0.9)".into(), "epochs=1".into()]).unwrap();
        let search = |n| Search {
            trials: n,
            sampler: Sampler::tpe_for(n),
            seed: 3,
            context: "config".into(),
        };
        let first = super::search(&options, &space, &search(5)).unwrap();
        assert_eq!(first.results.len(), 5);
        assert_eq!(distinct_names(&first), 5);
        for result in &first.results {
            let lr: f64 = result.trial.overrides[0].1.parse().unwrap();
            assert!((0.1..=0.9).contains(&lr), "{lr}");
        }
        // Rerun with more trials: the five are kept, two more proposed.
        let second = super::search(&options, &space, &search(7)).unwrap();
        assert_eq!(second.summary()["skipped"], 5);
        assert_eq!(second.summary()["finished"], 2);
        let record: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(options.out.join("sweep.json")).unwrap())
                .unwrap();
        assert_eq!(record["trials"].as_array().unwrap().len(), 7);

        // Another base config: the same proposals, trained again.
        let edited = Search {
            context: "edited config".into(),
            ..search(7)
        };
        let third = super::search(&options, &space, &edited).unwrap();
        assert_eq!(third.summary()["skipped"], 0);
        assert_eq!(third.summary()["finished"], 7);
        let labels = |r: &SweepReport| {
            let mut labels: Vec<String> = r.results.iter().map(|r| r.trial.label()).collect();
            labels.sort();
            labels
        };
        assert_eq!(labels(&third), labels(&second));
    }

    #[test]
    fn a_parallel_search_with_pruning_proposes_each_trial_once() {
        let (_dir, mut options) = epochs_fixture();
        options.parallel = 2;
        options.pruner = Some("asha".parse().unwrap());
        let space = Space::parse(&["lr=uniform(0.1,0.9)".into()]).unwrap();
        let search = Search {
            trials: 6,
            sampler: Sampler::tpe_for(6),
            seed: 1,
            context: String::new(),
        };
        let report = super::search(&options, &space, &search).unwrap();
        assert_eq!(report.results.len(), 6);
        assert_eq!(distinct_names(&report), 6);
        assert!(report.failed().is_empty(), "{:?}", report.summary());
        // Each trial's log holds one run: no trial was started twice.
        for result in &report.results {
            let log = fs::read_to_string(&result.log).unwrap();
            assert_eq!(log.matches("$ ").count(), 1, "{log}");
        }
        assert!(report.best().is_some());
    }

    #[test]
    fn pruning_needs_a_per_epoch_metric() {
        let (_dir, mut options) = epochs_fixture();
        options.pruner = Some("median".parse().unwrap());
        options.metric = "seconds".into();
        let list = trials(&grid(&["lr=0.1"]), None).unwrap();
        assert!(matches!(
            run(&options, &list),
            Err(SweepError::PruneMetric { .. })
        ));
    }

    #[test]
    fn epoch_values_follow_the_best_validation_loss() {
        let text = "{\"epoch\":1,\"valid_loss\":0.5,\"auc\":0.6}\n\
                    {\"epoch\":2,\"valid_loss\":0.4,\"auc\":0.7}\n\
                    {\"epoch\":3,\"valid_loss\":0.45,\"auc\":0.75}\n\
                    {\"epoch\":4,\"valid_lo";
        assert_eq!(epoch_values(text, "valid_loss", Goal::Min), [0.5, 0.4, 0.4]);
        // AUC at the best-loss epoch, negated: a loss for the pruner.
        assert_eq!(epoch_values(text, "auc", Goal::Max), [-0.6, -0.7, -0.7]);
    }
}
