//! The dashboard in a real browser (headless Chromium through `tests/console/driver.py`) on a
//! mesh started with `lexmesh up`: every service is listed, a training job's curve and
//! progress bar grow live, a completed job's report shows its Persian labels right-to-left,
//! a killed trainer is shown unresponsive and then replaced while its job resumes on the same
//! curve, and the cancel button ends a job with a `cancelled` event. A read-only dashboard
//! (the default) refuses to cancel; a page whose server goes away says so and comes back live.
//!
//! Needs `scripts/setup-browser-tests` (run by `scripts/test`). The screenshot of the page
//! mid-training is written to the test's folder, and to `$LEXMESH_SCREENSHOT` when set.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::time::{Duration, Instant};

use lexmesh_testkit::{
    Browser, Heartbeats, TRAIN, TestMesh, UpProcess, eventually, inline, no_early_stop_job,
    sample_records, send_signal,
};
use serde_json::{Value, json};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// How long the page may take to show something the mesh did.
const SHOWN: Duration = Duration::from_secs(60);

/// The sample's records with their labels in Persian (as a user's own data would have them).
fn persian(file: &str) -> Vec<Value> {
    sample_records(file)
        .into_iter()
        .map(|mut r| {
            r["label"] = json!(match r["label"].as_str().unwrap() {
                "civil" => "حقوقی",
                "criminal" => "کیفری",
                other => panic!("unexpected label {other}"),
            });
            r
        })
        .collect()
}

/// A job on the Persian-labelled sample that runs all its `epochs`.
fn job(job_id: &str, epochs: u32) -> Value {
    let mut job = no_early_stop_job(job_id, epochs);
    job["dataset"] = inline(persian("train.jsonl"), Some(persian("validation.jsonl")));
    job
}

/// Starts `lexmesh up` with `env`; the dashboard's URL, from the metrics replica's log.
async fn up_with_dashboard(mesh: &TestMesh, env: &[(&str, &str)]) -> (UpProcess, String) {
    let up = mesh.up(&["--replicas", "trainer=2"], env);
    let url = eventually("the dashboard's address in the log", SHOWN, || async {
        let log = up.stderr();
        let (_, rest) = log.split_once("serving the dashboard on http://")?;
        let address = rest.split_whitespace().next()?;
        Some(format!("http://{}", address.trim_end_matches('/')))
    })
    .await;
    (up, format!("{url}/"))
}

