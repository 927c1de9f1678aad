//! The decision policy against hand-computed cases, and batch
//! recommendations through the CLI.

use std::collections::{BTreeMap, BTreeSet};

use upsell::config::Exploration;
use upsell::config::{EligibilityRule, PolicyConfig};
use upsell::policy::{Policy, UserScores};

use crate::common::{recommend_demo, repo, run_ok, upsell};

/// Two products: a (value 10 if bought) and b (value 30).
fn policy(config: PolicyConfig) -> Policy {
    Policy::new(vec!["a".into(), "b".into()], Vec::new(), config, 7)
}

/// P(convert) 0.1 for a and 0.05 for b: expected values 1.0 and 1.5.
fn user() -> UserScores {
    UserScores {
        p_convert: vec![vec![0.1, 0.05]],
        value_if_converted: vec![10.0, 30.0],
        no_offer: None,
    }
}

/// Ten users whose P(convert) for b grows by `step` per row from 0.05.
fn users_preferring_b(step: f64) -> Vec<UserScores> {
    (0..10)
        .map(|i| UserScores {
            p_convert: vec![vec![0.1, 0.05 + step * i as f64]],
            ..user()
        })
        .collect()
}

fn no_columns(_: usize, _: &str) -> Option<String> {
    None
}

fn decide(
    policy: &Policy,
    exploration: Exploration,
    users: &[UserScores],
) -> Vec<upsell::policy::Decision> {
    let ids: Vec<Option<String>> = (0..users.len())
        .map(|i| Some(format!("user-{i}")))
        .collect();
    policy.decide(exploration, users, &ids, &no_columns)
}

#[test]
fn greedy_takes_the_best_expected_value() {
    let d = &decide(
        &policy(PolicyConfig::default()),
        Exploration::Greedy,
        &[user()],
    )[0];
    assert_eq!(d.offer.as_deref(), Some("b"));
    assert!((d.expected_value - 1.5).abs() < 1e-12);
    assert_eq!(d.propensity, 1.0);
    let values: Vec<f64> = d.candidates.iter().map(|c| c.expected_value).collect();
    assert_eq!(values.len(), 2, "no contact cost: no 'no offer' candidate");
    assert!(
        (values[0] - 1.5).abs() < 1e-12 && (values[1] - 1.0).abs() < 1e-12,
        "{values:?}"
    );
}

#[test]
fn business_weights_and_contact_costs_change_the_choice() {
    let weighted = PolicyConfig {
        weights: BTreeMap::from([("a".to_string(), 2.0)]),
        ..PolicyConfig::default()
    };
    let d = &decide(&policy(weighted), Exploration::Greedy, &[user()])[0];
    // a: 0.1 * 10 * 2 = 2.0 > b: 1.5.
    assert_eq!(d.offer.as_deref(), Some("a"));
    assert!((d.expected_value - 2.0).abs() < 1e-12);

    let cost = |c: f64| PolicyConfig {
        contact_cost: c,
        ..PolicyConfig::default()
    };
    let d = &decide(&policy(cost(1.2)), Exploration::Greedy, &[user()])[0];
    // b: 1.5 - 1.2 = 0.3 beats a (-0.2) and no offer (0).
    assert_eq!(d.offer.as_deref(), Some("b"));
    assert!((d.expected_value - 0.3).abs() < 1e-12);
    assert_eq!(d.candidates.len(), 3);
    let d = &decide(&policy(cost(2.0)), Exploration::Greedy, &[user()])[0];
    assert_eq!(d.offer, None, "contact costs more than any offer is worth");
    assert_eq!(d.expected_value, 0.0);
}

