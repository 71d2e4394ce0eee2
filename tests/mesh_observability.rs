//! Observability with real processes on a private nats-server: a job's trace crosses the
//! services (OTLP spans received by a collector inside the test), a redelivered attempt's span
//! links to the first attempt's; the metrics service gathers every instance's reports, serves
//! them to Prometheus (scraped over HTTP, parsed with an exposition-format parser) and raises
//! and clears alerts; `lexmesh status` and `lexmesh top` show it all.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use async_nats::HeaderMap;
use lexmesh_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use lexmesh_testkit::{
    JOB_TIMEOUT, PREPROCESS, TRAIN, TestMesh, cancel_subject, eventually, inline,
    no_early_stop_job, sample_records, short, small_settings,
};
use serde_json::{Value, json};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

/// The trace of the "other system" that submits the jobs.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
}

/// Environment that makes a service export its spans to `receiver`, quickly.
fn otel_env(receiver: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn submit_traced(mesh: &TestMesh, subject: &str, job: &Value) {
    let job_id = job["job_id"].as_str().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", job_id);
    headers.insert("traceparent", traceparent().as_str());
    let ack = mesh
        .publish_raw(subject, Some(headers), serde_json::to_vec(job).unwrap())
        .await;
    assert!(ack.get("error").is_none(), "{}", short(&ack));
}

fn wait_spans(
    receiver: &OtlpReceiver,
    done: impl FnMut(&[ReceivedSpan]) -> bool,
) -> Vec<ReceivedSpan> {
    tokio::task::block_in_place(|| receiver.wait_for(done, Duration::from_secs(20)))
}

fn job_span<'a>(spans: &'a [ReceivedSpan], job_id: &str, attempt: u32) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.attributes.get("job_id").map(String::as_str) == Some(job_id)
            && s.attributes.get("attempt").map(String::as_str) == Some(&attempt.to_string())
            && s.attributes.contains_key("kind")
    })
}

fn is_finished_epoch(span: &ReceivedSpan) -> bool {
    span.attributes.contains_key("epoch")
        && span.attributes.get("outcome").map(String::as_str) == Some("completed")
}

