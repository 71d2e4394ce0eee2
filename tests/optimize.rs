//! `lexmesh optimize`, the embedded search: trials on threads with the search crate's state
//! machine, on the shipped sample.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use lexmesh_testkit::cli::{run, text};
use lexmesh_testkit::{read_json, sample_path, send_signal};
use serde_json::Value;

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// A learning rate that learns (0.05) and one that cannot in a few epochs (1e-6), crossed with
/// three dropouts: a grid of six trials, half of them clearly weak after one epoch.
///
/// The weak trials (learning rate 1e-6) must stay weak: a hidden layer keeps them near their
/// random start, where the default linear bag (zero-initialised, Adam's first steps of equal
/// size whatever the rate) classifies the sample as well at 1e-6 as at 0.05 after one epoch.
const SPACE: &str = "[space]\n\
                     learning_rate = [0.05, 1e-6]\n\
                     dropout = [0.0, 0.1, 0.2]\n\
                     [base]\n\
                     patience = 0\n\
                     batch_size = 8\n\
                     hidden = 16\n\
                     [asha]\n\
                     grace_period = 1\n\
                     reduction_factor = 2\n";

fn optimize(dir: &Path, space: &str, extra: &[&str]) -> Command {
    let space_path = dir.join("space.toml");
    std::fs::write(&space_path, space).unwrap();
    let mut cmd = Command::new(LEXMESH);
    cmd.args(["optimize", "--threads", "2", "--space"])
        .arg(&space_path)
        .arg("--data")
        .arg(sample_path("train.jsonl"))
        .arg("--validation")
        .arg(sample_path("validation.jsonl"))
        .arg("--out")
        .arg(dir.join("out"))
        .args(extra);
    cmd
}

fn trials(state: &Value) -> &Vec<Value> {
    state["trials"].as_array().expect("trials")
}

#[test]
fn an_asha_search_stops_weak_trials_and_keeps_the_best_trials_model() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&mut optimize(
        dir.path(),
        SPACE,
        &[
            "--sampler",
            "grid",
            "--scheduler",
            "asha",
            "--trials",
            "6",
            "--epochs",
            "4",
            "--max-concurrent",
            "2",
            "--format",
            "json",
        ],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let out = dir.path().join("out");
    let state = read_json(&out.join("search.json"));
    assert_eq!(state["phase"]["phase"], "finished", "{state}");
    assert_eq!(state["phase"]["reason"], "all_trials_done", "{state}");

    // Every configuration of the grid tried once, every trial ended.
    let trials = trials(&state);
    assert_eq!(trials.len(), 6, "{state}");
    let mut configurations: Vec<String> = trials
        .iter()
        .map(|t| t["configuration"].to_string())
        .collect();
    configurations.sort();
    configurations.dedup();
    assert_eq!(configurations.len(), 6, "a configuration tried twice");
    for t in trials {
        let status = t["status"].as_str().unwrap();
        assert!(
            matches!(status, "completed" | "stopped"),
            "{}: {status}",
            t["id"]
        );
    }

    // ASHA stopped weak trials at a rung (epochs 1 or 2: grace 1, factor 2), each below that
    // rung's cutoff with the value the rung recorded for it, and none of them trained to the
    // end; the completed ones trained every epoch.
    let stopped: Vec<&Value> = trials.iter().filter(|t| t["status"] == "stopped").collect();
    assert!(!stopped.is_empty(), "no trial was stopped: {state}");
    let rungs = state["asha"]["brackets"][0]["rungs"].as_array().unwrap();
    for t in &stopped {
        let reason = &t["stop_reason"];
        assert_eq!(reason["kind"], "rung", "{t}");
        let milestone = reason["milestone"].as_f64().unwrap();
        assert!(milestone == 1.0 || milestone == 2.0, "{t}");
        assert!(
            reason["value"].as_f64().unwrap() < reason["cutoff"].as_f64().unwrap(),
            "{t}"
        );
        let epochs = t["epochs"].as_array().unwrap().len();
        assert!(epochs < 4, "a stopped trial trained all its epochs: {t}");
        let rung = rungs
            .iter()
            .find(|r| r["milestone"].as_f64() == Some(milestone))
            .unwrap();
        assert_eq!(
            rung["recorded"][t["id"].as_str().unwrap()],
            reason["value"],
            "{t}"
        );
    }
    for t in trials.iter().filter(|t| t["status"] == "completed") {
        assert_eq!(t["epochs"].as_array().unwrap().len(), 4, "{t}");
    }

    // The best trial's model is in best/, and scores there what the search says it scored.
    let best_f1 = trials
        .iter()
        .filter_map(|t| t["best"]["macro_f1"].as_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    let best = &state["phase"]["best"];
    assert_eq!(
        best["score"]["macro_f1"].as_f64().unwrap(),
        best_f1,
        "{state}"
    );
    let e = run(Command::new(LEXMESH)
        .args(["evaluate", "--format", "json", "--model"])
        .arg(out.join("best"))
        .arg("--data")
        .arg(sample_path("validation.jsonl")));
    assert!(e.status.success(), "{:?}", text(&e));
    let evaluated: Value = serde_json::from_slice(&e.stdout).unwrap();
    let f1 = evaluated["macro_f1"].as_f64().unwrap();
    assert!(
        (f1 - best_f1).abs() < 1e-9,
        "best/ scores {f1}, the search says {best_f1}"
    );
    let best_id = best["trial_id"].as_str().unwrap();
    assert_eq!(
        std::fs::read(out.join("best/model.bpk")).unwrap(),
        std::fs::read(out.join("trials").join(best_id).join("model.bpk")).unwrap()
    );

    // The JSON lines: the search's actions and every epoch, the result last.
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let starts = lines
        .iter()
        .filter(|l| l["event"] == "search" && l["action"]["kind"] == "start_trial")
        .count();
    assert_eq!(starts, 6);
    let epochs = lines.iter().filter(|l| l["event"] == "epoch").count();
    let recorded: usize = trials
        .iter()
        .map(|t| t["epochs"].as_array().unwrap().len())
        .sum();
    assert_eq!(epochs, recorded);
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "search_over");
    assert_eq!(last["best"]["trial_id"], best["trial_id"]);
}

