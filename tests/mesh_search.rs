//! Hyperparameter search over the mesh, with a real nats-server and real `lexmesh serve`
//! processes: an ASHA search across two trainer replicas runs its trials as train jobs within
//! its concurrency bound, stops the trials below a rung's cutoff (their train jobs end
//! `cancelled`), accounts for every configuration once and registers the best trial's model,
//! which `classify` then uses; a search whose coordinator is killed with SIGKILL is taken over
//! by another trainer and completes without a trial published twice or left running, and a
//! trial that ended while no coordinator ran keeps every epoch it reported; a trial whose
//! trainer is killed with SIGKILL resumes elsewhere from its checkpoint and the search
//! completes; cancelling a search cancels its running trials; and malformed optimize jobs each
//! get one typed `failed` event before anything runs.
//!
//! Every event the tests read back is checked against `schemas/job-event.v1.json`; the search's
//! events are read from the events stream in stream order, so the concurrency check sees the
//! order in which the broker stored them. Every completed search is also replayed: a fresh
//! [`Experiment`] fed the observations its trials' events make, in stream order, must end in
//! the state the coordinator saved (trials, ASHA rung records), each of its rung decisions
//! following Ray's rule from the values recorded at the rung before it.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use futures::TryStreamExt;
use lexmesh_search::asha::cutoff;
use lexmesh_search::{Action, Asha, Experiment, Judge, Observation, Score, StopReason, Trial};
use lexmesh_testkit::{CLASSIFY, TestMesh, inline, is_final, sample_records, sample_subset, short};
use serde_json::{Value, json};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// Where optimize jobs are submitted.
const OPTIMIZE: &str = "lexmesh.jobs.optimize";

/// A whole search of the tests (six trials of at most six short epochs, two at a time) on
/// this 2-core machine, with room for a coordinator's take-over.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(240);

/// A malformed job's one event.
const REJECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Trials that may run at once in the searches of these tests.
const CONCURRENCY: usize = 2;

/// The grid the searches walk: every configuration once. A learning rate of 1e-5 barely
/// moves the model in its first epoch, 0.01 does: the slow trials fall below the first rung's
/// cutoff as soon as a fast one is recorded there.
fn grid() -> BTreeSet<String> {
    let mut points = BTreeSet::new();
    for dim in [16, 32, 64] {
        for lr in [0.01, 0.00001] {
            points.insert(json!({"embedding_dim": dim, "learning_rate": lr}).to_string());
        }
    }
    points
}

/// An ASHA search over [`grid`] on the whole sample: a small CNN fed one example per batch, so
/// that an epoch takes long enough (about half a second) for a stop to land within it.
fn search_job(job_id: &str, model_id: &str) -> Value {
    json!({
        "job_id": job_id,
        "model_id": model_id,
        "dataset": inline(
            sample_records("train.jsonl"),
            Some(sample_records("validation.jsonl")),
        ),
        "base": {
            "model": "cnn",
            "batch_size": 1,
            "patience": 0,
            "hidden": 16,
            "max_length": 256,
            "seed": 1,
        },
        "trials": 6,
        "search_space": {
            "embedding_dim": [16, 32, 64],
            "learning_rate": {"choice": [0.01, 0.00001]},
        },
        "sampler": "grid",
        "scheduler": {"asha": {"grace_period": 1, "reduction_factor": 2}},
        "max_concurrent_trials": CONCURRENCY,
        "max_epochs": 6,
    })
}

/// A preprocessor, two trainers (`trainer-a`, `trainer-b`, one train job each at a time, with
/// `trainer_env`) and an evaluator.
async fn start_mesh(mesh: &mut TestMesh, trainer_env: &[(&str, &str)]) {
    let mut env = vec![("LEXMESH_JOBS__CONCURRENCY", "1")];
    env.extend_from_slice(trainer_env);
    mesh.spawn("preprocessor", "preprocessor-a", &[]);
    mesh.spawn("trainer", "trainer-a", &env);
    mesh.spawn("trainer", "trainer-b", &env);
    mesh.spawn("evaluator", "evaluator-a", &[]);
    for instance in ["preprocessor-a", "trainer-a", "trainer-b", "evaluator-a"] {
        mesh.wait_ready(instance).await;
    }
}

/// `state.last_seq` of a stream: how many messages it ever stored.
async fn last_sequence(mesh: &TestMesh, stream: &str) -> u64 {
    let info = mesh
        .request_raw(&format!("$JS.API.STREAM.INFO.{stream}"), Vec::new(), None)
        .await;
    info["state"]["last_seq"].as_u64().expect("last_seq")
}

/// `lexmesh <args>` against the test's server; its stdout, failing unless it exits 0.
fn lexmesh(mesh: &TestMesh, args: &[&str]) -> (String, String) {
    let mut cmd = Command::new(LEXMESH);
    cmd.args(args).current_dir(mesh.dir());
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("LEXMESH_") || name == "NATS_URL" {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.env("NATS_URL", mesh.server.url()).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "lexmesh {} exited with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        args.join(" "),
        out.status
    );
    (stdout, stderr)
}

