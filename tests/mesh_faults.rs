//! Faults, with real processes on a private nats-server: the health service finds a killed, a
//! frozen (SIGSTOP) and a stalled trainer, replaces it and hands its job back at once, and the
//! job resumes from its checkpoint elsewhere; a job whose workers keep dying is dead-lettered;
//! two attempts racing complete the job once; a nats-server restart mid-training loses no job;
//! a stored checkpoint that cannot be used is set aside and the job trains from the start; a
//! job killed in the middle of an epoch resumes at the batch of its last checkpoint by time; an
//! epoch whose event died with its trainer is told by the attempt that resumes; a checkpoint
//! whose upload was cut is skipped for the previous, complete one; a train job waits for a
//! preprocessor that starts late without spending its retries, can be cancelled while it
//! waits, and fails as `unavailable` when none comes within `jobs.wait_for_service`.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::time::{Duration, Instant};

use lexmesh_testkit::{JOB_TIMEOUT, TRAIN, TestMesh, eventually, no_early_stop_job, short};
use serde_json::{Value, json};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// Long enough that a fault lands mid-job (an epoch of the sample takes a fraction of a second).
const EPOCHS: u32 = 40;

/// How long the tests allow for a fault to be detected and the job to come back.
const RECOVERY: Duration = Duration::from_secs(25);

fn long_job(job_id: &str) -> Value {
    no_early_stop_job(job_id, EPOCHS)
}

