//! Chaos under `lexmesh up`: two trainer replicas, a preprocessor and the health service on a
//! private nats-server; eight train jobs; a random trainer is SIGKILLed every few seconds until
//! every job has finished. Every job must complete exactly once, with the validation figures
//! of an undisturbed run of the same job, and at least one must resume from a checkpoint.
//! Prints the run's totals and the time from each kill to its jobs running again.
//!
//! The jobs run with the default retry budgets: kills from outside never count against them.
//! A job that itself crashes its worker is dead-lettered after `jobs.max_lost_attempts`
//! while the jobs next to it complete.
//!
//! Also: a replica that exits at start-up is restarted with growing delays, then given up on
//! with a `crash_loop` alert; one killed from outside is restarted at once, however often; and
//! the replicas of an `up` killed by SIGKILL stop by themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lexmesh_testkit::{TRAIN, TestMesh, no_early_stop_job, send_signal, short};
use rand::{RngExt, SeedableRng};
use serde_json::Value;

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

const JOBS: usize = 8;
const EPOCHS: u32 = 100;
/// Kills at most this many times (then lets the jobs finish).
const MAX_KILLS: usize = 12;
/// The whole chaos run, kills and recovery included.
const CHAOS_TIMEOUT: Duration = Duration::from_secs(480);
/// Macro-F1 of a disturbed job may differ this much from the undisturbed run's.
const F1_TOLERANCE: f64 = 0.1;

/// A job long enough to be killed several times: 100 epochs of 64 batches of 2 examples (the
/// linear bag trains the sample's epoch of 4 batches of 32 in milliseconds).
fn job(job_id: &str) -> Value {
    let mut job = no_early_stop_job(job_id, EPOCHS);
    job["settings"]["batch_size"] = serde_json::json!(2);
    job
}

fn events_of<'a>(events: &'a [(Instant, Value)], job: &str) -> Vec<&'a (Instant, Value)> {
    events.iter().filter(|(_, e)| e["job_id"] == job).collect()
}

fn count(events: &[(Instant, Value)], job: &str, kind: &str) -> usize {
    events_of(events, job)
        .iter()
        .filter(|(_, e)| e["event"] == kind)
        .count()
}