#[test]
fn eligibility_rules_are_data() {
    let rules = PolicyConfig {
        exclude: vec![
            EligibilityRule {
                products: vec!["b".into()],
                column: "age".into(),
                not_in: vec!["18-24".into()],
                ..EligibilityRule::default()
            },
            EligibilityRule {
                column: "plan".into(),
                equals_product: true,
                ..EligibilityRule::default()
            },
        ],
        ..PolicyConfig::default()
    };
    let policy = policy(rules);
    let users = vec![user(), user(), user()];
    let rows = [("35-44", "free"), ("18-24", "free"), ("18-24", "b")];
    let value = |row: usize, column: &str| match column {
        "age" => Some(rows[row].0.to_string()),
        "plan" => Some(rows[row].1.to_string()),
        _ => None,
    };
    let ids = vec![None, None, None];
    let d = policy.decide(Exploration::Greedy, &users, &ids, &value);
    assert_eq!(d[0].offer.as_deref(), Some("a"), "b is for 18-24 only");
    assert_eq!(d[0].candidates.len(), 1);
    assert_eq!(d[1].offer.as_deref(), Some("b"));
    assert_eq!(d[2].offer.as_deref(), Some("a"), "the user already has b");
}

/// The probability the decision gave to offering `offer`.
fn probability(d: &upsell::policy::Decision, offer: &str) -> f64 {
    d.candidates
        .iter()
        .find(|c| c.offer.as_deref() == Some(offer))
        .unwrap()
        .probability
}