/// The highest epoch attempt `attempt` reported finished.
fn epochs_done(events: &[&Value], attempt: u64) -> u64 {
    events
        .iter()
        .filter(|e| e["event"] == "progress" && e["phase"] == "epoch" && e["attempt"] == attempt)
        .filter_map(|e| e["epoch"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Starts a preprocessor, a health service (with `health_env`) and two trainers; submits a
/// long job and waits until it has finished `after_epochs` epochs; returns the mesh, the
/// watch on the job, and the instance running it.
async fn mesh_with_running_job(
    job_id: &str,
    health_env: &[(&str, &str)],
    trainer_env: &[(&str, &str)],
    after_epochs: u64,
) -> (TestMesh, lexmesh_testkit::EventWatch, String) {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    mesh.start_service("health", "health-a", health_env).await;
    mesh.start_service("trainer", "trainer-a", trainer_env)
        .await;
    let mut watch = mesh.watch(job_id).await;
    mesh.submit(TRAIN, &long_job(job_id)).await;
    let accepted = watch.until(JOB_TIMEOUT, |e| e["event"] == "accepted").await;
    let owner = accepted["instance"].as_str().unwrap().to_string();
    assert_eq!(owner, "trainer-a");
    // The replica that will take over; started now so that attempt 1 surely ran on trainer-a.
    mesh.start_service("trainer", "trainer-b", &[]).await;
    watch
        .until(JOB_TIMEOUT, |e| {
            e["event"] == "progress"
                && e["phase"] == "epoch"
                && e["epoch"].as_u64().is_some_and(|n| n >= after_epochs)
        })
        .await;
    (mesh, watch, owner)
}

/// Waits for the job's attempt 2 to start on trainer-b, checks it resumed from attempt 1's
/// checkpoint (at most the epoch in progress lost), lets it complete, and checks it completed
/// exactly once. Returns the time from `since` to attempt 2's `started` event.
async fn resumes_and_completes_once(
    mesh: &TestMesh,
    watch: &mut lexmesh_testkit::EventWatch,
    job_id: &str,
    since: Instant,
) -> Duration {
    let started = watch
        .until(RECOVERY, |e| {
            e["event"] == "progress" && e["phase"] == "started" && e["attempt"] == 2
        })
        .await;
    let took = since.elapsed();
    assert_eq!(started["instance"], "trainer-b", "{}", short(&started));
    let events: Vec<&Value> = watch.of_kind("progress");
    let done_before = epochs_done(&events, 1);
    let from = started["resumed_from_epoch"]
        .as_u64()
        .expect("attempt 2 says where it resumed");
    assert!(
        from >= done_before && from >= 1,
        "attempt 1 finished {done_before} epochs, attempt 2 resumed from {from}: more than \
         the epoch in progress was lost"
    );
    let last = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(last["event"], "completed", "{}", watch.summary());
    assert_eq!(last["attempt"], 2);
    assert_eq!(last["result"]["train"]["epochs_completed"], EPOCHS);
    // Nothing after: one completion.
    let late = watch.drain_for(Duration::from_secs(1)).await;
    assert!(
        late.iter().all(|e| e["event"] != "completed"),
        "a second completion: {late:?}"
    );
    assert_eq!(watch.of_kind("completed").len(), 1, "{}", watch.summary());
    let record = mesh.job_record(job_id).await.unwrap();
    assert_eq!(record["status"], "completed", "{}", short(&record));
    assert_eq!(record["owner"], "trainer-b");
    let history = record["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{}", short(&record));
    assert_eq!(history[0]["instance"], "trainer-a");
    assert!(
        history[0].get("ended_ms").is_none(),
        "attempt 1's worker was lost"
    );
    assert_eq!(history[1]["outcome"], "completed");
    took
}

/// Health events (`lexmesh.health.>`) seen so far, as (instance, state).
async fn health_events(watch: &mut lexmesh_testkit::EventWatch) -> Vec<(String, String)> {
    watch.drain_for(Duration::from_millis(200)).await;
    watch
        .events
        .iter()
        .map(|e| {
            (
                e["instance"].as_str().unwrap_or("?").to_string(),
                e["state"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_trainer_is_found_and_its_job_runs_again_within_seconds() {
    // Default settings: heartbeats every 1 s, unresponsive after 3 s, ack_wait 30 s.
    let (mut mesh, mut watch, owner) = mesh_with_running_job("kill1", &[], &[], 2).await;
    let mut health = mesh
        .watch_messages("lexmesh.health.>", "health-event")
        .await;
    let killed = Instant::now();
    mesh.process(&owner).kill();
    let took = resumes_and_completes_once(&mesh, &mut watch, "kill1", killed).await;
    eprintln!("figure: SIGKILL -> job running again elsewhere: {took:.2?}");
    // Well under ack_wait (30 s): the health service handed the job back.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let states = health_events(&mut health).await;
    for state in ["unresponsive", "replaced"] {
        assert!(
            states.contains(&(owner.clone(), state.to_string())),
            "no {state} event for {owner}: {states:?}"
        );
    }
    let log = mesh.process("health-a").log_text();
    assert!(log.contains("handed the job back"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_trainer_is_replaced_and_its_job_completes_elsewhere() {
    let (mut mesh, mut watch, owner) = mesh_with_running_job("stop1", &[], &[], 2).await;
    let mut health = mesh
        .watch_messages("lexmesh.health.>", "health-event")
        .await;
    let stopped = Instant::now();
    mesh.process(&owner).signal("-STOP");
    let took = resumes_and_completes_once(&mesh, &mut watch, "stop1", stopped).await;
    eprintln!("figure: SIGSTOP -> job running again elsewhere: {took:.2?}");
    let states = health_events(&mut health).await;
    assert!(
        states.contains(&(owner.clone(), "unresponsive".into())),
        "{states:?}"
    );
    // Replaced: the frozen process was killed (SIGKILL ends a stopped process).
    let status = mesh
        .process(&owner)
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("the frozen trainer was killed");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_trainer_is_found_within_the_worker_timeout_and_replaced() {
    // trainer-a's compute thread wedges after 12 batches (3 epochs of 4) while its heartbeats
    // go on; WORKER_TIMEOUT is 4 s here.
    let timeout = Duration::from_secs(4);
    let (mesh, mut watch, owner) = mesh_with_running_job(
        "stall1",
        &[("LEXMESH_HEALTH__WORKER_TIMEOUT", "4s")],
        &[("LEXMESH_SERVICE__DRILL_STALL_AFTER_BATCHES", "12")],
        2,
    )
    .await;
    let mut health = mesh
        .watch_messages("lexmesh.health.>", "health-event")
        .await;
    let stalled = health.until(RECOVERY, |e| e["state"] == "stalled").await;
    assert_eq!(stalled["instance"], owner.as_str());
    assert!(
        stalled["reason"].as_str().unwrap().contains("stall1"),
        "{stalled}"
    );
    assert_eq!(stalled["jobs"], json!(["stall1"]));
    // Detected within WORKER_TIMEOUT + one heartbeat (+ scheduling slack) of the last batch.
    let last_batch_ms = watch
        .of_kind("progress")
        .iter()
        .filter(|e| e["attempt"] == 1)
        .filter_map(|e| e["timestamp_ms"].as_f64())
        .fold(0.0, f64::max);
    let detected_after =
        Duration::from_secs_f64((stalled["timestamp_ms"].as_f64().unwrap() - last_batch_ms) / 1e3);
    eprintln!(
        "figure: last batch -> stalled: {detected_after:.2?} (worker_timeout {timeout:?}, heartbeat 1 s)"
    );
    assert!(
        detected_after >= timeout && detected_after < timeout + Duration::from_secs(3),
        "stalled {detected_after:?} after the last progress event"
    );
    let since = Instant::now();
    resumes_and_completes_once(&mesh, &mut watch, "stall1", since).await;
    let states = health_events(&mut health).await;
    assert!(
        states.contains(&(owner.clone(), "replaced".into())),
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_workers_keep_dying_is_dead_lettered_once() {
    // No health service: each lost delivery comes back after ack_wait; after max_deliver (2)
    // deliveries JetStream gives up and a live trainer dead-letters the job.
    let env = [
        ("LEXMESH_JOBS__ACK_WAIT", "2s"),
        ("LEXMESH_JOBS__MAX_DELIVER", "2"),
    ];
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    let mut dead = mesh
        .watch_messages("lexmesh.deadletter.>", "dead-letter")
        .await;
    let mut watch = mesh.watch("doomed").await;
    mesh.start_service("trainer", "trainer-a", &env).await;
    mesh.submit(TRAIN, &long_job("doomed")).await;
    for (attempt, instance, next) in [(1, "trainer-a", "trainer-b"), (2, "trainer-b", "trainer-c")]
    {
        watch
            .until(JOB_TIMEOUT, |e| {
                e["event"] == "progress" && e["phase"] == "epoch" && e["attempt"] == attempt
            })
            .await;
        mesh.process(instance).kill();
        mesh.start_service("trainer", next, &env).await;
    }
    let letter = dead.next(RECOVERY).await;
    assert_eq!(letter["job_id"], "doomed");
    assert_eq!(letter["kind"], "train");
    assert_eq!(letter["deliveries"], 2);
    assert_eq!(letter["code"], "worker_lost");
    assert_eq!(letter["request"]["job_id"], "doomed");
    let history = letter["history"].as_array().unwrap();
    let who: Vec<&str> = history
        .iter()
        .map(|h| h["instance"].as_str().unwrap())
        .collect();
    assert_eq!(who, ["trainer-a", "trainer-b"], "{}", short(&letter));
    let failed = watch.until_final(RECOVERY).await;
    assert_eq!(failed["event"], "failed", "{}", watch.summary());
    assert_eq!(failed["code"], "worker_lost");
    assert_eq!(failed["retrying"], false);
    let record = mesh.job_record("doomed").await.unwrap();
    assert_eq!(record["status"], "failed");
    assert_eq!(record["error"]["code"], "worker_lost");
    // Out of the queue, never delivered again, dead-lettered once.
    mesh.wait_jobs_stream_empty().await;
    let again = watch.drain_for(Duration::from_secs(3)).await;
    assert!(
        again.iter().all(|e| e["event"] != "accepted"),
        "delivered again: {again:?}"
    );
    assert!(dead.next_within(Duration::from_secs(1)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_that_run_out_while_no_trainer_runs_are_dead_lettered_by_the_next_one() {
    // The only trainer is killed; its job's one delivery (max_deliver 1) runs out while no
    // trainer runs, so the server's max-deliveries advisory has no live reader. It must wait
    // in LEXMESH_ADVISORIES for the next trainer, which dead-letters the job.
    let env = [
        ("LEXMESH_JOBS__ACK_WAIT", "2s"),
        ("LEXMESH_JOBS__MAX_DELIVER", "1"),
    ];
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    let mut dead = mesh
        .watch_messages("lexmesh.deadletter.>", "dead-letter")
        .await;
    let mut watch = mesh.watch("orphan").await;
    mesh.start_service("trainer", "trainer-a", &env).await;
    mesh.submit(TRAIN, &long_job("orphan")).await;
    watch
        .until(JOB_TIMEOUT, |e| {
            e["event"] == "progress" && e["phase"] == "epoch" && e["attempt"] == 1
        })
        .await;
    mesh.process("trainer-a").kill();
    // The advisory is stored while no trainer runs.
    eventually(
        "the max-deliveries advisory in LEXMESH_ADVISORIES",
        RECOVERY,
        || {
            let mesh = &mesh;
            async move { (mesh.stream_messages("LEXMESH_ADVISORIES").await >= 1).then_some(()) }
        },
    )
    .await;
    assert!(
        dead.next_within(Duration::from_millis(200)).await.is_none(),
        "dead-lettered with no trainer running"
    );
    mesh.start_service("trainer", "trainer-b", &env).await;
    let letter = dead.next(RECOVERY).await;
    assert_eq!(letter["job_id"], "orphan");
    assert_eq!(letter["deliveries"], 1);
    assert_eq!(letter["code"], "worker_lost");
    assert_eq!(letter["instance"], "trainer-b", "{}", short(&letter));
    let failed = watch.until_final(RECOVERY).await;
    assert_eq!(failed["event"], "failed", "{}", watch.summary());
    assert_eq!(failed["code"], "worker_lost");
    mesh.wait_jobs_stream_empty().await;
    // Handled once: the advisory leaves its stream.
    eventually("LEXMESH_ADVISORIES to be empty", RECOVERY, || {
        let mesh = &mesh;
        async move { (mesh.stream_messages("LEXMESH_ADVISORIES").await == 0).then_some(()) }
    })
    .await;
    assert!(dead.next_within(Duration::from_secs(1)).await.is_none());
}

/// A mesh with a trainer (`trainer-a`, with `env`) and no preprocessor, and job `job_id`
/// submitted to it, once the trainer says it waits for a preprocessor; with the job's watch.
async fn trainer_waiting_for_a_preprocessor(
    job_id: &str,
    env: &[(&str, &str)],
) -> (TestMesh, lexmesh_testkit::EventWatch) {
    let mut mesh = TestMesh::start(LEXMESH).await;
    let watch = mesh.watch(job_id).await;
    mesh.start_service("trainer", "trainer-a", env).await;
    mesh.submit(TRAIN, &no_early_stop_job(job_id, 2)).await;
    eventually("the trainer to wait for a preprocessor", RECOVERY, || {
        let log = mesh.process("trainer-a").log_text();
        async move {
            log.contains("no preprocessor is running; waiting")
                .then_some(())
        }
    })
    .await;
    (mesh, watch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_train_job_waits_for_a_preprocessor_that_starts_late_without_spending_its_retries() {
    // max_failures 1: a failed attempt would end the job.
    let (mut mesh, mut watch) =
        trainer_waiting_for_a_preprocessor("late-prep", &[("LEXMESH_JOBS__MAX_FAILURES", "1")])
            .await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    let last = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(last["event"], "completed", "{}", watch.summary());
    assert_eq!(last["attempt"], 1, "{}", watch.summary());
    assert!(
        watch.events.iter().all(|e| e["event"] != "failed"),
        "{}",
        watch.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_train_job_cancelled_while_it_waits_for_a_preprocessor_ends_cancelled() {
    let (mesh, mut watch) = trainer_waiting_for_a_preprocessor("wait-cancel", &[]).await;
    let reply = mesh
        .client
        .request(
            "lexmesh.control.wait-cancel.cancel",
            serde_json::to_vec(&json!({"job_id": "wait-cancel"}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["outcome"], "cancelling", "{reply}");
    // Well within the 2 min the job would otherwise wait.
    let last = watch.until_final(RECOVERY).await;
    assert_eq!(last["event"], "cancelled", "{}", watch.summary());
    assert_eq!(last["attempt"], 1, "{}", watch.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_train_job_fails_as_unavailable_when_no_preprocessor_comes_within_the_wait() {
    let env = [
        ("LEXMESH_JOBS__MAX_FAILURES", "1"),
        ("LEXMESH_JOBS__WAIT_FOR_SERVICE", "2s"),
    ];
    let mut mesh = TestMesh::start(LEXMESH).await;
    let mut watch = mesh.watch("no-prep").await;
    mesh.start_service("trainer", "trainer-a", &env).await;
    let submitted = Instant::now();
    mesh.submit(TRAIN, &no_early_stop_job("no-prep", 2)).await;
    let failed = watch.until_final(RECOVERY).await;
    assert_eq!(failed["event"], "failed", "{}", watch.summary());
    assert_eq!(failed["code"], "unavailable", "{}", short(&failed));
    assert_eq!(failed["retrying"], false, "{}", short(&failed));
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no preprocessor is running") && reason.contains("waited 2s"),
        "{reason}"
    );
    // It waited the 2 s before failing, in its one attempt.
    assert!(submitted.elapsed() >= Duration::from_secs(2));
    assert_eq!(failed["attempt"], 1, "{}", watch.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_attempts_complete_the_job_once() {
    // trainer-a is frozen long enough for its job to be redelivered (ack_wait 2 s, no health
    // service) and completed by trainer-b; thawed, trainer-a finishes too, loses the
    // compare-and-set, and discards its result.
    let env = [("LEXMESH_JOBS__ACK_WAIT", "2s")];
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    mesh.start_service("trainer", "trainer-a", &env).await;
    let mut watch = mesh.watch("race1").await;
    mesh.submit(TRAIN, &long_job("race1")).await;
    watch
        .until(JOB_TIMEOUT, |e| {
            e["event"] == "progress" && e["phase"] == "epoch"
        })
        .await;
    mesh.process("trainer-a").signal("-STOP");
    mesh.start_service("trainer", "trainer-b", &env).await;
    let completed = watch
        .until(JOB_TIMEOUT, |e| e["event"] == "completed")
        .await;
    assert_eq!(completed["instance"], "trainer-b");
    // Attempt 2, or 3 when the redelivery first went to a pull request trainer-a had left
    // pending when it froze.
    let winner = completed["attempt"].as_u64().unwrap();
    assert!(winner >= 2, "{}", short(&completed));
    mesh.process("trainer-a").signal("-CONT");
    eventually("trainer-a discards its result", JOB_TIMEOUT, || {
        let log = mesh_log(&mut mesh, "trainer-a");
        async move { log.contains("result discarded").then_some(()) }
    })
    .await;
    let late = watch.drain_for(Duration::from_secs(1)).await;
    assert!(late.iter().all(|e| e["event"] != "completed"), "{late:?}");
    assert_eq!(watch.of_kind("completed").len(), 1, "{}", watch.summary());
    let record = mesh.job_record("race1").await.unwrap();
    assert_eq!(record["status"], "completed");
    assert_eq!(record["owner"], "trainer-b");
    let outcomes: Vec<&str> = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["outcome"].as_str())
        .collect();
    assert!(
        outcomes.contains(&"completed") && outcomes.contains(&"superseded"),
        "{outcomes:?}"
    );
    // The stored model is trainer-b's: its manifest names the winning attempt's folder.
    let js = async_nats::jetstream::new(mesh.client.clone());
    let store = js.get_object_store("lexmesh_models").await.unwrap();
    let mut manifest = store.get("model-race1/manifest.json").await.unwrap();
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut manifest, &mut bytes)
        .await
        .unwrap();
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        manifest["folder"],
        format!("race1-a{winner}"),
        "{}",
        short(&manifest)
    );
}

/// The text of object `name` in `store`, when there is one and it reads within 2 s.
async fn stored_text(
    store: &async_nats::jetstream::object_store::ObjectStore,
    name: &str,
) -> Option<String> {
    // Bounded: a read racing a rewrite of the object can stall; the caller polls again.
    tokio::time::timeout(Duration::from_secs(2), async {
        let mut object = store.get(name).await.ok()?;
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut object, &mut text)
            .await
            .ok()?;
        Some(text)
    })
    .await
    .ok()
    .flatten()
}

fn mesh_log(mesh: &mut TestMesh, instance: &str) -> String {
    mesh.process(instance).log_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_mid_training_loses_no_job() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    mesh.start_service(
        "trainer",
        "trainer-a",
        &[("LEXMESH_JOBS__CONCURRENCY", "2")],
    )
    .await;
    let mut watch = mesh.watch("restart1").await;
    for id in ["restart1", "restart2"] {
        mesh.submit(TRAIN, &long_job(id)).await;
    }
    watch
        .until(JOB_TIMEOUT, |e| {
            e["event"] == "progress" && e["phase"] == "epoch"
        })
        .await;
    mesh.server.restart().expect("restart nats-server");
    for id in ["restart1", "restart2"] {
        let record = mesh
            .wait_job_status(id, "completed", JOB_TIMEOUT + RECOVERY)
            .await;
        assert_eq!(
            record["result"]["train"]["epochs_completed"],
            EPOCHS,
            "{}",
            short(&record)
        );
    }
    mesh.wait_jobs_stream_empty().await;
    mesh.assert_all_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_over_its_memory_budget_is_replaced() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("health", "health-a", &[]).await;
    let mut health = mesh
        .watch_messages("lexmesh.health.>", "health-event")
        .await;
    // A 1 MiB budget no process keeps: over budget from the first heartbeat on.
    mesh.start_service(
        "preprocessor",
        "preprocessor-a",
        &[("LEXMESH_SERVICE__MEMORY_BUDGET_MB", "1")],
    )
    .await;
    let over = health
        .until(RECOVERY, |e| e["state"] == "over_budget")
        .await;
    assert_eq!(over["instance"], "preprocessor-a");
    assert!(
        over["reason"]
            .as_str()
            .unwrap()
            .contains("5 heartbeats in a row"),
        "{}",
        short(&over)
    );
    let replaced = health.until(RECOVERY, |e| e["state"] == "replaced").await;
    assert_eq!(replaced["instance"], "preprocessor-a");
    let status = mesh
        .process("preprocessor-a")
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("the over-budget instance was killed");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_health_replicas_replace_a_worker_once_and_hand_over_the_lead() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("health", "health-a", &[]).await;
    // health-a holds the lease before health-b exists.
    eventually("health-a leads", RECOVERY, || {
        let log = mesh_log(&mut mesh, "health-a");
        async move { log.contains("became the health leader").then_some(()) }
    })
    .await;
    mesh.start_service("health", "health-b", &[]).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    let mut health = mesh
        .watch_messages("lexmesh.health.preprocessor-a.>", "health-event")
        .await;
    mesh.process("preprocessor-a").signal("-STOP");
    health.until(RECOVERY, |e| e["state"] == "replaced").await;
    let more = health.drain_for(Duration::from_secs(3)).await;
    let states: Vec<&str> = health
        .events
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["unresponsive", "replaced"], "{more:?}");
    assert!(health.events.iter().all(|e| e["observer"] == "health-a"));
    assert!(
        !mesh_log(&mut mesh, "health-b").contains("became the health leader"),
        "two leaders"
    );
    // The leader dies: the other takes over once the lease runs out (5 s).
    mesh.process("health-a").kill();
    eventually("health-b leads", RECOVERY, || {
        let log = mesh_log(&mut mesh, "health-b");
        async move { log.contains("became the health leader").then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_stored_checkpoint_is_set_aside_and_the_job_trains_from_the_start() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    mesh.start_service("trainer", "trainer-a", &[]).await;
    // What a cut copy could leave: `latest` names an epoch whose weights are not there and
    // whose state is not JSON.
    let js = async_nats::jetstream::new(mesh.client.clone());
    let store = js.get_object_store("lexmesh_checkpoints").await.unwrap();
    for (name, body) in [
        (
            "cut1/epoch-0005/state.json",
            &b"{\"epochs_completed\": 5, "[..],
        ),
        ("cut1/latest", b"epoch-0005"),
    ] {
        store.put(name, &mut &body[..]).await.unwrap();
    }
    let mut watch = mesh.watch("cut1").await;
    let submitted = Instant::now();
    mesh.submit(TRAIN, &no_early_stop_job("cut1", 5)).await;
    let started = watch
        .until(JOB_TIMEOUT, |e| {
            e["event"] == "progress" && e["phase"] == "started"
        })
        .await;
    let took = submitted.elapsed();
    assert_eq!(started["epoch"], 1, "{}", short(&started));
    assert!(
        started["resumed_from_epoch"].is_null(),
        "{}",
        short(&started)
    );
    let done = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(done["event"], "completed", "{}", watch.summary());
    assert_eq!(done["attempt"], 1);
    assert_eq!(done["result"]["train"]["epochs_completed"], 5);
    let log = mesh_log(&mut mesh, "trainer-a");
    assert!(
        log.contains("the stored checkpoint is not used"),
        "no reason logged (started after {took:?}):\n{log}"
    );
}

/// The object store of checkpoints.
type Store = async_nats::jetstream::object_store::ObjectStore;

/// Starts a preprocessor and trainer-a (with `trainer_env`, which should wedge its compute
/// thread), submits a job of `epochs` epochs of 64 batches of 2, and waits until the stored
/// `latest` checkpoint of the job is `latest`.
async fn wedged_after_checkpoint(
    job_id: &str,
    epochs: u32,
    trainer_env: &[(&str, &str)],
    latest: &str,
) -> (TestMesh, lexmesh_testkit::EventWatch, Store) {
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    let mut env = vec![("LEXMESH_JOBS__ACK_WAIT", "2s")];
    env.extend_from_slice(trainer_env);
    mesh.start_service("trainer", "trainer-a", &env).await;
    let mut job = no_early_stop_job(job_id, epochs);
    job["settings"]["batch_size"] = json!(2);
    let watch = mesh.watch(job_id).await;
    mesh.submit(TRAIN, &job).await;
    let js = async_nats::jetstream::new(mesh.client.clone());
    let store = js.get_object_store("lexmesh_checkpoints").await.unwrap();
    let pointer = format!("{job_id}/latest");
    eventually(
        &format!("checkpoint {latest} stored"),
        Duration::from_secs(30),
        || async {
            stored_text(&store, &pointer)
                .await
                .filter(|l| l.trim() == latest)
        },
    )
    .await;
    (mesh, watch, store)
}

/// SIGKILLs trainer-a, starts trainer-b, and returns the `started` event of the job's next
/// attempt, there.
async fn resumed_on_trainer_b(
    mesh: &mut TestMesh,
    watch: &mut lexmesh_testkit::EventWatch,
) -> Value {
    mesh.process("trainer-a").kill();
    mesh.start_service("trainer", "trainer-b", &[("LEXMESH_JOBS__ACK_WAIT", "2s")])
        .await;
    let resumed = watch
        .until(JOB_TIMEOUT, |e| {
            e["phase"] == "started" && e["attempt"].as_u64() > Some(1)
        })
        .await;
    assert_eq!(resumed["instance"], "trainer-b", "{}", short(&resumed));
    resumed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_epoch_resumes_at_the_batch_of_its_last_checkpoint() {
    // A checkpoint by time after every batch; the compute thread wedges at the job's 20th
    // batch, in the middle of epoch 1 (64 batches of 2): the latest checkpoint is batch 19's.
    let (mut mesh, mut watch, _) = wedged_after_checkpoint(
        "mid1",
        2,
        &[
            ("LEXMESH_SERVICE__CHECKPOINT_INTERVAL", "0s"),
            ("LEXMESH_SERVICE__DRILL_STALL_AFTER_BATCHES", "20"),
        ],
        "epoch-0000-batch-000019",
    )
    .await;
    let resumed = resumed_on_trainer_b(&mut mesh, &mut watch).await;
    assert_eq!(
        resumed["resumed_from_epoch"],
        0,
        "{}\n{}",
        short(&resumed),
        mesh_log(&mut mesh, "trainer-b")
    );
    assert_eq!(resumed["resumed_from_batch"], 19, "{}", short(&resumed));
    assert_eq!(resumed["epoch"], 1, "{}", short(&resumed));
    // Its first batch event is past batch 19: nothing before the checkpoint is trained again.
    let first_batch = watch
        .until(JOB_TIMEOUT, |e| {
            e["phase"] == "batch" && e["attempt"] == resumed["attempt"]
        })
        .await;
    assert!(
        first_batch["epoch"] == 1 && first_batch["batch"].as_u64() > Some(19),
        "{}",
        short(&first_batch)
    );
    let done = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(done["event"], "completed", "{}", watch.summary());
    assert_eq!(done["result"]["train"]["epochs_completed"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_whose_event_died_with_its_trainer_is_told_once_by_the_attempt_that_resumes() {
    // trainer-a aborts once epoch 2's checkpoint is stored, before it tells epoch 2: the
    // moment a kill loses an epoch's event while its checkpoint survives.
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &[])
        .await;
    let ack_wait = ("LEXMESH_JOBS__ACK_WAIT", "2s");
    mesh.start_service(
        "trainer",
        "trainer-a",
        &[
            ack_wait,
            ("LEXMESH_SERVICE__DRILL_ABORT_BEFORE_EPOCH_EVENT", "2"),
        ],
    )
    .await;
    let mut watch = mesh.watch("told1").await;
    mesh.submit(TRAIN, &no_early_stop_job("told1", 3)).await;
    let accepted = watch.until(JOB_TIMEOUT, |e| e["event"] == "accepted").await;
    assert_eq!(accepted["instance"], "trainer-a");
    mesh.start_service("trainer", "trainer-b", &[ack_wait])
        .await;
    let done = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(done["event"], "completed", "{}", watch.summary());
    assert_eq!(done["instance"], "trainer-b", "{}", watch.summary());
    assert_eq!(done["result"]["train"]["epochs_completed"], 3);

    let events: Vec<Value> = mesh
        .stored_events("lexmesh.events.told1.>")
        .await
        .into_iter()
        .filter(|e| e["job_id"] == "told1")
        .collect();
    let resumed = events
        .iter()
        .find(|e| e["phase"] == "started" && e["attempt"] == 2)
        .unwrap_or_else(|| panic!("no attempt 2: {}", watch.summary()));
    // Attempt 2 started from epoch 2's checkpoint: it did not train epoch 2 again.
    assert_eq!(resumed["instance"], "trainer-b", "{}", short(resumed));
    assert_eq!(resumed["resumed_from_epoch"], 2, "{}", short(resumed));
    // Every epoch is told exactly once: epoch 1 by attempt 1 (told again by attempt 2 and
    // dropped by the stream as a copy), epoch 2, whose event died with trainer-a, by attempt 2.
    let told: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["event"] == "progress" && e["phase"] == "epoch")
        .map(|e| (e["epoch"].as_u64().unwrap(), e["attempt"].as_u64().unwrap()))
        .collect();
    assert_eq!(told, [(1, 1), (2, 2), (3, 2)], "{}", watch.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_cut_mid_upload_is_skipped_for_the_previous_one() {
    // The compute thread wedges at the job's 70th batch (epoch 2's sixth of 64): epoch 1's
    // checkpoint is stored.
    let (mut mesh, mut watch, store) = wedged_after_checkpoint(
        "cut2",
        3,
        &[("LEXMESH_SERVICE__DRILL_STALL_AFTER_BATCHES", "70")],
        "epoch-0001",
    )
    .await;
    // What an upload cut short leaves: the next checkpoint's weights, without its state and
    // without `latest` moved to it (the pointer is always uploaded last).
    store
        .put("cut2/epoch-0001-batch-000005/model.bpk", &mut &b"cut"[..])
        .await
        .unwrap();
    let resumed = resumed_on_trainer_b(&mut mesh, &mut watch).await;
    assert_eq!(
        resumed["resumed_from_epoch"],
        1,
        "{}\n{}",
        short(&resumed),
        mesh_log(&mut mesh, "trainer-b")
    );
    assert!(
        resumed["resumed_from_batch"].is_null(),
        "{}",
        short(&resumed)
    );
    let done = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(done["event"], "completed", "{}", watch.summary());
    assert_eq!(done["result"]["train"]["epochs_completed"], 3);
}