fn digest(spans: &[ReceivedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} trace={} span={} parent={} links={:?}",
                s.service_name, s.name, s.trace_id, s.span_id, s.parent_span_id, s.links
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "otlp"),
    ignore = "the services export spans only when built with --features otlp"
)]
async fn a_jobs_trace_crosses_the_services_and_a_redelivery_links_to_the_first_attempt() {
    let receiver = OtlpReceiver::start().expect("OTLP receiver");
    let otel = otel_env(&receiver);
    let env = as_refs(&otel);
    let mut mesh = TestMesh::start(LEXMESH).await;
    mesh.start_service("preprocessor", "preprocessor-a", &env)
        .await;
    // trainer-a is stopped mid-job below: it hands the job back, however near its end.
    let mut trainer_env = env.clone();
    trainer_env.push(("LEXMESH_JOBS__FINISH_WITHIN", "0s"));
    mesh.start_service("trainer", "trainer-a", &trainer_env)
        .await;
    mesh.start_service("evaluator", "evaluator-a", &env).await;

    // preprocess → train on the prepared dataset → evaluate, all submitted in one trace.
    let settings = small_settings(3);
    let mut watch = mesh.watch("p1").await;
    let job = json!({
        "job_id": "p1",
        "dataset": inline(sample_records("train.jsonl"), Some(sample_records("validation.jsonl"))),
        "settings": settings,
    });
    submit_traced(&mesh, PREPROCESS, &job).await;
    let done = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(done["event"], "completed", "{}", watch.summary());
    let dataset_id = done["result"]["preprocess"]["dataset_id"].clone();

    let mut watch = mesh.watch("t1").await;
    let job = json!({
        "job_id": "t1",
        "model_id": "m1",
        "dataset": {"prepared": {"dataset_id": dataset_id}},
        "settings": settings,
    });
    submit_traced(&mesh, TRAIN, &job).await;
    let done = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(done["event"], "completed", "{}", watch.summary());
    let epochs = done["result"]["train"]["epochs_completed"]
        .as_u64()
        .unwrap();
    assert!(epochs >= 1, "{}", short(&done));

    // The evaluate job goes through `lexmesh submit`, which joins the caller's trace through
    // TRACEPARENT and adds a span of its own.
    let job_file = mesh.dir().join("e1.json");
    std::fs::write(
        &job_file,
        serde_json::to_vec(&json!({
            "job_id": "e1",
            "model_id": "m1",
            "dataset": inline(sample_records("validation.jsonl"), None),
        }))
        .unwrap(),
    )
    .unwrap();
    let mut watch = mesh.watch("e1").await;
    let submitted = Command::new(LEXMESH)
        .args(["submit", "evaluate", "--json"])
        .arg(&job_file)
        .current_dir(mesh.dir())
        .env("NATS_URL", mesh.server.url())
        .env("TRACEPARENT", traceparent())
        .envs(otel.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run lexmesh submit");
    assert!(
        submitted.status.success(),
        "lexmesh submit: {}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let done = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(done["event"], "completed", "{}", watch.summary());

    let spans = wait_spans(&receiver, |spans| {
        job_span(spans, "p1", 1).is_some()
            && job_span(spans, "t1", 1).is_some()
            && job_span(spans, "e1", 1).is_some()
            && spans.iter().filter(|s| is_finished_epoch(s)).count() as u64 >= epochs
            && spans.iter().any(|s| s.service_name == "lexmesh-cli")
    });
    let all = digest(&spans);
    let ours: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let services: BTreeSet<&str> = ours.iter().map(|s| s.service_name.as_str()).collect();
    for service in [
        "lexmesh-preprocessor",
        "lexmesh-trainer",
        "lexmesh-evaluator",
        "lexmesh-cli",
    ] {
        assert!(
            services.contains(service),
            "no {service} span in the trace:\n{all}"
        );
    }
    let preprocess = job_span(&spans, "p1", 1).unwrap();
    let train = job_span(&spans, "t1", 1).unwrap();
    let evaluate = job_span(&spans, "e1", 1).unwrap();
    for span in [preprocess, train] {
        assert_eq!(span.trace_id, TRACE_ID, "{all}");
        assert_eq!(span.parent_span_id, CALLER_SPAN, "{all}");
        assert_eq!(span.attributes["outcome"], "completed", "{all}");
    }
    assert_eq!(preprocess.service_name, "lexmesh-preprocessor");
    assert_eq!(train.service_name, "lexmesh-trainer");
    assert_eq!(
        train
            .resource_attributes
            .get("service.instance.id")
            .map(String::as_str),
        Some("trainer-a"),
        "{all}"
    );
    // The evaluate job's span hangs under the CLI's submit span, itself under the caller.
    let submit = spans
        .iter()
        .find(|s| s.service_name == "lexmesh-cli")
        .unwrap();
    assert_eq!(submit.trace_id, TRACE_ID, "{all}");
    assert_eq!(submit.parent_span_id, CALLER_SPAN, "{all}");
    assert_eq!(evaluate.trace_id, TRACE_ID, "{all}");
    assert_eq!(evaluate.parent_span_id, submit.span_id, "{all}");
    // One span per epoch under the training job's span, with its figures.
    let epoch_spans: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id == train.span_id && is_finished_epoch(s))
        .collect();
    assert_eq!(epoch_spans.len() as u64, epochs, "{all}");
    for span in &epoch_spans {
        assert_eq!(span.trace_id, TRACE_ID);
        assert!(span.attributes.contains_key("loss"), "{all}");
        assert!(span.start_unix_nano >= train.start_unix_nano);
        assert!(span.end_unix_nano <= train.end_unix_nano);
    }

    // A redelivery: trainer-a is stopped mid-job and hands it back; trainer-b's attempt 2
    // starts a new span, linked to attempt 1's, in the same trace.
    let mut watch = mesh.watch("t2").await;
    submit_traced(&mesh, TRAIN, &no_early_stop_job("t2", 400)).await;
    watch
        .until(JOB_TIMEOUT, |e| {
            e["event"] == "progress" && e["phase"] == "epoch" && e["attempt"] == 1
        })
        .await;
    mesh.start_service("trainer", "trainer-b", &env).await;
    mesh.process("trainer-a").terminate();
    watch
        .until(JOB_TIMEOUT, |e| {
            e["event"] == "accepted" && e["attempt"] == 2
        })
        .await;
    let reply = mesh
        .request(
            &cancel_subject("t2"),
            &json!({"job_id": "t2"}),
            "cancel-reply",
        )
        .await;
    assert_eq!(reply["outcome"], "cancelling", "{}", short(&reply));
    watch.until_final(JOB_TIMEOUT).await;
    let spans = wait_spans(&receiver, |spans| {
        let first = job_span(spans, "t2", 1);
        first.is_some()
            && job_span(spans, "t2", 2).is_some()
            && spans.iter().any(|s| {
                s.service_name == "lexmesh-preprocessor"
                    && Some(&s.parent_span_id) == first.map(|f| &f.span_id)
            })
    });
    let all = digest(&spans);
    let first = job_span(&spans, "t2", 1).expect("attempt 1's span");
    let second = job_span(&spans, "t2", 2).expect("attempt 2's span");
    assert_eq!(first.attributes["outcome"], "handed_back", "{all}");
    assert_eq!(second.attributes["outcome"], "cancelled", "{all}");
    assert_eq!(first.attributes["instance"], "trainer-a");
    assert_eq!(second.attributes["instance"], "trainer-b");
    for span in [first, second] {
        assert_eq!(span.trace_id, TRACE_ID, "{all}");
        assert_eq!(span.parent_span_id, CALLER_SPAN, "{all}");
    }
    assert_eq!(
        second.links,
        vec![(first.trace_id.clone(), first.span_id.clone())],
        "{all}"
    );
    // Its data was prepared by a `prepare` request that carried the trace: the
    // preprocessor's span for it hangs under the attempt's span.
    let prepare = spans
        .iter()
        .find(|s| s.service_name == "lexmesh-preprocessor" && s.parent_span_id == first.span_id)
        .expect("the prepare request's span");
    assert_eq!(prepare.trace_id, TRACE_ID, "{all}");
    assert_eq!(prepare.name, "lexmesh.api.preprocessor.prepare", "{all}");
    // The record keeps each attempt's span, which is what the link was made from.
    let record = mesh.job_record("t2").await.unwrap();
    let kept = record["history"][0]["traceparent"].as_str().unwrap();
    assert_eq!(kept, format!("00-{TRACE_ID}-{}-01", first.span_id));
}

/// `GET /metrics` over plain HTTP/1.1; (status line, content type, body).
fn scrape(address: SocketAddr) -> (String, String, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.lines().next().unwrap_or_default().to_string();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// The samples of a scrape, parsed by a Prometheus exposition-format parser.
fn parse(body: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the scrape parses")
}

/// The value of a sample; for a histogram (`metric` without `_count`), its count: the `+Inf`
/// bucket.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(f64::NAN, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_service_serves_prometheus_and_raises_and_clears_alerts() {
    let mut mesh = TestMesh::start(LEXMESH).await;
    let fast = [("LEXMESH_SERVICE__METRICS_INTERVAL", "300ms")];
    let mut reports = mesh
        .watch_messages("lexmesh.metrics.trainer.trainer-a", "worker-metrics")
        .await;
    let mut alerts = mesh.watch_messages("lexmesh.alerts.memory", "alert").await;
    mesh.start_service("preprocessor", "preprocessor-a", &fast)
        .await;
    mesh.start_service("trainer", "trainer-a", &fast).await;
    mesh.start_service(
        "metrics",
        "metrics-a",
        &[
            // Port 0: the system picks a free one, which the service's log names.
            ("LEXMESH_METRICS__LISTEN", "127.0.0.1:0"),
            ("LEXMESH_METRICS__FORGET_AFTER", "3s"),
            // Any trainer is over 1 MiB: the memory alert must be raised for trainer-a only.
            ("LEXMESH_METRICS__ALERTS__SERVICES__TRAINER__MEMORY_MB", "1"),
        ],
    )
    .await;
    let address = mesh.metrics_address("metrics-a").await;

    // Every instance reports on lexmesh.metrics.<service>.<instance>, with the lateness of its
    // ticks (a report sent before the first tick has none yet: a busy machine can do that).
    let report = reports
        .until(Duration::from_secs(10), |r| {
            r["tick_lateness"]["count"].as_u64().is_some_and(|n| n > 0)
        })
        .await;
    assert_eq!(report["instance"], "trainer-a");
    assert!(
        report["rss_bytes"].as_u64().unwrap() > 1024 * 1024,
        "{}",
        short(&report)
    );
    assert!(
        report["tick_lateness"]["count"].as_u64().unwrap() > 0,
        "{}",
        short(&report)
    );

    let raised = alerts.next(Duration::from_secs(15)).await;
    assert_eq!(raised["state"], "raised", "{}", short(&raised));
    assert_eq!(raised["service"], "trainer");
    assert_eq!(raised["instance"], "trainer-a");
    assert_eq!(raised["threshold"], 1.0);
    assert!(raised["value"].as_f64().unwrap() > 1.0);
    assert_eq!(raised["source"], "metrics-a");

    // A training job: gauges while it runs, counters and a duration once it is done.
    let mut watch = mesh.watch("t1").await;
    // Long enough (a few seconds) to be still running when `status` and `top` look.
    mesh.submit(TRAIN, &no_early_stop_job("t1", 150)).await;
    watch
        .until(JOB_TIMEOUT, |e| {
            e["event"] == "progress" && e["phase"] == "epoch"
        })
        .await;
    let running = eventually("training gauges of t1", Duration::from_secs(10), || async {
        let scrape = parse(&scrape(address).2);
        value(&scrape, "lexmesh_training_epoch", &[("job_id", "t1")])
            .filter(|epoch| *epoch >= 1.0)
            .map(|_| scrape)
    })
    .await;
    assert!(
        value(
            &running,
            "lexmesh_training_loss",
            &[("job_id", "t1"), ("instance", "trainer-a")]
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        value(
            &running,
            "lexmesh_training_total_epochs",
            &[("job_id", "t1")]
        ),
        Some(150.0)
    );
    let snapshot = mesh.metrics_snapshot().await;
    assert!(
        snapshot["training"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["job_id"] == "t1" && t["instance"] == "trainer-a"),
        "{}",
        short(&snapshot)
    );
    assert!(
        snapshot["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "memory" && a["instance"] == "trainer-a"),
        "{}",
        short(&snapshot)
    );
    // `lexmesh status` shows the instance, its job and the alert (health is not running:
    // a note says so, and the metrics part is shown all the same).
    let status = Command::new(LEXMESH)
        .args(["status", "--format", "json"])
        .current_dir(mesh.dir())
        .env("NATS_URL", mesh.server.url())
        .output()
        .expect("run lexmesh status");
    let shown: Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| {
        panic!(
            "status --format json: {e}: {}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        )
    });
    mesh.schemas.check(
        "metrics-snapshot",
        "status --format json",
        &shown["metrics"],
    );
    let top = Command::new(LEXMESH)
        .args(["top", "--count", "1"])
        .current_dir(mesh.dir())
        .env("NATS_URL", mesh.server.url())
        .output()
        .expect("run lexmesh top");
    let frame = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "{frame}{}",
        String::from_utf8_lossy(&top.stderr)
    );
    for needle in ["trainer-a", "t1", "memory"] {
        assert!(
            frame.contains(needle),
            "`lexmesh top` frame lacks {needle}:\n{frame}"
        );
    }

    let done = watch.until_final(JOB_TIMEOUT).await;
    assert_eq!(done["event"], "completed", "{}", watch.summary());
    let (status_line, content_type, body) = scrape(address);
    assert!(status_line.contains("200"), "{status_line}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let finished = eventually("job counters of t1", Duration::from_secs(10), || async {
        let scrape = parse(&scrape(address).2);
        let counted = |metric, labels: &[(&str, &str)]| {
            value(&scrape, metric, labels).is_some_and(|n| n >= 1.0)
        };
        // From the event, and from trainer-a's next report.
        (counted(
            "lexmesh_jobs_total",
            &[("kind", "train"), ("outcome", "completed")],
        ) && counted(
            "lexmesh_instance_jobs_completed_total",
            &[("instance", "trainer-a")],
        ))
        .then_some(scrape)
    })
    .await;
    assert_eq!(
        value(
            &finished,
            "lexmesh_job_duration_seconds",
            &[("kind", "train")]
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(&finished, "lexmesh_training_epoch", &[("job_id", "t1")]),
        None
    );
    assert!(
        value(
            &finished,
            "lexmesh_instance_memory_rss_bytes",
            &[("service", "trainer"), ("instance", "trainer-a")]
        )
        .unwrap()
            > 1e6
    );
    assert!(
        value(
            &finished,
            "lexmesh_event_latency_seconds",
            &[("event", "progress")]
        )
        .is_some_and(|n| n >= 1.0),
        "{body}"
    );
    // Every instance's CPU figure, the metrics service's own too (its reports come every 2 s).
    for instance in ["preprocessor-a", "metrics-a", "trainer-a"] {
        eventually(
            &format!("the CPU figure of {instance}"),
            Duration::from_secs(10),
            || async {
                value(
                    &parse(&scrape(address).2),
                    "lexmesh_instance_cpu_percent",
                    &[("instance", instance)],
                )
            },
        )
        .await;
    }
    // No memory alert for the preprocessor (its threshold is the default 512 MiB): none among
    // the alerts active now, nor among those published so far.
    let snapshot = mesh.metrics_snapshot().await;
    let active: Vec<&Value> = snapshot["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "memory")
        .collect();
    assert!(
        !active.is_empty() && active.iter().all(|a| a["instance"] == "trainer-a"),
        "{}",
        short(&snapshot)
    );
    alerts.drain_for(Duration::from_millis(500)).await;
    assert!(
        alerts.events.iter().all(|a| a["instance"] == "trainer-a"),
        "{:?}",
        alerts.events
    );

    // trainer-a stops: once it is forgotten, its series leave /metrics and its alert clears.
    mesh.process("trainer-a").terminate();
    let cleared = alerts
        .until(Duration::from_secs(15), |a| a["state"] == "cleared")
        .await;
    assert_eq!(cleared["instance"], "trainer-a", "{}", short(&cleared));
    let gone = parse(&scrape(address).2);
    assert_eq!(
        value(
            &gone,
            "lexmesh_instance_memory_rss_bytes",
            &[("instance", "trainer-a")]
        ),
        None
    );
    assert!(
        value(
            &gone,
            "lexmesh_instance_memory_rss_bytes",
            &[("instance", "preprocessor-a")]
        )
        .is_some()
    );
}