#[test]
fn exploration_propensities_are_exact_and_sum_to_one() {
    let p = policy(PolicyConfig::default());
    let d = &decide(&p, Exploration::Epsilon(0.1), &[user()])[0];
    assert!(
        (probability(d, "b") - 0.95).abs() < 1e-12 && (probability(d, "a") - 0.05).abs() < 1e-12
    );
    let d = &decide(&p, Exploration::Softmax(0.5), &[user()])[0];
    // exp(1.5 / 0.5) / (exp(1.0 / 0.5) + exp(1.5 / 0.5)) = 1 / (1 + e^-1).
    assert!((probability(d, "b") - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-12);
    for exploration in [
        Exploration::Greedy,
        Exploration::Epsilon(0.3),
        Exploration::Softmax(0.2),
    ] {
        for d in decide(&p, exploration, &vec![user(); 20]) {
            let total: f64 = d.candidates.iter().map(|c| c.probability).sum();
            assert!((total - 1.0).abs() < 1e-12, "{exploration}: {total}");
            let chosen = d.candidates.iter().find(|c| c.offer == d.offer).unwrap();
            assert_eq!(d.propensity, chosen.probability);
        }
    }
}

#[test]
fn sampled_decisions_follow_their_propensities_and_repeat_per_id() {
    let p = policy(PolicyConfig::default());
    let users = vec![user(); 4000];
    let first = decide(&p, Exploration::Softmax(0.5), &users);
    let again = decide(&p, Exploration::Softmax(0.5), &users);
    assert_eq!(first, again, "same seed and ids, same decisions");
    let share_b = first
        .iter()
        .filter(|d| d.offer.as_deref() == Some("b"))
        .count() as f64
        / 4000.0;
    let expected = 1.0 / (1.0 + (-1f64).exp());
    // Four standard errors of a binomial share over 4000 draws.
    assert!(
        (share_b - expected).abs() < 4.0 * (expected * (1.0 - expected) / 4000.0).sqrt(),
        "{share_b}"
    );
    let other_seed = Policy::new(
        vec!["a".into(), "b".into()],
        Vec::new(),
        PolicyConfig::default(),
        8,
    );
    assert_ne!(
        first,
        decide(&other_seed, Exploration::Softmax(0.5), &users)
    );
}

#[test]
fn a_capped_batch_meets_its_cap_by_shadow_price() {
    // Everyone prefers b, by a margin growing with the row: b's expected
    // value is 1.5 + 0.03 i against 1.0 for a.
    let users = users_preferring_b(0.001);
    let capped = policy(PolicyConfig {
        caps: BTreeMap::from([("b".to_string(), 0.3)]),
        ..PolicyConfig::default()
    });
    let d = decide(&capped, Exploration::Greedy, &users);
    let chosen_b: Vec<usize> = (0..10)
        .filter(|&i| d[i].offer.as_deref() == Some("b"))
        .collect();
    // The cap keeps the three users who gain most from b.
    assert_eq!(chosen_b, vec![7, 8, 9]);
    // Reported expected values stay the model's, without the shadow price.
    assert!((d[9].expected_value - (0.059 * 30.0)).abs() < 1e-9);
}

/// With a no-offer arm, an offer is worth what it adds to what the user
/// buys anyway, and "no offer" is a candidate at any contact cost.
#[test]
fn offers_are_valued_by_what_they_add_to_no_offer() {
    use upsell::policy::NoOffer;
    // Offers are worth 1.0 (a) and 1.5 (b), as before; unoffered the user
    // buys with probability 0.08 something worth 15 on average: 1.2.
    let mut scores = user();
    scores.no_offer = Some(NoOffer {
        p_convert: 0.08,
        value: 1.2,
    });
    let d = &decide(
        &policy(PolicyConfig::default()),
        Exploration::Greedy,
        &[scores.clone()],
    )[0];
    assert_eq!(d.offer.as_deref(), Some("b"));
    assert!((d.expected_value - 0.3).abs() < 1e-12, "b adds 1.5 - 1.2");
    let none = d.candidates.iter().find(|c| c.offer.is_none()).unwrap();
    assert_eq!((none.expected_value, none.p_convert), (0.0, 0.08));
    let a = d
        .candidates
        .iter()
        .find(|c| c.offer.as_deref() == Some("a"))
        .unwrap();
    assert!(
        (a.expected_value + 0.2).abs() < 1e-12,
        "a loses a sale: 1.0 - 1.2"
    );
    // A contact that costs more than b adds leaves the user alone.
    let costly = policy(PolicyConfig {
        contact_cost: 0.35,
        ..PolicyConfig::default()
    });
    assert_eq!(
        decide(&costly, Exploration::Greedy, &[scores])[0].offer,
        None
    );
}

/// A contact budget contacts the users whose best offer adds most, through
/// one shadow price on contacts; added to the contact cost, the price makes
/// the same decisions one user at a time.
#[test]
fn a_contact_budget_contacts_the_users_who_gain_most() {
    // b's expected value grows with the row: 1.5 + 0.3 i.
    let users = users_preferring_b(0.01);
    let config = PolicyConfig {
        contact_budget: Some(0.4),
        ..PolicyConfig::default()
    };
    let budgeted = policy(config.clone());
    let ids: Vec<Option<String>> = (0..10).map(|i| Some(format!("user-{i}"))).collect();
    let (d, prices) = budgeted.decide_priced(Exploration::Greedy, &users, &ids, &no_columns);
    let contacted: Vec<usize> = (0..10).filter(|&i| d[i].offer.is_some()).collect();
    assert_eq!(contacted, vec![6, 7, 8, 9]);
    let price = *prices.last().unwrap();
    assert!(price > 0.0);
    let online = policy(PolicyConfig {
        contact_cost: price,
        contact_budget: None,
        ..config
    });
    for (i, user) in users.iter().enumerate() {
        let one = decide(&online, Exploration::Greedy, std::slice::from_ref(user));
        assert_eq!(one[0].offer.is_some(), contacted.contains(&i), "user {i}");
    }
}

#[test]
fn exploration_parses_and_rejects_nonsense() {
    assert_eq!(
        "greedy".parse::<Exploration>().unwrap(),
        Exploration::Greedy
    );
    assert_eq!(
        "epsilon:0.1".parse::<Exploration>().unwrap(),
        Exploration::Epsilon(0.1)
    );
    assert_eq!(
        "softmax:2".parse::<Exploration>().unwrap(),
        Exploration::Softmax(2.0)
    );
    for bad in ["epsilon:2", "softmax:0", "softmax:x", "bogus", "epsilon"] {
        assert!(bad.parse::<Exploration>().is_err(), "{bad}");
    }
}

fn ids_of(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

#[test]
fn recommend_shards_cover_every_row_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = repo().join("checkpoints/demo");
    let rows = std::fs::read_to_string(demo.join("rows.csv")).unwrap();
    // Two files of 8 rows with distinct ids, in units of 3 rows: 6 units.
    let inputs = tmp.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(inputs.join("a.csv"), &rows).unwrap();
    std::fs::write(inputs.join("b.csv"), rows.replace("u000", "v000")).unwrap();
    let mut all: Vec<String> = Vec::new();
    for shard in 0..4 {
        run_ok(
            upsell()
                .args(["recommend", "--checkpoint"])
                .arg(&demo)
                .arg("--input")
                .arg(&inputs)
                .arg("--output")
                .arg(tmp.path().join("decisions.csv"))
                .args([
                    "--unit-rows",
                    "3",
                    "--shard",
                    &format!("{shard}/4"),
                    "--policy",
                    "epsilon:0.2",
                ]),
        );
        all.extend(ids_of(
            &tmp.path()
                .join(format!("decisions-{shard:05}-of-00004.csv")),
        ));
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 16, "{all:?}");
    assert_eq!(unique.len(), 16);
    // The whole input in one go gives the same ids.
    let output = upsell()
        .args(["recommend", "--checkpoint"])
        .arg(&demo)
        .arg("--input")
        .arg(&inputs)
        .arg("--output")
        .arg(tmp.path().join("all.csv"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let whole: BTreeSet<String> = ids_of(&tmp.path().join("all.csv")).into_iter().collect();
    assert_eq!(whole, unique.into_iter().cloned().collect());
}

#[test]
fn recommend_applies_the_rules_and_reports_propensities() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = repo().join("checkpoints/demo");
    let out = tmp.path().join("decisions.csv");
    run_ok(recommend_demo(&out)
        .args(["--policy", "softmax:0.1"])
        .args(["--set", "policy.exclude=[{ products = [\"student\"], column = \"age_bucket\", not_in = [\"13-17\", \"18-24\"] }]"]));
    let text = std::fs::read_to_string(&out).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "id",
            "offer",
            "surface",
            "message",
            "propensity",
            "expected_value",
            "candidates"
        ]
    );
    let rows = std::fs::read_to_string(demo.join("rows.csv")).unwrap();
    let columns: Vec<&str> = rows.lines().next().unwrap().split(',').collect();
    let age = columns.iter().position(|c| *c == "age_bucket").unwrap();
    for (input, decision) in rows.lines().skip(1).zip(text.lines().skip(1)) {
        let young = ["13-17", "18-24"].contains(&input.split(',').nth(age).unwrap());
        let offer = decision.split(',').nth(1).unwrap();
        assert!(young || offer != "student", "{input} -> {decision}");
        let propensity: f64 = decision.split(',').nth(4).unwrap().parse().unwrap();
        assert!(propensity > 0.0 && propensity <= 1.0);
    }
}