fn macro_f1(completed: &Value) -> f64 {
    completed["result"]["train"]["validation"]["macro_f1"]
        .as_f64()
        .unwrap_or_else(|| panic!("no macro_f1 in {}", short(completed)))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_completes_once_while_trainers_are_killed() {
    let mesh = TestMesh::start(LEXMESH).await;
    // Every job event with its arrival time, and the latest heartbeat of each trainer.
    let events = mesh.record_events("lexmesh.events.>").await;
    let trainers = mesh.track_heartbeats("lexmesh.heartbeat.trainer.*").await;
    let work = mesh.dir().join("work");
    let mut up = mesh.up(
        &["--replicas", "trainer=2,evaluator=0"],
        &[
            ("LEXMESH_JOBS__CONCURRENCY", "2"),
            ("LEXMESH_SERVICE__WORK_DIR", work.to_str().unwrap()),
            // The default retry budgets: kills from outside must not use them up.
        ],
    );
    let ready = Instant::now();
    while trainers.instances() < 2 {
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "two trainers did not start\n{}",
            up.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The undisturbed run.
    mesh.submit(TRAIN, &job("calm")).await;
    let calm = loop {
        let done = events
            .lock()
            .iter()
            .find(|(_, e)| e["job_id"] == "calm" && e["event"] == "completed")
            .map(|(_, e)| e.clone());
        if let Some(done) = done {
            break done;
        }
        assert!(
            ready.elapsed() < CHAOS_TIMEOUT,
            "the calm job did not complete"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let calm_f1 = macro_f1(&calm);

    // The chaos run.
    let ids: Vec<String> = (1..=JOBS).map(|i| format!("chaos{i}")).collect();
    for id in &ids {
        mesh.submit(TRAIN, &job(id)).await;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let started = Instant::now();
    // (when, instance, jobs it ran)
    let mut kills: Vec<(Instant, String, Vec<String>)> = Vec::new();
    let finished = |events: &[(Instant, Value)]| {
        ids.iter()
            .filter(|id| {
                events_of(events, id)
                    .iter()
                    .any(|(_, e)| lexmesh_testkit::is_final(e))
            })
            .count()
    };
    loop {
        let pause = Duration::from_millis(rng.random_range(2500..5000));
        tokio::time::sleep(pause).await;
        if finished(&events.lock()) == JOBS {
            break;
        }
        assert!(
            started.elapsed() < CHAOS_TIMEOUT,
            "jobs still unfinished after {CHAOS_TIMEOUT:?}\n{}",
            up.stderr()
        );
        if kills.len() >= MAX_KILLS {
            continue;
        }
        // A trainer heard from in the last 1.5 s (a killed one is not chosen before it is back).
        let alive = trainers.alive(Duration::from_millis(1500));
        if alive.is_empty() {
            continue;
        }
        let (instance, beat) = alive[rng.random_range(0..alive.len())].clone();
        send_signal("-KILL", beat.pid);
        trainers.forget(&instance);
        kills.push((Instant::now(), instance, beat.running));
    }
    // Nothing can end later: the jobs stream holds no message (none can be delivered again)
    // and every trainer heard from runs no job. Only then are the events counted, so a late
    // duplicate completion would be among them.
    mesh.wait_jobs_stream_empty().await;
    lexmesh_testkit::eventually(
        "every trainer idle after the last job",
        Duration::from_secs(30),
        || async {
            let alive = trainers.alive(Duration::from_millis(1500));
            (!alive.is_empty() && alive.iter().all(|(_, beat)| beat.running.is_empty()))
                .then_some(())
        },
    )
    .await;
    let events = events.snapshot();

    let mut completions = 0;
    let mut duplicates = 0;
    let mut losses = 0;
    let mut resumed = 0;
    let mut worst_f1_gap: f64 = 0.0;
    let mut lost_attempts = 0;
    for id in &ids {
        let n = count(&events, id, "completed");
        completions += n.min(1);
        duplicates += n.saturating_sub(1);
        if n == 0 {
            losses += 1;
            continue;
        }
        let done = events_of(&events, id)
            .into_iter()
            .find(|(_, e)| e["event"] == "completed")
            .unwrap();
        assert_eq!(
            done.1["result"]["train"]["epochs_completed"],
            EPOCHS,
            "{}",
            short(&done.1)
        );
        worst_f1_gap = worst_f1_gap.max((macro_f1(&done.1) - calm_f1).abs());
        resumed += events_of(&events, id)
            .iter()
            .filter(|(_, e)| {
                e["phase"] == "started" && e["resumed_from_epoch"].as_u64().is_some_and(|n| n >= 1)
            })
            .count();
        let record = mesh.job_record(id).await.unwrap();
        assert_eq!(record["status"], "completed", "{}", short(&record));
        // Every lost attempt is on the record, killed from outside, and not counted.
        for entry in record["history"].as_array().unwrap() {
            if entry["outcome"] == "lost" {
                lost_attempts += 1;
                assert_eq!(entry["lost"]["cause"], "killed", "{}", short(&record));
                assert_eq!(entry["lost"]["counted"], false, "{}", short(&record));
            }
        }
    }
    // Per kill: time until each job the killed trainer ran started its next attempt, and the
    // epochs that attempt had to redo.
    let mut back_s = Vec::new();
    let mut lost_epochs = Vec::new();
    for (at, instance, jobs) in &kills {
        for id in jobs {
            let evs = events_of(&events, id);
            let before = evs
                .iter()
                .filter(|(t, e)| t < at && e["instance"] == instance.as_str())
                .filter_map(|(_, e)| e["attempt"].as_u64())
                .max();
            let Some(attempt) = before else { continue };
            let done_by_killed = evs
                .iter()
                .filter(|(_, e)| e["attempt"] == attempt && e["phase"] == "epoch")
                .filter_map(|(_, e)| e["epoch"].as_u64())
                .max()
                .unwrap_or(0);
            let next = evs.iter().find(|(t, e)| {
                t > at && e["phase"] == "started" && e["attempt"].as_u64() > Some(attempt)
            });
            if let Some((t, e)) = next {
                back_s.push(t.duration_since(*at).as_secs_f64());
                let from = e["resumed_from_epoch"].as_u64().unwrap_or(0);
                lost_epochs.push(done_by_killed.saturating_sub(from));
                eprintln!(
                    "kill of {instance}: {id} attempt {attempt} had finished {done_by_killed} \
                     epochs; attempt {} on {} resumed from {from} after {:.2}s",
                    e["attempt"],
                    e["instance"],
                    t.duration_since(*at).as_secs_f64()
                );
            }
        }
    }
    eprintln!(
        "figure: chaos totals: jobs {JOBS}, kills {}, completions {completions}, duplicates \
         {duplicates}, losses {losses}, resumed from a checkpoint {resumed}; kill -> running \
         again median {:.2}s max {:.2}s over {} interrupted attempts; whole epochs redone per \
         kill: max {}; worst macro-F1 gap to the undisturbed run {worst_f1_gap:.4} (calm \
         {calm_f1:.4}); lost attempts on the records {lost_attempts}; chaos run {:.0}s",
        kills.len(),
        median(back_s.clone()),
        back_s.iter().copied().fold(0.0, f64::max),
        back_s.len(),
        lost_epochs.iter().max().copied().unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    assert!(kills.len() >= 3, "only {} kills", kills.len());
    assert_eq!(duplicates, 0);
    assert_eq!(losses, 0);
    assert_eq!(completions, JOBS);
    assert!(resumed >= 1, "no job resumed from a checkpoint");
    assert!(lost_attempts >= 1, "no attempt was lost to a kill");
    assert!(
        lost_epochs.iter().all(|n| *n == 0),
        "a resumed attempt redid whole epochs: {lost_epochs:?}"
    );
    assert!(
        worst_f1_gap <= F1_TOLERANCE,
        "macro-F1 differs from the undisturbed run by {worst_f1_gap}"
    );
    mesh.wait_jobs_stream_empty().await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_exits_at_start_up_is_given_up_on_with_an_alert() {
    let mesh = TestMesh::start(LEXMESH).await;
    let mut alerts = mesh.watch_messages("lexmesh.alerts.>", "alert").await;
    // A scratch folder inside a file: the trainer exits at start-up, every time.
    let blocker = mesh.dir().join("not-a-folder");
    std::fs::write(&blocker, b"").unwrap();
    let work = blocker.join("work");
    let mut up = mesh.up(
        &[
            "--replicas",
            "trainer=1,preprocessor=0,evaluator=0,health=0,metrics=0",
        ],
        &[
            ("LEXMESH_SERVICE__WORK_DIR", work.to_str().unwrap()),
            ("LEXMESH_HEALTH__RESTART_DELAY", "200ms"),
            ("LEXMESH_HEALTH__MAX_RESTARTS", "3"),
        ],
    );
    let alert = alerts.next(Duration::from_secs(60)).await;
    assert_eq!(alert["kind"], "crash_loop", "{}", short(&alert));
    assert_eq!(alert["state"], "raised");
    assert_eq!(alert["instance"], "trainer-1");
    assert_eq!(alert["service"], "trainer");
    let status = up.wait_exit(Duration::from_secs(10)).await;
    let stderr = up.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(stderr.contains("service.work_dir"), "{stderr}");
    let delays: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("restarting trainer-1 in "))
        .collect();
    assert_eq!(delays, ["0.2s", "0.4s", "0.8s"], "{stderr}");
    assert!(stderr.contains("giving up"), "{stderr}");
}

/// Waits until `n` trainers have sent a heartbeat (their job loops and streams are up).
async fn wait_for_trainers(mesh: &TestMesh, n: usize) {
    let mut heartbeats = mesh
        .client
        .subscribe("lexmesh.heartbeat.trainer.*")
        .await
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < n {
        let beat = tokio::time::timeout_at(deadline, heartbeats.next())
            .await
            .expect("the trainers did not start")
            .unwrap();
        let v: Value = serde_json::from_slice(&beat.payload).unwrap();
        seen.insert(v["instance"].as_str().unwrap().to_string());
    }
}

/// The pids of the `started <instance> (pid N)` lines `up` printed so far.
fn started_pids(dir: &Path, instance: &str) -> Vec<u32> {
    let prefix = format!("started {instance} (pid ");
    std::fs::read_to_string(dir.join("up.stdout"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.strip_prefix(prefix.as_str())?
                .strip_suffix(')')?
                .parse()
                .ok()
        })
        .collect()
}

/// Whether process `pid` still runs (a zombie has ended).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_from_outside_is_restarted_at_once_and_dies_with_up() {
    let mesh = TestMesh::start(LEXMESH).await;
    let mut alerts = mesh.watch_messages("lexmesh.alerts.>", "alert").await;
    let mut up = mesh.up(
        &[
            "--replicas",
            "trainer=1,preprocessor=0,evaluator=0,health=0,metrics=0",
        ],
        &[
            ("LEXMESH_HEALTH__RESTART_DELAY", "200ms"),
            ("LEXMESH_HEALTH__RESTART_FACTOR", "4"),
            // Had the kills counted, `up` would give up on the third.
            ("LEXMESH_HEALTH__MAX_RESTARTS", "2"),
        ],
    );
    // Five SIGKILLs from outside, each once the previous restart is up.
    for kills in 0..5 {
        let pid = lexmesh_testkit::eventually(
            &format!("trainer-1 started {} time(s)", kills + 1),
            Duration::from_secs(30),
            || async {
                let pids = started_pids(mesh.dir(), "trainer-1");
                (pids.len() == kills + 1).then(|| pids[kills])
            },
        )
        .await;
        send_signal("-KILL", pid);
    }
    let last = lexmesh_testkit::eventually(
        "trainer-1 started after the fifth kill",
        Duration::from_secs(30),
        || async { started_pids(mesh.dir(), "trainer-1").get(5).copied() },
    )
    .await;
    let stderr = up.stderr();
    let restarts: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("restarting trainer-1 in "))
        .collect();
    assert_eq!(restarts, ["0.2s (it was killed)"; 5], "{stderr}");
    assert!(!stderr.contains("giving up"), "{stderr}");
    assert!(
        alerts
            .next_within(Duration::from_millis(500))
            .await
            .is_none(),
        "no crash_loop alert for kills"
    );

    // `up` is SIGKILLed: it cannot stop its replicas, and they stop by themselves.
    let up_pid = up.pid();
    send_signal("-KILL", up_pid);
    assert!(up.wait_exit(Duration::from_secs(10)).await.is_some());
    lexmesh_testkit::eventually(
        "the orphaned trainer stops",
        Duration::from_secs(10),
        || async { (!running(last)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_crashes_its_worker_is_dead_lettered_and_the_others_complete() {
    let mesh = TestMesh::start(LEXMESH).await;
    let mut letters = mesh
        .watch_messages("lexmesh.deadletter.>", "dead-letter")
        .await;
    let mut up = mesh.up(
        &["--replicas", "trainer=2,evaluator=0,metrics=0"],
        &[
            ("LEXMESH_JOBS__CONCURRENCY", "1"),
            ("LEXMESH_SERVICE__DRILL_ABORT_JOB", "poison"),
            ("LEXMESH_HEALTH__RESTART_DELAY", "200ms"),
            ("LEXMESH_HEALTH__MAX_RESTARTS", "10"),
        ],
    );
    wait_for_trainers(&mesh, 2).await;
    let mut watch = mesh.watch_subject("lexmesh.events.>").await;
    mesh.submit(TRAIN, &no_early_stop_job("poison", 5)).await;
    for id in ["healthy1", "healthy2"] {
        mesh.submit(TRAIN, &no_early_stop_job(id, 5)).await;
    }
    let mut finished = BTreeMap::new();
    let deadline = Instant::now() + CHAOS_TIMEOUT;
    while finished.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = watch.next_within(left).await.unwrap_or_else(|| {
            panic!(
                "not every job finished: {finished:?}\n{}\n{}",
                watch.summary(),
                up.stderr()
            )
        });
        if lexmesh_testkit::is_final(&event) {
            let id = event["job_id"].as_str().unwrap().to_string();
            assert!(
                finished.insert(id, event.clone()).is_none(),
                "a job ended twice: {}",
                short(&event)
            );
        }
    }
    let failed = &finished["poison"];
    assert_eq!(failed["event"], "failed", "{}", short(failed));
    assert_eq!(failed["code"], "worker_lost", "{}", short(failed));
    assert_eq!(failed["retrying"], false);
    for id in ["healthy1", "healthy2"] {
        assert_eq!(
            finished[id]["event"],
            "completed",
            "{}",
            short(&finished[id])
        );
    }
    // Three crashes, each noted by `up` and counted; the fourth delivery is refused.
    let record = mesh.job_record("poison").await.unwrap();
    assert_eq!(record["status"], "failed", "{}", short(&record));
    let lost: Vec<&Value> = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "lost")
        .collect();
    assert_eq!(lost.len(), 3, "{}", short(&record));
    for entry in lost {
        assert_eq!(entry["lost"]["cause"], "crashed", "{}", short(&record));
        assert_eq!(entry["lost"]["counted"], true, "{}", short(&record));
    }
    let letter = letters.next(Duration::from_secs(10)).await;
    assert_eq!(letter["job_id"], "poison", "{}", short(&letter));
    assert_eq!(letter["code"], "worker_lost");
    assert!(
        up.stderr().contains("SIGABRT") || up.stderr().contains("signal: 6"),
        "{}",
        up.stderr()
    );
    // The poison job is gone from the queue, and nothing else ran twice.
    mesh.wait_jobs_stream_empty().await;
    up.stop().await;
}