/// A job's row field, as the page shows it.
fn row(job_id: &str, js_of_row: &str) -> String {
    format!(
        "() => {{ const row = document.querySelector('#jobs tr[data-job=\"{job_id}\"]'); \
         return row && ({js_of_row}); }}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_training_live_shows_replacements_and_cancels() {
    let mesh = TestMesh::start(LEXMESH).await;
    let trainers: Heartbeats = mesh.track_heartbeats("lexmesh.heartbeat.trainer.*").await;
    let mut long = mesh.watch("web-long").await;
    let mut short = mesh.watch("web-short").await;
    // `up` restarts a killed replica after `health.restart_delay`: 5 s here, longer than the
    // health service's `dead_after` (3 s), so that the health service finds it unresponsive and
    // replaces it first (with 1 s, a fresh process is back before it is missed).
    let (mut up, url) = up_with_dashboard(
        &mesh,
        &[
            ("LEXMESH_METRICS__CONSOLE_ACTIONS", "true"),
            ("LEXMESH_HEALTH__RESTART_DELAY", "5s"),
        ],
    )
    .await;
    let mut page = Browser::open(&url, 1280, 800).await;

    // Every service of the mesh, from the metrics reports pushed to the page.
    let services = page
        .wait(
            "an instance of every service",
            "() => { const s = [...document.querySelectorAll('#instances tbody tr td:nth-child(2)')]\
               .map(td => td.textContent); \
             return ['preprocessor', 'trainer', 'evaluator', 'health', 'metrics']\
               .every(x => s.includes(x)) && s; }",
            SHOWN,
        )
        .await;
    assert_eq!(
        services
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| *s == "trainer")
            .count(),
        2,
        "{services}"
    );
    page.wait(
        "the live connection",
        "() => document.querySelector('#connection').dataset.state === 'live'",
        SHOWN,
    )
    .await;

    // A short job completes: its report, with the Persian labels laid out right-to-left.
    mesh.submit(TRAIN, &job("web-short", 3)).await;
    mesh.submit(TRAIN, &job("web-long", 400)).await;
    assert_eq!(short.until_final(SHOWN).await["event"], "completed");
    page.wait(
        "web-short completed",
        &row(
            "web-short",
            "row.querySelector('.status').textContent === 'completed'",
        ),
        SHOWN,
    )
    .await;
    page.click("#jobs tr[data-job=\"web-short\"]").await;
    let labels = page
        .wait(
            "the per-class table",
            "() => { const cells = [...document.querySelectorAll('#per-class tbody td:first-child')]; \
             return cells.length === 2 && cells.map(td => [td.textContent, td.matches(':dir(rtl)')]); }",
            SHOWN,
        )
        .await;
    assert_eq!(labels, json!([["حقوقی", true], ["کیفری", true]]));
    let matrix_total = page
        .eval(
            "() => [...document.querySelectorAll('#confusion tbody td')]\
               .reduce((sum, td) => sum + Number(td.textContent), 0)",
        )
        .await;
    assert_eq!(
        matrix_total,
        json!(sample_records("validation.jsonl").len())
    );
    let drawn = page
        .eval("() => Number(document.querySelector('#loss-chart').dataset.validation)")
        .await;
    assert_eq!(drawn, json!(3), "one validation point per epoch");

    // The long job, live: its curve gains points and its progress bar moves.
    page.click("#jobs tr[data-job=\"web-long\"]").await;
    let first = page
        .wait(
            "the first points of web-long's curve",
            "() => { const n = Number(document.querySelector('#loss-chart').dataset.train); \
             return n >= 2 && n; }",
            SHOWN,
        )
        .await
        .as_u64()
        .unwrap();
    let percent = page
        .eval(&row(
            "web-long",
            "Number(row.querySelector('.bar').dataset.percent)",
        ))
        .await
        .as_f64()
        .unwrap();
    page.wait(
        "more points on the curve",
        &format!(
            "() => Number(document.querySelector('#loss-chart').dataset.train) >= {} + 3",
            first
        ),
        SHOWN,
    )
    .await;
    page.wait(
        "the progress bar moving",
        &row(
            "web-long",
            &format!("Number(row.querySelector('.bar').dataset.percent) > {percent}"),
        ),
        SHOWN,
    )
    .await;
    let shot = mesh.dir().join("dashboard.png");
    page.screenshot(&shot).await;
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Ok(copy) = std::env::var("LEXMESH_SCREENSHOT") {
        std::fs::copy(&shot, copy).unwrap();
    }

    // Its trainer killed: shown unresponsive, then replaced; the job resumes on the same curve.
    let owner = eventually("the trainer running web-long", SHOWN, || async {
        trainers
            .alive(Duration::from_millis(1500))
            .into_iter()
            .find(|(_, beat)| beat.running.iter().any(|j| j == "web-long"))
    })
    .await;
    let points_before = page
        .eval("() => Number(document.querySelector('#loss-chart').dataset.train)")
        .await
        .as_u64()
        .unwrap();
    send_signal("-KILL", owner.1.pid);
    let killed = Instant::now();
    let instance_seen = |state: &str| {
        format!(
            "() => {{ const r = document.querySelector('#instances tr[data-instance=\"{}\"]'); \
             return r && r.dataset.seen.split(' ').includes('{state}'); }}",
            owner.0
        )
    };
    page.wait(
        "the killed trainer unresponsive",
        &instance_seen("unresponsive"),
        SHOWN,
    )
    .await;
    page.wait(
        "the killed trainer replaced",
        &instance_seen("replaced"),
        SHOWN,
    )
    .await;
    eprintln!("figure: kill -> shown replaced: {:.1?}", killed.elapsed());
    let marker = page
        .wait(
            "web-long's second attempt on its curve",
            "() => { const m = document.querySelectorAll('#loss-chart line.attempt'); \
             return m.length === 1 && \
               document.querySelector('#loss-chart line.attempt + text').textContent; }",
            SHOWN,
        )
        .await;
    assert_eq!(marker, "attempt 2 (resumed)");
    let seen = page
        .eval(&format!(
            "() => document.querySelector('#instances tr[data-instance=\"{}\"]').dataset.seen",
            owner.0
        ))
        .await;
    let seen: Vec<&str> = seen.as_str().unwrap().split(' ').collect();
    let at = |state: &str| seen.iter().position(|s| *s == state).unwrap();
    assert!(at("unresponsive") < at("replaced"), "{seen:?}");
    page.wait(
        "web-long running again",
        &row(
            "web-long",
            "row.children[3].textContent === '2' && \
             row.querySelector('.status').textContent === 'running'",
        ),
        SHOWN,
    )
    .await;
    // The resumed attempt continued the line: it still starts in the first epoch, and only
    // the points drawn after the checkpoint it resumed from were dropped.
    let (first_x, points_after) = {
        let v = page
            .eval(
                "() => { const c = document.querySelector('#loss-chart').dataset; \
                 return [Number(c.firstX), Number(c.train)]; }",
            )
            .await;
        (v[0].as_f64().unwrap(), v[1].as_u64().unwrap())
    };
    let resumed = long
        .until(SHOWN, |e| {
            e["event"] == "progress" && e["attempt"] == 2 && e["phase"] == "started"
        })
        .await;
    let resumed_from = resumed["resumed_from_epoch"]
        .as_u64()
        .expect("attempt 2 resumed from a checkpoint");
    assert!(first_x <= 1.0, "the curve now starts at epoch {first_x}");
    assert!(
        resumed_from >= 1 && points_after >= resumed_from,
        "{points_before} points before the kill, {points_after} after resuming from epoch \
         {resumed_from}"
    );

    // Cancelled from the page: the job ends with a `cancelled` event.
    page.wait(
        "the cancel button",
        "() => !document.querySelector('#cancel').hidden",
        SHOWN,
    )
    .await;
    page.click("#cancel").await;
    let end = long.until_final(SHOWN).await;
    assert_eq!(end["event"], "cancelled", "{end}");
    page.wait(
        "web-long cancelled",
        &row(
            "web-long",
            "row.querySelector('.status').textContent === 'cancelled'",
        ),
        SHOWN,
    )
    .await;
    let said = page
        .eval("() => document.querySelector('#action-result').textContent")
        .await;
    assert!(said.as_str().unwrap().contains("cancelling"), "{said}");

    // A narrow window: one column, nothing wider than the window but the tables' own scroll.
    page.resize(420, 800).await;
    let overflow = page
        .wait(
            "the one-column layout",
            "() => getComputedStyle(document.querySelector('main')).gridTemplateColumns\
               .split(' ').length === 1 && [document.documentElement.scrollWidth]",
            SHOWN,
        )
        .await;
    assert!(
        overflow[0].as_u64().unwrap() <= 420,
        "page width {overflow}"
    );
    page.close().await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_dashboard_refuses_to_cancel_and_reconnects_after_losing_its_server() {
    let mesh = TestMesh::start(LEXMESH).await;
    let metrics: Heartbeats = mesh.track_heartbeats("lexmesh.heartbeat.metrics.*").await;
    let mut watch = mesh.watch("ro-1").await;
    // A fixed port, so that the metrics replica `up` restarts listens where the page is.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let (mut up, url) =
        up_with_dashboard(&mesh, &[("LEXMESH_METRICS__LISTEN", listen.as_str())]).await;
    mesh.submit(TRAIN, &job("ro-1", 400)).await;
    watch
        .until(SHOWN, |e| e["event"] == "progress" && e["phase"] == "epoch")
        .await;
    let mut page = Browser::open(&url, 1280, 800).await;
    page.wait("ro-1's row", &row("ro-1", "true"), SHOWN).await;
    page.click("#jobs tr[data-job=\"ro-1\"]").await;
    page.wait(
        "ro-1's curve",
        "() => Number(document.querySelector('#loss-chart').dataset.train) > 0",
        SHOWN,
    )
    .await;
    let hidden = page
        .eval("() => document.querySelector('#cancel').hidden")
        .await;
    assert_eq!(hidden, json!(true));
    let status = page
        .eval(
            "() => fetch('api/jobs/ro-1/cancel', {method: 'POST', \
               headers: {'X-Lexmesh-Action': 'cancel'}}).then(r => r.status)",
        )
        .await;
    assert_eq!(status, json!(403));
    // Still training: the refused cancel changed nothing.
    let epoch = watch
        .until(SHOWN, |e| e["event"] == "progress" && e["phase"] == "epoch")
        .await;
    assert_eq!(epoch["job_id"], "ro-1");
    assert!(watch.of_kind("cancelled").is_empty(), "{}", watch.summary());

    // A hyperparameter search: its leaderboard, best first, and its trials among the jobs.
    let mut search = mesh.watch("ro-search").await;
    mesh.submit(
        "lexmesh.jobs.optimize",
        &json!({
            "job_id": "ro-search",
            "model_id": "ro-best",
            "dataset": inline(persian("train.jsonl"), Some(persian("validation.jsonl"))),
            "base": {"model": "bow", "char_buckets": 2000, "seed": 1, "patience": 0},
            "trials": 3,
            "search_space": {"embedding_dim": [8, 16, 32]},
            "sampler": "grid",
            "max_concurrent_trials": 2,
            "max_epochs": 2,
        }),
    )
    .await;
    assert_eq!(search.until_final(SHOWN).await["event"], "completed");
    page.wait(
        "the search completed",
        &row(
            "ro-search",
            "row.querySelector('.status').textContent === 'completed'",
        ),
        SHOWN,
    )
    .await;
    page.click("#jobs tr[data-job=\"ro-search\"]").await;
    let board = page
        .wait(
            "the search's leaderboard",
            "() => { const rows = [...document.querySelectorAll('#trials tbody tr')]; \
             return rows.length === 3 && rows.map(r => [Number(r.children[0].textContent), \
               r.children[2].textContent, Number(r.children[4].textContent)]); }",
            SHOWN,
        )
        .await;
    let board = board.as_array().unwrap();
    let f1: Vec<f64> = board.iter().map(|r| r[2].as_f64().unwrap()).collect();
    assert!(
        board
            .iter()
            .enumerate()
            .all(|(i, r)| r[0] == i + 1 && r[1] == "completed")
            && f1.windows(2).all(|w| w[0] >= w[1]),
        "{board:?}"
    );
    let trials = page
        .eval("() => document.querySelectorAll('#jobs tbody tr').length")
        .await;
    assert_eq!(trials, json!(5), "ro-1, the search and its 3 trials");
    page.click("#jobs tr[data-job=\"ro-1\"]").await;

    // Its server killed: the page says the connection is lost, and is live again once `up`
    // has restarted the metrics replica, with the job's curve still growing.
    let (_, beat) = eventually("the metrics replica's heartbeat", SHOWN, || async {
        metrics
            .alive(Duration::from_millis(1500))
            .into_iter()
            .next()
    })
    .await;
    let points = page
        .eval("() => Number(document.querySelector('#loss-chart').dataset.train)")
        .await
        .as_u64()
        .unwrap();
    send_signal("-KILL", beat.pid);
    page.wait(
        "the lost connection",
        "() => document.querySelector('#connection').dataset.state === 'lost'",
        SHOWN,
    )
    .await;
    page.wait(
        "the connection live again",
        "() => document.querySelector('#connection').dataset.state === 'live'",
        SHOWN,
    )
    .await;
    page.wait(
        "the curve growing after the reconnect",
        &format!("() => Number(document.querySelector('#loss-chart').dataset.train) > {points}"),
        SHOWN,
    )
    .await;
    page.close().await;
    up.stop().await;
}