/// A batch decision lists its best three candidates unless asked (as
/// `/v1/recommend`), or as many as asked; the choice is the same either way.
#[test]
fn recommend_lists_the_top_k_candidates_and_chooses_over_all() {
    let tmp = tempfile::tempdir().unwrap();
    let decide = |name: &str, extra: &[&str]| -> Vec<(String, Vec<serde_json::Value>)> {
        let out = tmp.path().join(name);
        run_ok(
            recommend_demo(&out)
                .args(["--policy", "greedy"])
                .args(extra),
        );
        csv::Reader::from_path(&out)
            .unwrap()
            .deserialize::<BTreeMap<String, String>>()
            .map(|row| {
                let row = row.unwrap();
                (
                    row["offer"].clone(),
                    serde_json::from_str(&row["candidates"]).unwrap(),
                )
            })
            .collect()
    };
    let default = decide("default.csv", &[]);
    let all = decide("all.csv", &["--top-k", "1000"]);
    let one = decide("one.csv", &["--top-k", "1"]);
    assert!(!default.is_empty());
    for ((d, a), o) in default.iter().zip(&all).zip(&one) {
        assert_eq!(d.0, a.0);
        assert_eq!(d.0, o.0);
        assert_eq!(d.1.len(), 3);
        assert_eq!(o.1.len(), 1);
        assert!(a.1.len() > 3, "{}", a.1.len());
        assert_eq!(d.1[..], a.1[..3]);
    }
}