/// The search's trials as `lexmesh trials JOB --format json` lists them.
fn trials_of(mesh: &TestMesh, job_id: &str) -> Vec<Value> {
    let (stdout, _) = lexmesh(mesh, &["trials", job_id, "--format", "json"]);
    serde_json::from_str::<Value>(&stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap()
}

/// Checks that a finished search accounted for every configuration of the grid exactly once,
/// each trial's train job started once and ended once, and never more than [`CONCURRENCY`]
/// train jobs ran at once (from a trial's first `accepted` to its final event, in stream
/// order). Returns the trials by id.
fn assert_accounted(job_id: &str, trials: &[Value], events: &[Value]) -> BTreeMap<String, Value> {
    // Every configuration of the grid once, each in a final status.
    let configurations: Vec<String> = trials
        .iter()
        .map(|t| t["configuration"].to_string())
        .collect();
    let distinct: BTreeSet<String> = configurations.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        configurations.len(),
        "a configuration ran twice: {configurations:?}"
    );
    assert_eq!(distinct, grid(), "the trials are not the grid");
    let by_id: BTreeMap<String, Value> = trials
        .iter()
        .map(|t| (t["trial_id"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    for (id, trial) in &by_id {
        assert!(id.starts_with(&format!("{job_id}-t")), "{id}");
        let status = trial["status"].as_str().unwrap();
        assert!(
            ["completed", "stopped", "cancelled", "failed"].contains(&status),
            "{id} is still {status}"
        );
    }
    // The search's own events: one start and one end per trial.
    let own = |kind: &str, id: &str| {
        events
            .iter()
            .filter(|e| e["job_id"] == job_id && e["event"] == kind && e["trial_id"] == id)
            .count()
    };
    for id in by_id.keys() {
        assert_eq!(own("trial_started", id), 1, "trial_started of {id}");
        let ends = own("trial_completed", id) + own("trial_stopped", id) + own("trial_failed", id);
        assert_eq!(ends, 1, "end events of {id}");
    }
    // Each trial's train job ended exactly once, and at most CONCURRENCY ran at once. A trial
    // stops holding its slot when the search tells its end: the search may have seen the end in
    // the train job's record and started the next trial before the job's own final event was
    // stored, but never before its own end event (published before the next trial's submit).
    let mut running = BTreeSet::new();
    let mut ended = BTreeMap::<String, usize>::new();
    let mut most = 0;
    for event in events {
        if event["job_id"] == job_id
            && ["trial_completed", "trial_stopped", "trial_failed"]
                .iter()
                .any(|kind| event["event"] == *kind)
            && let Some(trial) = event["trial_id"].as_str()
        {
            running.remove(trial);
            continue;
        }
        let Some(id) = event["job_id"].as_str() else {
            continue;
        };
        if !by_id.contains_key(id) {
            continue;
        }
        if event["event"] == "accepted" && !ended.contains_key(id) {
            running.insert(id.to_string());
            most = most.max(running.len());
        }
        if is_final(event) {
            running.remove(id);
            *ended.entry(id.to_string()).or_default() += 1;
        }
    }
    assert!(most <= CONCURRENCY, "{most} trials ran at once");
    assert!(most >= 1);
    for id in by_id.keys() {
        assert_eq!(ended.get(id), Some(&1), "final events of {id}'s train job");
    }
    by_id
}

/// The final event of a trial's train job.
fn final_event<'a>(events: &'a [Value], trial_id: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["job_id"] == trial_id && is_final(e))
        .unwrap_or_else(|| panic!("no final event of {trial_id}"))
}

/// Checks that no trial was published twice: the jobs stream stored the search and one message
/// per trial, and each trial's attempts are the deliveries of that one message (increasing
/// attempt numbers); and that every trial's train job has ended.
async fn assert_published_once(mesh: &TestMesh, trials: &BTreeMap<String, Value>) {
    assert_eq!(
        last_sequence(mesh, "LEXMESH_JOBS").await,
        1 + trials.len() as u64,
        "the jobs stream stored more messages than the search and its trials"
    );
    for id in trials.keys() {
        let record = mesh.job_record(id).await.expect("a trial's job record");
        assert!(
            ["completed", "cancelled", "failed"].contains(&record["status"].as_str().unwrap()),
            "{id} is left {}",
            record["status"]
        );
        let attempts: Vec<u64> = record["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["attempt"].as_u64().unwrap())
            .collect();
        assert!(
            attempts.windows(2).all(|w| w[0] < w[1]),
            "{id} was delivered from more than one message: attempts {attempts:?}"
        );
    }
}

/// The search's state as its coordinator saved it: the `experiment` of its entry in the
/// `lexmesh_searches` bucket (key = job id; `services/mesh/src/search/state.rs`).
async fn saved_search(mesh: &TestMesh, job_id: &str) -> Experiment {
    let js = async_nats::jetstream::new(mesh.client.clone());
    let searches = js.get_key_value("lexmesh_searches").await.unwrap();
    let bytes = searches
        .get(job_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no saved state of {job_id}"));
    let state: Value = serde_json::from_slice(&bytes).unwrap();
    for field in [
        "base",
        "model_id",
        "events_cursor",
        "created_ms",
        "updated_ms",
    ] {
        assert!(state.get(field).is_some(), "saved state without {field}");
    }
    serde_json::from_value(state["experiment"].clone()).unwrap()
}

/// What one of a trial's train-job events tells its search, read from the wire as the README
/// says (the coordinator does the same on typed events in `services/mesh/src/search/observe.rs`):
/// `accepted` or `progress` of phase `started` start it (on `instance`), `progress` of phase
/// `epoch` gives the epoch's validation macro-F1 and loss, `completed` the kept (best) epoch's
/// macro-F1 with that epoch's loss as the search saw it, `failed` without a retry fails it,
/// `cancelled` answers a stop. None for anything else, or another job's event.
fn observation_of(event: &Value, search: &Experiment) -> Option<Observation> {
    let trial_id = event["job_id"].as_str()?.to_string();
    let trial = search.trial(&trial_id)?;
    let number = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    match (event["event"].as_str()?, event["phase"].as_str()) {
        ("accepted", _) | ("progress", Some("started")) => Some(Observation::TrialStarted {
            trial_id,
            instance: event["instance"].as_str().map(str::to_string),
        }),
        ("progress", Some("epoch")) => Some(Observation::EpochEnded {
            epoch: u32::try_from(event["epoch"].as_u64()?).ok()?,
            macro_f1: number(&event["validation_macro_f1"]),
            validation_loss: number(&event["validation_loss"]),
            trial_id,
        }),
        ("completed", _) => {
            let train = &event["result"]["train"];
            let best_epoch = train["best_epoch"].as_u64();
            let loss = trial
                .epochs
                .iter()
                .find(|e| Some(u64::from(e.epoch)) == best_epoch)
                .or_else(|| {
                    trial
                        .epochs
                        .iter()
                        .min_by(|a, b| a.score.validation_loss.total_cmp(&b.score.validation_loss))
                })
                .map_or(f64::NAN, |e| e.score.validation_loss);
            Some(Observation::TrialCompleted {
                score: Score {
                    macro_f1: number(&train["validation"]["macro_f1"]),
                    validation_loss: loss,
                },
                trial_id,
            })
        }
        ("failed", _) if event["retrying"] == false => Some(Observation::TrialFailed {
            error: format!(
                "{}: {}",
                event["code"].as_str().unwrap_or_default(),
                event["reason"].as_str().unwrap_or_default()
            ),
            trial_id,
        }),
        ("cancelled", _) => Some(Observation::TrialStopped { trial_id }),
        _ => None,
    }
}

/// Checks one rung decision of ASHA with Ray's semantics: `trial` reached the rung `milestone`
/// at `epoch` (its first result at or past it), the value judged there is its best macro-F1 so
/// far (or its last, by the spec's judge), and it goes on (`stop_cutoff` none) only if that
/// value is not below the `(1 - 1/rf)` quantile of the values recorded at the rung before it
/// (`before`: the scheduler's state before the result), no cutoff on an empty rung; it stops
/// (`stop_cutoff` the cutoff it gave) only below that quantile.
fn assert_rung_decision(
    before: &Asha,
    trial: &Trial,
    epoch: u32,
    milestone: f64,
    value: f64,
    stop_cutoff: Option<f64>,
) {
    let id = &trial.id;
    let rung = before.brackets[trial.bracket]
        .rungs
        .iter()
        .find(|r| r.milestone == milestone)
        .unwrap_or_else(|| panic!("{id}: no rung at {milestone}"));
    assert!(
        !rung.recorded.contains_key(id),
        "{id} was judged twice at rung {milestone}"
    );
    let reached: Vec<_> = trial.epochs.iter().filter(|e| e.epoch <= epoch).collect();
    assert!(
        f64::from(epoch) >= milestone
            && reached
                .iter()
                .rev()
                .nth(1)
                .is_none_or(|e| f64::from(e.epoch) < milestone),
        "{id}: epoch {epoch} is not its first result at or past rung {milestone}"
    );
    let judged = match before.config.judge {
        Judge::Last => reached.last().map(|e| e.score.macro_f1),
        Judge::BestSoFar => reached.iter().map(|e| e.score.macro_f1).reduce(f64::max),
    };
    assert_eq!(
        Some(value),
        judged,
        "{id}: the value judged at rung {milestone}"
    );
    let bar = cutoff(&rung.recorded, before.config.reduction_factor);
    match stop_cutoff {
        None => assert!(
            bar.is_none_or(|bar| value >= bar),
            "{id} was promoted at rung {milestone} with {value}, below the cutoff {bar:?} of {:?}",
            rung.recorded
        ),
        Some(given) => {
            assert_eq!(Some(given), bar, "{id}: the cutoff of rung {milestone}");
            assert!(
                value < given,
                "{id} was stopped at rung {milestone} with {value}, not below {given}"
            );
        }
    }
}

/// Replays a finished search: a fresh [`Experiment`] with the saved spec, launched, then fed
/// in stream order the observation each of its trials' events makes (a stop is answered as
/// the coordinator answers it: by the trial's train job's end, which comes later in the stream).
/// Checks every rung decision of the replay ([`assert_rung_decision`]), that every value
/// recorded at a rung came with a decision, that the coordinator published exactly the
/// replay's promotions and stops, and that the replay ends where the coordinator's saved state
/// does: the same trials (status, epochs, scores, stop reasons), the same rung records, the
/// same end. The instances a trial ran on are not compared: a start seen before the trial was
/// known to the replay would be missing, and they judge nothing.
fn assert_replay_matches(saved: &Experiment, events: &[Value]) {
    let job_id = saved.id();
    assert!(
        saved.is_finished(),
        "{job_id} is not over: {:?}",
        saved.phase()
    );
    let mut replay = Experiment::new(job_id, saved.spec().clone()).unwrap();
    replay.launch();
    let mut promoted = BTreeSet::new();
    let mut judged = BTreeSet::new();
    for event in events {
        let Some(observation) = observation_of(event, &replay) else {
            continue;
        };
        let before = replay.asha().cloned();
        let actions = replay.observe(observation);
        for action in &actions {
            let (trial_id, epoch, milestone, value, stop_cutoff) = match action {
                Action::TrialPromoted {
                    trial_id,
                    epoch,
                    milestone,
                    value,
                    ..
                } => {
                    promoted.insert(format!("{trial_id} {epoch} {milestone} {value}"));
                    (trial_id, *epoch, *milestone, *value, None)
                }
                Action::StopTrial {
                    trial_id,
                    reason:
                        StopReason::Rung {
                            milestone,
                            value,
                            cutoff,
                        },
                    ..
                } => {
                    let trial = replay.trial(trial_id).unwrap();
                    (
                        trial_id,
                        trial.epochs_run(),
                        *milestone,
                        *value,
                        Some(*cutoff),
                    )
                }
                _ => continue,
            };
            let before = before.as_ref().expect("rung decisions come from ASHA");
            assert_rung_decision(
                before,
                replay.trial(trial_id).unwrap(),
                epoch,
                milestone,
                value,
                stop_cutoff,
            );
            judged.insert(format!("{trial_id} {milestone}"));
        }
    }
    // Every value recorded at a rung came with a promotion or a stop, but at the last epoch
    // (the trial's normal end).
    if let Some(asha) = replay.asha() {
        for rung in asha.brackets.iter().flat_map(|b| &b.rungs) {
            for id in rung.recorded.keys() {
                let last = replay.trial(id).unwrap().epochs_run() == replay.spec().max_epochs;
                assert!(
                    last || judged.contains(&format!("{id} {}", rung.milestone)),
                    "{id} was recorded at rung {} without a decision",
                    rung.milestone
                );
            }
        }
    }
    // The coordinator published the replay's promotions, each once, and its stops.
    let own = |kind: &'static str| {
        events
            .iter()
            .filter(move |e| e["job_id"] == job_id && e["event"] == kind)
    };
    let published: Vec<String> = own("trial_promoted")
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["trial_id"].as_str().unwrap(),
                e["epoch"],
                e["milestone"].as_f64().unwrap(),
                e["value"].as_f64().unwrap()
            )
        })
        .collect();
    assert_eq!(
        published.iter().cloned().collect::<BTreeSet<_>>(),
        promoted,
        "the promotions published differ from the replay's"
    );
    assert_eq!(
        published.len(),
        promoted.len(),
        "a promotion published twice"
    );
    for stopped in own("trial_stopped") {
        let trial = replay.trial(stopped["trial_id"].as_str().unwrap()).unwrap();
        assert_eq!(
            stopped["reason"],
            serde_json::to_value(&trial.stop_reason).unwrap(),
            "{}: the stop published differs from the replay's",
            trial.id
        );
    }
    // The replay ends where the coordinator did.
    let comparable = |t: &Trial| {
        let mut t = t.clone();
        t.instances.clear();
        serde_json::to_value(t).unwrap()
    };
    assert_eq!(
        replay.trials().len(),
        saved.trials().len(),
        "the trials of {job_id}"
    );
    for (replayed, kept) in replay.trials().iter().zip(saved.trials()) {
        assert_eq!(
            comparable(replayed),
            comparable(kept),
            "{}: the replay (left) differs from the saved state (right)",
            kept.id
        );
    }
    assert_eq!(replay.asha(), saved.asha(), "the rung records of {job_id}");
    assert_eq!(replay.phase(), saved.phase(), "the end of {job_id}");
    if saved.asha().is_some() {
        assert!(!judged.is_empty(), "ASHA decided nothing in {job_id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asha_search_across_two_trainers_stops_the_weak_trials_and_registers_the_best() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    start_mesh(&mut mesh, &[]).await;
    let mut watch = mesh.watch("search-a").await;
    mesh.submit(OPTIMIZE, &search_job("search-a", "best-a"))
        .await;
    let last = watch.until(SEARCH_TIMEOUT, is_final).await;
    assert_eq!(last["event"], "completed", "{}", watch.summary());
    let result = &last["result"]["optimize"];

    let trials = trials_of(&mesh, "search-a");
    let events = mesh.stored_events("lexmesh.events.>").await;
    let trials = assert_accounted("search-a", &trials, &events);
    // The rung records and every stop and promotion are those of a replay of the epochs the
    // trainers reported, each decision Ray's rule on the values recorded before it.
    assert_replay_matches(&saved_search(&mesh, "search-a").await, &events);

    // ASHA stopped the trials below a rung's cutoff, and their train jobs were cancelled
    // (not left to finish).
    let stopped: Vec<&Value> = trials
        .values()
        .filter(|t| t["status"] == "stopped")
        .collect();
    assert!(!stopped.is_empty(), "ASHA stopped no trial: {trials:?}");
    for trial in &stopped {
        let id = trial["trial_id"].as_str().unwrap();
        let reason = &trial["stop_reason"];
        assert_eq!(reason["kind"], "rung", "{id}: {reason}");
        assert!(
            reason["value"].as_f64() < reason["cutoff"].as_f64(),
            "{id} was stopped above its cutoff: {reason}"
        );
        assert!(trial["epochs_run"].as_u64() < Some(6), "{id}: {trial}");
        let end = final_event(&events, id);
        assert_eq!(
            end["event"],
            "cancelled",
            "{id}'s train job: {}",
            short(end)
        );
    }
    // Promotions were told, and the leaderboard changed with every step.
    assert!(events.iter().any(|e| e["event"] == "trial_promoted"));
    let versions: Vec<u64> = events
        .iter()
        .filter(|e| e["job_id"] == "search-a" && e["event"] == "leaderboard")
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert!(versions.len() >= trials.len(), "{versions:?}");
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    // The best trial: the highest macro-F1, its settings and score in the result, its model
    // registered under the search's model id.
    let best_f1 = trials
        .values()
        .filter_map(|t| t["best"]["macro_f1"].as_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    let best = &result["best_trial"];
    assert_eq!(
        best["score"]["macro_f1"].as_f64(),
        Some(best_f1),
        "{}",
        short(result)
    );
    let best_id = best["trial_id"].as_str().unwrap();
    assert_eq!(best["status"], "completed", "{}", short(result));
    assert_eq!(result["model_trial_id"], best_id);
    assert_eq!(result["model_id"], "best-a");
    assert_eq!(
        best["configuration"].to_string(),
        trials[best_id]["configuration"].to_string()
    );
    assert_eq!(best["settings"]["model"], "cnn");
    assert_eq!(best["settings"]["epochs"], 6);
    assert_eq!(
        best["settings"]["learning_rate"],
        best["configuration"]["learning_rate"]
    );
    // Trials ran on both replicas.
    let owners: BTreeSet<String> = events
        .iter()
        .filter(|e| e["event"] == "accepted" && trials.contains_key(e["job_id"].as_str().unwrap()))
        .map(|e| e["instance"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(owners.len(), 2, "trials ran on {owners:?}");

    // `classify` answers with the registered model, which is the best trial's.
    let reply = mesh
        .request(
            CLASSIFY,
            &json!({"model_id": "best-a", "texts": ["دادگاه حکم به پرداخت خسارت صادر کرد"]}),
            "classify-reply",
        )
        .await;
    assert!(reply.get("error").is_none(), "{}", short(&reply));
    assert_eq!(reply["predictions"].as_array().map(Vec::len), Some(1));
    let (models, _) = lexmesh(&mesh, &["models", "--format", "json"]);
    let models: Value = serde_json::from_str(&models).unwrap();
    let registered = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "best-a")
        .expect("the best model is listed");
    assert_eq!(registered["source_model_id"], best_id);
    assert_eq!(registered["job_id"], best_id);

    // `watch` replays the search with its leaderboard; `trials` prints the table.
    let (summary, progress) = lexmesh(&mesh, &["watch", "search-a"]);
    assert!(progress.contains("leaderboard (update"), "{progress}");
    assert!(
        summary.contains(&format!("best trial {best_id}")),
        "{summary}"
    );
    let (table, _) = lexmesh(&mesh, &["trials", "search-a"]);
    assert!(table.starts_with("TRIAL"), "{table}");
    assert_eq!(table.lines().count(), 1 + trials.len(), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_whose_coordinator_is_killed_is_taken_over_and_completes() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    // A short ack_wait: the killed trainer's deliveries (the search, perhaps a trial) come back
    // within seconds without a health service.
    let env = [("LEXMESH_JOBS__ACK_WAIT", "3s")];
    start_mesh(&mut mesh, &env).await;
    let mut watch = mesh.watch("search-b").await;
    mesh.submit(OPTIMIZE, &search_job("search-b", "best-b"))
        .await;
    let accepted = watch
        .until(SEARCH_TIMEOUT, |e| e["event"] == "accepted")
        .await;
    let coordinator = accepted["instance"].as_str().unwrap().to_string();
    // Mid-search: a trial has ended, others run or wait.
    watch
        .until(SEARCH_TIMEOUT, |e| {
            ["trial_stopped", "trial_completed"].contains(&e["event"].as_str().unwrap_or(""))
        })
        .await;
    mesh.process(&coordinator).kill();
    let spare = "trainer-c";
    let mut spare_env = vec![("LEXMESH_JOBS__CONCURRENCY", "1")];
    spare_env.extend_from_slice(&env);
    mesh.start_service("trainer", spare, &spare_env).await;

    let last = watch.until(SEARCH_TIMEOUT, is_final).await;
    assert_eq!(last["event"], "completed", "{}", watch.summary());
    let takeover = watch
        .of_kind("accepted")
        .iter()
        .map(|e| e["instance"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(
        takeover.len(),
        2,
        "the search ran once, then once more: {takeover:?}"
    );
    assert_ne!(takeover[1], coordinator);

    let trials = trials_of(&mesh, "search-b");
    let events = mesh.stored_events("lexmesh.events.>").await;
    let trials = assert_accounted("search-b", &trials, &events);
    assert_published_once(&mesh, &trials).await;
    // The take-over lost no epoch and recorded none twice: the state is a replay's.
    assert_replay_matches(&saved_search(&mesh, "search-b").await, &events);
    // Nothing is left running.
    for instance in ["trainer-a", "trainer-b", spare] {
        if instance != coordinator {
            mesh.wait_idle("trainer", instance).await;
        }
    }
    let record = mesh.job_record("search-b").await.unwrap();
    assert_eq!(record["status"], "completed");
    // The record counts the ended trials as the search's progress, so the killed
    // coordinator's attempt, which had seen trials end, is not held against the search.
    assert_eq!(record["epochs_completed"], 6, "{record}");
    assert_eq!(record["total_epochs"], 6, "{record}");
    let lost = &record["history"][0]["lost"];
    assert_eq!(lost["progress"], true, "{record}");
    assert_eq!(lost["counted"], false, "{record}");
    let reply = mesh
        .request(
            CLASSIFY,
            &json!({"model_id": "best-b", "texts": ["متن یک رأی"]}),
            "classify-reply",
        )
        .await;
    assert!(reply.get("error").is_none(), "{}", short(&reply));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_that_ends_while_no_coordinator_runs_keeps_every_epoch_it_reported() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    let env = [("LEXMESH_JOBS__ACK_WAIT", "3s")];
    start_mesh(&mut mesh, &env).await;
    let mut watch = mesh.watch("search-e").await;
    let mut progress = mesh.watch_subject("lexmesh.events.*.progress").await;
    let mut job = search_job("search-e", "best-e");
    job["scheduler"] = json!("none");
    mesh.submit(OPTIMIZE, &job).await;
    let accepted = watch
        .until(SEARCH_TIMEOUT, |e| e["event"] == "accepted")
        .await;
    let coordinator = accepted["instance"].as_str().unwrap().to_string();
    // A trial on the other trainer one epoch from its end: with the coordinator killed now, it
    // most likely ends before the search is taken over (ack_wait: 3 s), so the successor finds
    // its job record ended while its last epochs' events are still unread.
    let near_end = progress
        .until(SEARCH_TIMEOUT, |e| {
            e["phase"] == "epoch"
                && e["epoch"] == 5
                && e["job_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("search-e-t"))
                && e["instance"] != coordinator.as_str()
        })
        .await;
    mesh.process(&coordinator).kill();
    let spare = "trainer-c";
    let mut spare_env = vec![("LEXMESH_JOBS__CONCURRENCY", "1")];
    spare_env.extend_from_slice(&env);
    mesh.start_service("trainer", spare, &spare_env).await;

    let last = watch.until(SEARCH_TIMEOUT, is_final).await;
    assert_eq!(last["event"], "completed", "{}", watch.summary());
    assert_eq!(watch.of_kind("accepted").len(), 2, "{}", watch.summary());
    let trials = trials_of(&mesh, "search-e");
    let events = mesh.stored_events("lexmesh.events.>").await;
    let trials = assert_accounted("search-e", &trials, &events);
    assert_published_once(&mesh, &trials).await;
    // Every trial ran its six epochs, and the search took them all: the one that ended while
    // no coordinator ran included.
    for (id, trial) in &trials {
        assert_eq!(trial["status"], "completed", "{id}: {trial}");
        assert_eq!(
            trial["epochs_run"], 6,
            "{id} (the trial near its end: {}): {trial}",
            near_end["job_id"]
        );
    }
    assert_replay_matches(&saved_search(&mesh, "search-e").await, &events);
    let survivor = ["trainer-a", "trainer-b"]
        .into_iter()
        .find(|i| *i != coordinator)
        .unwrap();
    for instance in [survivor, spare] {
        mesh.wait_idle("trainer", instance).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_trainer_that_runs_a_trial_resumes_the_trial_and_the_search_completes() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    // A short ack_wait: the killed trainer's trial comes back within seconds without a health
    // service.
    let env = [("LEXMESH_JOBS__ACK_WAIT", "3s")];
    start_mesh(&mut mesh, &env).await;
    let mut watch = mesh.watch("search-d").await;
    let mut progress = mesh.watch_subject("lexmesh.events.*.progress").await;
    let mut job = search_job("search-d", "best-d");
    // No early stop: every trial trains to its end, the killed one included.
    job["scheduler"] = json!("none");
    mesh.submit(OPTIMIZE, &job).await;
    let accepted = watch
        .until(SEARCH_TIMEOUT, |e| e["event"] == "accepted")
        .await;
    let coordinator = accepted["instance"].as_str().unwrap().to_string();
    // A trial that has stored an epoch on the trainer that does not coordinate the search.
    let running = progress
        .until(SEARCH_TIMEOUT, |e| {
            e["phase"] == "epoch"
                && e["job_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("search-d-t"))
                && e["instance"] != coordinator.as_str()
        })
        .await;
    let trial_id = running["job_id"].as_str().unwrap().to_string();
    let victim = running["instance"].as_str().unwrap().to_string();
    mesh.process(&victim).kill();
    let spare = "trainer-c";
    let mut spare_env = vec![("LEXMESH_JOBS__CONCURRENCY", "1")];
    spare_env.extend_from_slice(&env);
    mesh.start_service("trainer", spare, &spare_env).await;

    let last = watch.until(SEARCH_TIMEOUT, is_final).await;
    assert_eq!(last["event"], "completed", "{}", watch.summary());
    assert_eq!(
        watch.of_kind("accepted").len(),
        1,
        "the search itself ran once: {}",
        watch.summary()
    );
    let trials = trials_of(&mesh, "search-d");
    let events = mesh.stored_events("lexmesh.events.>").await;
    let trials = assert_accounted("search-d", &trials, &events);
    assert_published_once(&mesh, &trials).await;
    for (id, trial) in &trials {
        assert_eq!(trial["status"], "completed", "{id}: {trial}");
        assert_eq!(trial["epochs_run"], 6, "{id}: {trial}");
    }

    // The killed trial resumed on a trainer still alive, from the checkpoint of the epochs its
    // first attempt had reported, and completed there.
    let of_trial = |kind: &str| {
        events
            .iter()
            .filter(|e| e["job_id"] == trial_id.as_str() && e["event"] == kind)
            .collect::<Vec<_>>()
    };
    let done_before = of_trial("progress")
        .iter()
        .filter(|e| e["phase"] == "epoch" && e["attempt"] == 1)
        .filter_map(|e| e["epoch"].as_u64())
        .max()
        .unwrap();
    let resumed = of_trial("progress")
        .into_iter()
        .find(|e| e["phase"] == "started" && e["attempt"].as_u64() > Some(1))
        .unwrap_or_else(|| panic!("{trial_id} never started again"));
    let resumer = resumed["instance"].as_str().unwrap();
    assert!(
        [coordinator.as_str(), spare].contains(&resumer),
        "{trial_id} resumed on {resumer}"
    );
    assert!(
        resumed["resumed_from_epoch"].as_u64() >= Some(done_before.max(1)),
        "{trial_id}'s first attempt reported {done_before} epoch(s); it resumed: {}",
        short(resumed)
    );
    let end = final_event(&events, &trial_id);
    assert_eq!(end["event"], "completed", "{}", short(end));
    assert_eq!(end["instance"], resumer, "{}", short(end));
    let record = mesh.job_record(&trial_id).await.unwrap();
    assert_eq!(record["status"], "completed", "{}", short(&record));
    let history = record["history"].as_array().unwrap();
    assert!(history.len() >= 2, "{}", short(&record));
    assert_eq!(history[0]["instance"], victim.as_str());
    assert!(
        history[0].get("ended_ms").is_none(),
        "attempt 1's worker was lost: {}",
        short(&record)
    );
    assert_eq!(history.last().unwrap()["outcome"], "completed");
    // The search took each of its epochs once (a resumed attempt reports none twice), and saw
    // it run on both trainers.
    let saved = saved_search(&mesh, "search-d").await;
    let kept = saved.trial(&trial_id).unwrap();
    assert_eq!(
        kept.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>(),
        "{trial_id}'s epochs"
    );
    assert_eq!(
        kept.instances.first(),
        Some(&victim),
        "{:?}",
        kept.instances
    );
    assert!(
        kept.instances.iter().any(|i| i == resumer),
        "{:?}",
        kept.instances
    );
    assert_replay_matches(&saved, &events);

    // Nothing is left running on the trainers still alive.
    for instance in [coordinator.as_str(), spare] {
        mesh.wait_idle("trainer", instance).await;
    }
    let reply = mesh
        .request(
            CLASSIFY,
            &json!({"model_id": "best-d", "texts": ["متن یک رأی"]}),
            "classify-reply",
        )
        .await;
    assert!(reply.get("error").is_none(), "{}", short(&reply));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_optimize_jobs_each_get_one_typed_failure_before_anything_runs() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("trainer", "trainer-a", &[]).await;
    let valid = || {
        json!({
            "dataset": inline(sample_subset("train.jsonl", 4), None),
            "trials": 4,
            "search_space": {"learning_rate": {"log_uniform": {"low": 0.001, "high": 0.1}}},
            "max_epochs": 3,
        })
    };
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut job = valid();
        edit(&mut job);
        job
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown-setting",
            with(&|j| j["search_space"] = json!({"lr": [0.1, 0.01]})),
            "invalid_message",
        ),
        (
            "epochs-searched",
            with(&|j| j["search_space"] = json!({"epochs": [1, 2]})),
            "invalid_message",
        ),
        (
            "empty-choice",
            with(&|j| j["search_space"] = json!({"dropout": {"choice": []}})),
            "invalid_value",
        ),
        (
            "empty-list",
            with(&|j| j["search_space"] = json!({"batch_size": []})),
            "invalid_value",
        ),
        (
            "inverted-range",
            with(&|j| {
                j["search_space"] = json!({"dropout": {"uniform": {"low": 0.5, "high": 0.1}}});
            }),
            "invalid_value",
        ),
        (
            "inverted-int",
            with(&|j| j["search_space"] = json!({"hidden": {"int": {"low": 64, "high": 8}}})),
            "invalid_value",
        ),
        (
            "log-at-zero",
            with(&|j| {
                j["search_space"] =
                    json!({"learning_rate": {"log_uniform": {"low": 0, "high": 0.1}}});
            }),
            "invalid_value",
        ),
        (
            "value-out-of-range",
            with(&|j| j["search_space"] = json!({"learning_rate": [0.01, 20]})),
            "invalid_value",
        ),
        (
            "empty-space",
            with(&|j| j["search_space"] = json!({})),
            "invalid_value",
        ),
        (
            "no-trials",
            with(&|j| j["trials"] = json!(0)),
            "invalid_value",
        ),
        (
            "no-concurrency",
            with(&|j| j["max_concurrent_trials"] = json!(0)),
            "invalid_value",
        ),
        (
            "grid-continuous",
            with(&|j| j["sampler"] = json!("grid")),
            "invalid_message",
        ),
        (
            "grid-too-large",
            with(&|j| {
                j["sampler"] = json!("grid");
                j["search_space"] = json!({"hidden": {"int": {"low": 1, "high": 10}}});
            }),
            "invalid_value",
        ),
        (
            "asha-horizon",
            with(&|j| j["scheduler"] = json!({"asha": {"max_t": 5}})),
            "invalid_value",
        ),
        (
            "asha-grace",
            with(&|j| j["scheduler"] = json!({"asha": {"grace_period": 4}})),
            "invalid_value",
        ),
        (
            "goal-above-1",
            with(&|j| j["goal"] = json!(1.5)),
            "invalid_value",
        ),
        (
            "unknown-scheduler",
            with(&|j| j["scheduler"] = json!("hyperband")),
            "invalid_message",
        ),
        (
            "base-epochs",
            with(&|j| j["base"] = json!({"epochs": 5})),
            "invalid_value",
        ),
    ];
    let submitted = cases.len() as u64;
    assert!(submitted >= 10);
    for (name, mut job, code) in cases {
        let job_id = format!("bad-{name}");
        job["job_id"] = json!(job_id);
        let mut watch = mesh.watch(&job_id).await;
        mesh.submit(OPTIMIZE, &job).await;
        let event = watch.next(REJECT_TIMEOUT).await;
        assert_eq!(event["event"], "failed", "{name}: {}", short(&event));
        assert_eq!(event["code"], code, "{name}: {}", short(&event));
        assert_eq!(event["retrying"], false, "{name}");
        assert_eq!(event["kind"], "optimize", "{name}");
        let more = watch.drain_for(Duration::from_millis(500)).await;
        assert!(more.is_empty(), "{name}: more events: {}", watch.summary());
        let record = mesh.job_record(&job_id).await.expect("a failed record");
        assert_eq!(record["status"], "failed", "{name}");
    }
    // Nothing ran: no trial was published, no search was saved.
    assert_eq!(last_sequence(&mesh, "LEXMESH_JOBS").await, submitted);
    let js = async_nats::jetstream::new(mesh.client.clone());
    let searches = js.get_key_value("lexmesh_searches").await.unwrap();
    let keys: Vec<String> = searches.keys().await.unwrap().try_collect().await.unwrap();
    assert!(keys.is_empty(), "searches saved: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_search_cancels_its_running_trials() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    start_mesh(&mut mesh, &[]).await;
    let mut watch = mesh.watch("search-c").await;
    let mut job = search_job("search-c", "best-c");
    // No early stop: both first trials are still running when the cancel comes.
    job["scheduler"] = json!("none");
    job["max_epochs"] = json!(40);
    mesh.submit(OPTIMIZE, &job).await;
    let mut trial_events = mesh.watch_subject("lexmesh.events.search-c-t0.>").await;
    trial_events
        .until(SEARCH_TIMEOUT, |e| {
            e["event"] == "progress" && e["phase"] == "epoch"
        })
        .await;
    lexmesh(&mesh, &["cancel", "search-c"]);
    let last = watch.until(SEARCH_TIMEOUT, is_final).await;
    assert_eq!(last["event"], "cancelled", "{}", watch.summary());

    let trials = trials_of(&mesh, "search-c");
    assert_eq!(
        trials.len(),
        CONCURRENCY,
        "trials were started after the cancel: {trials:?}"
    );
    let events = mesh.stored_events("lexmesh.events.>").await;
    for trial in &trials {
        let id = trial["trial_id"].as_str().unwrap();
        assert_eq!(trial["status"], "cancelled", "{id}: {trial}");
        assert_eq!(trial["stop_reason"]["kind"], "search_ended", "{id}");
        assert_eq!(trial["stop_reason"]["reason"], "cancelled", "{id}");
        let end = final_event(&events, id);
        assert_eq!(
            end["event"],
            "cancelled",
            "{id}'s train job: {}",
            short(end)
        );
        assert!(
            end["epochs_completed"].as_u64() < Some(40),
            "{id}: {}",
            short(end)
        );
    }
    for instance in ["trainer-a", "trainer-b"] {
        mesh.wait_idle("trainer", instance).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_while_no_coordinator_runs_stops_the_trials_once_one_takes_over() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    let env = [("LEXMESH_JOBS__ACK_WAIT", "3s")];
    start_mesh(&mut mesh, &env).await;
    let mut watch = mesh.watch("search-f").await;
    let mut progress = mesh.watch_subject("lexmesh.events.*.progress").await;
    let mut job = search_job("search-f", "best-f");
    job["scheduler"] = json!("none");
    job["max_epochs"] = json!(60);
    mesh.submit(OPTIMIZE, &job).await;
    let accepted = watch
        .until(SEARCH_TIMEOUT, |e| e["event"] == "accepted")
        .await;
    let coordinator = accepted["instance"].as_str().unwrap().to_string();
    // A trial training on the other trainer, which survives the coordinator.
    let running = progress
        .until(SEARCH_TIMEOUT, |e| {
            e["phase"] == "epoch"
                && e["job_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("search-f-t"))
                && e["instance"] != coordinator.as_str()
        })
        .await;
    let trial_id = running["job_id"].as_str().unwrap().to_string();
    mesh.process(&coordinator).kill();
    // No instance runs the search now: the cancel is only recorded.
    let (answer, _) = lexmesh(&mesh, &["cancel", "search-f"]);
    assert!(answer.contains("recorded"), "{answer}");
    let spare = "trainer-c";
    let mut spare_env = vec![("LEXMESH_JOBS__CONCURRENCY", "1")];
    spare_env.extend_from_slice(&env);
    mesh.start_service("trainer", spare, &spare_env).await;

    // The coordinator that takes the search stops its trials, then the search ends cancelled.
    let last = watch.until(SEARCH_TIMEOUT, is_final).await;
    assert_eq!(last["event"], "cancelled", "{}", watch.summary());
    let trials = trials_of(&mesh, "search-f");
    assert!(
        trials.iter().any(|t| t["trial_id"] == trial_id.as_str()),
        "{trials:?}"
    );
    let events = mesh.stored_events("lexmesh.events.>").await;
    for trial in &trials {
        let id = trial["trial_id"].as_str().unwrap();
        assert_eq!(trial["status"], "cancelled", "{id}: {trial}");
        let end = final_event(&events, id);
        assert_eq!(
            end["event"],
            "cancelled",
            "{id}'s train job: {}",
            short(end)
        );
        assert!(
            end["epochs_completed"].as_u64() < Some(60),
            "{id} trained to its end: {}",
            short(end)
        );
    }
    let saved = saved_search(&mesh, "search-f").await;
    assert!(saved.is_finished(), "{:?}", saved.phase());
    let survivor = ["trainer-a", "trainer-b"]
        .into_iter()
        .find(|i| *i != coordinator)
        .unwrap();
    for instance in [survivor, spare] {
        mesh.wait_idle("trainer", instance).await;
    }
}