#[test]
fn a_bad_search_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], &str); 4] = [
        (
            "[space]\nlerning_rate = [0.1]\n",
            &["--trials", "2"],
            "lerning_rate",
        ),
        (
            "[space]\nhidden = { int = { low = 9, high = 3 } }\n",
            &["--trials", "2"],
            "inverted",
        ),
        ("[space]\nlearning_rate = [0.1]\n", &[], "--trials"),
        (
            "[space]\nlearning_rate = [0.1, 0.2]\n[asha]\ngrace_period = 1\n",
            &["--trials", "2"],
            "--scheduler asha",
        ),
    ];
    for (space, extra, needle) in cases {
        let o = run(&mut optimize(dir.path(), space, extra));
        let (_, stderr) = text(&o);
        assert!(!o.status.success(), "{space}: accepted");
        assert!(stderr.contains(needle), "{space}: {stderr}");
        assert!(
            !dir.path().join("out").exists(),
            "{space}: something was written"
        );
    }
}

#[test]
fn ctrl_c_cancels_the_running_trials_and_ends_the_search_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = optimize(
        dir.path(),
        "[space]\nlearning_rate = [0.05, 0.01, 0.02, 0.03]\n[base]\npatience = 0\n\
         batch_size = 4\n",
        &[
            "--trials",
            "4",
            "--epochs",
            "50",
            "--max-concurrent",
            "2",
            "--format",
            "json",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Once a trial has finished an epoch, interrupt.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if line["event"] == "epoch" {
            break;
        }
    }
    send_signal("-INT", child.id());
    let rest: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    let state = read_json(&dir.path().join("out/search.json"));
    assert_eq!(state["phase"]["reason"], "cancelled", "{state}");
    let trials = trials(&state);
    assert!(!trials.is_empty());
    for t in trials {
        assert_eq!(t["status"], "cancelled", "{t}");
        assert!(
            t["epochs"].as_array().unwrap().len() < 50,
            "a cancelled trial trained to its end: {t}"
        );
    }
    // Nothing new started after the interrupt: only the two trials that were running.
    assert_eq!(trials.len(), 2, "{state}");
    assert_eq!(rest.last().unwrap()["event"], "search_over");
}