#[test]
fn bad_recommend_arguments_are_refused() {
    let demo = repo().join("checkpoints/demo");
    for (args, message) in [
        (vec!["--shard", "4/4"], "expected I/N"),
        (vec!["--policy", "softmax:-1"], "temperature"),
        (
            vec!["--set", "policy.caps.platinum=0.5"],
            "policy.caps.platinum",
        ),
    ] {
        let output = upsell()
            .args(["recommend", "--checkpoint"])
            .arg(&demo)
            .arg("--input")
            .arg(demo.join("rows.csv"))
            .args(["--output", "/nonexistent/never-written.csv"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn score_shards_cover_every_row_exactly_once_with_the_same_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = repo().join("checkpoints/demo");
    let rows = std::fs::read_to_string(demo.join("rows.csv")).unwrap();
    let inputs = tmp.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(inputs.join("a.csv"), &rows).unwrap();
    std::fs::write(inputs.join("b.csv"), rows.replace("u000", "v000")).unwrap();
    let score = |shard: Option<(usize, usize)>, output: &str| {
        let mut command = upsell();
        command
            .args(["score", "--checkpoint"])
            .arg(&demo)
            .arg("--input")
            .arg(&inputs)
            .arg("--output")
            .arg(tmp.path().join(output))
            .args(["--unit-rows", "3"]);
        match shard {
            // A Kubernetes Indexed Job sets the index; the manifest sets the count.
            Some((index, count)) if index == count - 1 => {
                command
                    .env("JOB_COMPLETION_INDEX", index.to_string())
                    .env("JOB_COMPLETIONS", count.to_string());
            }
            Some((index, count)) => {
                command.args(["--shard", &format!("{index}/{count}")]);
            }
            None => {}
        }
        run_ok(&mut command);
    };
    score(None, "all.csv");
    let whole = std::fs::read_to_string(tmp.path().join("all.csv")).unwrap();
    let mut expected: Vec<&str> = whole.lines().skip(1).collect();
    expected.sort_unstable();
    // Seven shards for six units: the last one is empty, with a header.
    for count in [4, 7] {
        let mut lines: Vec<String> = Vec::new();
        for index in 0..count {
            score(Some((index, count)), "scores.csv");
            let path = tmp
                .path()
                .join(format!("scores-{index:05}-of-{count:05}.csv"));
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().next(), whole.lines().next(), "{path:?}");
            lines.extend(text.lines().skip(1).map(str::to_string));
        }
        lines.sort_unstable();
        assert_eq!(lines, expected, "{count} shards");
    }
}

/// The policy chooses the surface and the message, so rows need not carry
/// them: without the context columns the decisions are the same.
#[test]
fn recommend_needs_no_context_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = repo().join("checkpoints/demo");
    let rows = std::fs::read_to_string(demo.join("rows.csv")).unwrap();
    let header: Vec<&str> = rows.lines().next().unwrap().split(',').collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| !["surface", "message", "offer"].contains(&header[i]))
        .collect();
    let without: String = rows
        .lines()
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            keep.iter().map(|&i| cells[i]).collect::<Vec<_>>().join(",") + "\n"
        })
        .collect();
    std::fs::write(tmp.path().join("users.csv"), without).unwrap();
    let decide = |input: &std::path::Path, out: &str| {
        let out = tmp.path().join(out);
        run_ok(
            upsell()
                .args(["recommend", "--checkpoint"])
                .arg(&demo)
                .arg("--input")
                .arg(input)
                .arg("--output")
                .arg(&out),
        );
        std::fs::read_to_string(out).unwrap()
    };
    let with_context = decide(&demo.join("rows.csv"), "with.csv");
    let without_context = decide(&tmp.path().join("users.csv"), "without.csv");
    assert_eq!(without_context, with_context);
    assert!(with_context.lines().nth(1).unwrap().contains(','));
}

/// `policy.holdout` keeps a randomised share of users from any offer, the
/// same users every time, and logs true propensities: the mixture of the
/// holdout and the exploration policy.
#[test]
fn the_holdout_is_a_stable_random_share_with_true_propensities() {
    let config = |seed_share: f64| PolicyConfig {
        holdout: seed_share,
        ..PolicyConfig::default()
    };
    let users = vec![user(); 4000];
    let held = decide(&policy(config(0.2)), Exploration::Epsilon(0.1), &users);
    let out: Vec<&upsell::policy::Decision> = held.iter().filter(|d| d.holdout).collect();
    let share = out.len() as f64 / users.len() as f64;
    assert!((share - 0.2).abs() < 0.02, "held out {share}");
    for d in &held {
        let total: f64 = d.candidates.iter().map(|c| c.probability).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        let none = d.candidates.iter().find(|c| c.offer.is_none()).unwrap();
        assert!((none.probability - 0.2).abs() < 1e-12);
        if d.holdout {
            assert_eq!(d.offer, None);
            assert!(d.context.is_empty());
            assert!((d.propensity - 0.2).abs() < 1e-12);
        } else {
            // Epsilon 0.1 over two offers, times the 0.8 not held out.
            let expected = if d.offer.as_deref() == Some("b") {
                0.95
            } else {
                0.05
            } * 0.8;
            assert!((d.propensity - expected).abs() < 1e-12, "{d:?}");
        }
    }
    // The same ids and seed hold out the same users; another seed others.
    let again = decide(&policy(config(0.2)), Exploration::Epsilon(0.1), &users);
    assert_eq!(held, again);
    let other = Policy::new(vec!["a".into(), "b".into()], Vec::new(), config(0.2), 8);
    let other = decide(&other, Exploration::Epsilon(0.1), &users);
    assert!(held.iter().zip(&other).any(|(a, b)| a.holdout != b.holdout));
    // Without a holdout nothing changes: no "no offer" candidate appears.
    let none = decide(&policy(config(0.0)), Exploration::Greedy, &[user()]);
    assert!(!none[0].holdout && none[0].candidates.len() == 2);
}

#[test]
fn a_holdout_outside_zero_to_one_is_refused() {
    let output = upsell()
        .args(["config", "--set", "policy.holdout=1.0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("policy.holdout"), "{stderr}");
}

#[test]
fn recommend_marks_the_holdout_in_its_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("decisions.csv");
    run_ok(recommend_demo(&out).args(["--set", "policy.holdout=0.5"]));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.last(), Some(&"holdout"), "{header:?}");
    let mut held = 0;
    for line in lines {
        let offer = line.split(',').nth(1).unwrap();
        if line.ends_with(",true") {
            held += 1;
            assert_eq!(offer, "", "{line}");
        } else {
            assert!(line.ends_with(",false") && !offer.is_empty(), "{line}");
        }
    }
    assert!(held > 0 && held < 8, "{held} of 8 held out");
}

/// Two contexts: the push and email surfaces.
fn push_and_email() -> Vec<Vec<(String, String)>> {
    ["push", "email"]
        .iter()
        .map(|s| vec![("surface".to_string(), s.to_string())])
        .collect()
}

/// No push without the user's opt-in.
fn push_needs_opt_in() -> EligibilityRule {
    EligibilityRule {
        column: "push_opt_in".into(),
        not_in: vec!["true".into()],
        contexts: BTreeMap::from([("surface".to_string(), vec!["push".to_string()])]),
        ..EligibilityRule::default()
    }
}

/// A rule may cover some contexts only (push needs consent), and compare a
/// number (no offer within a week of the last one: a frequency cap).
#[test]
fn rules_can_exclude_contexts_and_compare_numbers() {
    let rules = vec![
        push_needs_opt_in(),
        EligibilityRule {
            column: "days_since_last_upsell".into(),
            below: Some(7.0),
            ..EligibilityRule::default()
        },
    ];
    let policy = Policy::new(
        vec!["a".into(), "b".into()],
        push_and_email(),
        PolicyConfig {
            exclude: rules,
            ..PolicyConfig::default()
        },
        7,
    );
    // Push converts better, so it wins wherever it is allowed.
    let scores = UserScores {
        p_convert: vec![vec![0.2, 0.1], vec![0.1, 0.05]],
        value_if_converted: vec![10.0, 30.0],
        no_offer: None,
    };
    let user = |opt_in: Option<&str>, days: Option<&str>| {
        let (opt_in, days) = (opt_in.map(str::to_string), days.map(str::to_string));
        let decision = policy.decide(
            Exploration::Greedy,
            std::slice::from_ref(&scores),
            &[Some("u".into())],
            &move |_, column| match column {
                "push_opt_in" => opt_in.clone(),
                "days_since_last_upsell" => days.clone(),
                _ => None,
            },
        );
        decision.into_iter().next().unwrap()
    };
    let surfaces = |d: &upsell::policy::Decision| -> BTreeSet<String> {
        d.candidates
            .iter()
            .flat_map(|c| c.context.iter().map(|(_, v)| v.clone()))
            .collect()
    };
    let consented = user(Some("true"), None);
    assert_eq!(consented.context[0].1, "push");
    assert_eq!(
        surfaces(&consented),
        BTreeSet::from(["push".into(), "email".into()])
    );
    let refused = user(Some("false"), Some("30"));
    assert_eq!(refused.context[0].1, "email");
    assert_eq!(surfaces(&refused), BTreeSet::from(["email".into()]));
    // Contacted three days ago: nothing is offered.
    let recent = user(Some("true"), Some("3"));
    assert_eq!(recent.offer, None);
    assert!(recent.candidates.iter().all(|c| c.offer.is_none()));
}

#[test]
fn a_rule_on_an_unknown_context_column_is_refused() {
    let output = upsell()
        .args([
            "config",
            "--set",
            "policy.exclude=[{ column = \"age_bucket\", in = [\"13-17\"], contexts = { channel = [\"sms\"] } }]",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("policy.exclude[0].contexts") && stderr.contains("channel"),
        "{stderr}"
    );
}

/// A user's decision is the same whether it is decided alone (a request) or
/// in a large batch (a file, decided side by side on the CPU pool): the same
/// candidates, rules, exploration draw and holdout.
#[test]
fn a_decision_does_not_depend_on_the_batch_it_is_in() {
    let policy = Policy::new(
        vec!["a".into(), "b".into()],
        push_and_email(),
        PolicyConfig {
            exclude: vec![push_needs_opt_in()],
            holdout: 0.1,
            contact_cost: 0.2,
            ..PolicyConfig::default()
        },
        7,
    )
    .listing(2);
    let users: Vec<UserScores> = (0..1500)
        .map(|i| {
            let x = (i % 37) as f64 / 37.0;
            UserScores {
                p_convert: vec![
                    vec![0.05 + 0.1 * x, 0.1 - 0.05 * x],
                    vec![0.08, 0.04 + 0.02 * x],
                ],
                value_if_converted: vec![10.0, 30.0],
                no_offer: Some(upsell::policy::NoOffer {
                    p_convert: 0.01 * x,
                    value: 0.3 * x,
                }),
            }
        })
        .collect();
    let ids: Vec<Option<String>> = (0..users.len()).map(|i| Some(format!("u{i}"))).collect();
    let opt_in = |row: usize, column: &str| -> Option<String> {
        (column == "push_opt_in").then(|| row.is_multiple_of(3).to_string())
    };
    let exploration = Exploration::Softmax(0.5);
    let batch = policy.decide(exploration, &users, &ids, &opt_in);
    for (row, decided) in batch.iter().enumerate() {
        let alone = policy.decide(
            exploration,
            std::slice::from_ref(&users[row]),
            std::slice::from_ref(&ids[row]),
            &|_, column| opt_in(row, column),
        );
        assert_eq!(&alone[0], decided, "row {row}");
    }
    // The rows differ, so the comparison covers every kind of decision.
    let offers: BTreeSet<Option<String>> = batch.iter().map(|d| d.offer.clone()).collect();
    assert_eq!(offers.len(), 3, "{offers:?}");
    assert!(batch.iter().any(|d| d.holdout));
}
