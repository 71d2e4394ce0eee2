//! Traces from a real process to an OTLP receiver: a span's context crosses NATS headers to a
//! child span (same trace, right parent, a link to another attempt), spans made on a tokio
//! multi-thread runtime are delivered by `shutdown` (after the runtime ended, or from inside
//! it), `TRACEPARENT` lets a CLI run join an outer trace, and with tracing off or unsupported
//! nothing is exported and the helpers are silent no-ops.
//!
//! The global subscriber and the `OTEL_*` variables belong to a process, so each scenario runs
//! in a child process of this test binary (the `scenario_*` tests, ignored in a normal run)
//! with its own environment; the parent test holds the receiver and checks what arrived. The
//! child has exited before the check: what was not delivered by `shutdown` is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::Duration;

use async_nats::HeaderMap;
use lexmesh_runtime::telemetry::{self, TRACEPARENT, Telemetry};
use lexmesh_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use tracing::{Instrument, info_span};

/// Set in a child process to the name of the scenario it runs.
const SCENARIO: &str = "LEXMESH_TELEMETRY_SCENARIO";

/// Runs the ignored test `scenario` of this binary in a child process whose environment has no
/// `OTEL_*`/`TRACE*` variables but `env`; panics with its output unless it succeeds.
fn run_scenario(scenario: &str, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        scenario,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") || name.starts_with("TRACE") {
            command.env_remove(name);
        }
    }
    command.env(SCENARIO, scenario).env("LEXMESH_LOG", "info");
    command.envs(env.iter().copied());
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "scenario {scenario} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// Whether this process is the child running `scenario` (else the scenario test returns: it was
/// run directly, e.g. with `--include-ignored`).
fn in_scenario(scenario: &str) -> bool {
    std::env::var(SCENARIO).is_ok_and(|s| s == scenario)
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one span `{name}` in {spans:#?}");
    found[0]
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_span_context_crosses_nats_headers() {
    let receiver = OtlpReceiver::start().unwrap();
    let endpoint = receiver.endpoint();
    run_scenario(
        "scenario_headers",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let spans = receiver.spans();
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let submit = named(&spans, "submit");
    let train = named(&spans, "train");
    let epoch = named(&spans, "epoch");
    let attempt = named(&spans, "attempt");

    for span in &spans {
        assert_eq!(span.service_name, "lexmesh-test");
        assert_eq!(span.resource_attributes["service.instance.id"], "test-1");
        assert_eq!(span.scope_name, "lexmesh");
        assert_eq!(span.trace_id.len(), 32);
        assert_eq!(span.span_id.len(), 16);
        assert!(span.start_unix_nano > 0 && span.start_unix_nano <= span.end_unix_nano);
    }
    // The sender's span is a root; the receiver's span joins its trace as its child.
    assert_eq!(submit.parent_span_id, "");
    assert_eq!(submit.attributes["job_id"], "j1");
    assert_eq!(train.trace_id, submit.trace_id);
    assert_eq!(train.parent_span_id, submit.span_id);
    assert_eq!(train.attributes["job_id"], "j1");
    assert_eq!(train.attributes["attempt"], "2");
    assert_eq!(epoch.trace_id, submit.trace_id);
    assert_eq!(epoch.parent_span_id, train.span_id);
    // The earlier attempt is a trace of its own, linked from the new attempt's span.
    assert_eq!(attempt.parent_span_id, "");
    assert_ne!(attempt.trace_id, submit.trace_id);
    assert_eq!(
        train.links,
        vec![(attempt.trace_id.clone(), attempt.span_id.clone())]
    );
    assert!(submit.links.is_empty());
}

#[test]
#[ignore = "a scenario, run in a child process by a_span_context_crosses_nats_headers"]
fn scenario_headers() {
    if !in_scenario("scenario_headers") {
        return;
    }
    let telemetry = Telemetry::builder("lexmesh-test")
        .instance_id("test-1")
        .init();
    assert!(telemetry.exporting());

    // An earlier attempt whose traceparent was kept in a record.
    let attempt = info_span!("attempt", attempt = 1);
    let original = telemetry::traceparent(&attempt).expect("a traceparent");
    drop(attempt);
    let parts: Vec<&str> = original.split('-').collect();
    assert_eq!(parts.len(), 4, "{original}");
    assert_eq!((parts[0], parts[3]), ("00", "01"));

    // The sender publishes with its span's context in the headers.
    let submit = info_span!("submit", job_id = "j1");
    let mut headers = HeaderMap::new();
    submit.in_scope(|| telemetry::inject_current(&mut headers));
    let sent = headers.get(TRACEPARENT).expect("traceparent written");
    assert_eq!(
        Some(sent.as_str()),
        telemetry::traceparent(&submit).as_deref()
    );

    // The receiver, on another thread, continues the trace and links the earlier attempt.
    std::thread::spawn(move || {
        let train = info_span!("train", job_id = "j1", attempt = 2);
        assert!(telemetry::set_parent_from_headers(&train, Some(&headers)));
        telemetry::add_link(&train, &original);
        train.in_scope(|| info_span!("epoch").in_scope(|| tracing::info!("one epoch")));
        // Once started, the parent cannot change: refused, no panic.
        assert!(!telemetry::set_parent_from_headers(&train, Some(&headers)));
    })
    .join()
    .unwrap();
    drop(submit);

    telemetry.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------

/// Jobs on a 2-worker runtime: each job span goes to a task through headers, as over NATS.
async fn jobs_on_the_runtime(jobs: usize) {
    let mut tasks = Vec::new();
    for job in 0..jobs {
        let span = info_span!("job", job);
        let mut headers = HeaderMap::new();
        telemetry::inject(&span, &mut headers);
        tasks.push(tokio::spawn(
            async move {
                let handler = info_span!("handle", job);
                telemetry::set_parent_from_headers(&handler, Some(&headers));
                async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    tokio::task::yield_now().await;
                }
                .instrument(handler)
                .await;
            }
            .instrument(span),
        ));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn two_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Checks that every job's two spans arrived, the handler a child of the job.
fn check_jobs(spans: &[ReceivedSpan], jobs: usize) {
    assert_eq!(spans.len(), 2 * jobs, "{spans:#?}");
    for job in 0..jobs {
        let job = job.to_string();
        let of = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name && s.attributes.get("job") == Some(&job))
                .unwrap_or_else(|| panic!("span {name} of job {job} in {spans:#?}"))
        };
        let (parent, child) = (of("job"), of("handle"));
        assert_eq!(child.trace_id, parent.trace_id);
        assert_eq!(child.parent_span_id, parent.span_id);
    }
}

#[test]
fn shutdown_after_the_runtime_ended_delivers_its_spans() {
    let receiver = OtlpReceiver::start().unwrap();
    let endpoint = receiver.endpoint();
    // A batch delay far longer than the run: only shutdown can deliver them.
    run_scenario(
        "scenario_runtime_then_shutdown",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    check_jobs(&receiver.spans(), 20);
}

#[test]
#[ignore = "a scenario, run in a child process"]
fn scenario_runtime_then_shutdown() {
    if !in_scenario("scenario_runtime_then_shutdown") {
        return;
    }
    let telemetry = telemetry::init("lexmesh-test");
    assert!(telemetry.exporting());
    let runtime = two_worker_runtime();
    runtime.block_on(jobs_on_the_runtime(20));
    drop(runtime);
    telemetry.shutdown().unwrap();
}

#[test]
fn shutdown_from_inside_a_runtime_delivers_its_spans() {
    for scenario in [
        "scenario_shutdown_on_a_worker",
        "scenario_shutdown_in_current_thread_runtime",
    ] {
        let receiver = OtlpReceiver::start().unwrap();
        let endpoint = receiver.endpoint();
        run_scenario(
            scenario,
            &[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    &receiver.traces_endpoint(),
                ),
                // Ignored: the signal's own endpoint wins.
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    &format!("{endpoint}/elsewhere"),
                ),
                ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ],
        );
        check_jobs(&receiver.spans(), 5);
    }
}

#[test]
#[ignore = "a scenario, run in a child process"]
fn scenario_shutdown_on_a_worker() {
    if !in_scenario("scenario_shutdown_on_a_worker") {
        return;
    }
    let telemetry = telemetry::init("lexmesh-test");
    assert!(telemetry.exporting());
    two_worker_runtime().block_on(async move {
        jobs_on_the_runtime(5).await;
        // On a worker thread of the runtime, as a service's SIGTERM handler would.
        tokio::spawn(async move { telemetry.shutdown() })
            .await
            .unwrap()
            .unwrap();
    });
}

#[test]
#[ignore = "a scenario, run in a child process"]
fn scenario_shutdown_in_current_thread_runtime() {
    if !in_scenario("scenario_shutdown_in_current_thread_runtime") {
        return;
    }
    let telemetry = telemetry::init("lexmesh-test");
    assert!(telemetry.exporting());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            jobs_on_the_runtime(5).await;
            // Blocks the runtime's only thread: the export must not need it.
            telemetry.shutdown().unwrap();
        });
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_cli_run_joins_the_trace_given_in_its_environment() {
    let receiver = OtlpReceiver::start().unwrap();
    let endpoint = receiver.endpoint();
    run_scenario(
        "scenario_env_parent",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "lexmesh-cli-test"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            (
                "TRACEPARENT",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ],
    );
    let spans = receiver.spans();
    let cli = named(&spans, "cli");
    assert_eq!(cli.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(cli.parent_span_id, "b7ad6b7169203331");
    // OTEL_SERVICE_NAME wins over the default name.
    assert_eq!(cli.service_name, "lexmesh-cli-test");
    assert_eq!(cli.resource_attributes["deployment.environment"], "test");
    assert!(!cli.resource_attributes.contains_key("service.instance.id"));
}

#[test]
fn compression_is_not_supported_but_export_goes_on() {
    let receiver = OtlpReceiver::start().unwrap();
    let endpoint = receiver.endpoint();
    let output = run_scenario(
        "scenario_env_parent",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            (
                "TRACEPARENT",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("OTEL_EXPORTER_OTLP_COMPRESSION=gzip"),
        "{stderr}"
    );
    let spans = receiver.spans();
    assert_eq!(named(&spans, "cli").service_name, "lexmesh-test");
}

#[test]
#[ignore = "a scenario, run in a child process"]
fn scenario_env_parent() {
    if !in_scenario("scenario_env_parent") {
        return;
    }
    let telemetry = telemetry::init("lexmesh-test");
    let cli = info_span!("cli");
    assert!(telemetry::set_parent(&cli, telemetry::context_from_env()));
    cli.in_scope(|| tracing::info!("working"));
    drop(cli);
    telemetry.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------

/// Runs `scenario_off` with `env`: not exporting; a warning containing `warning`, or none.
fn not_exported(env: &[(&str, &str)], warning: Option<&str>) {
    let output = run_scenario("scenario_off", env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    match warning {
        Some(warning) => assert!(
            stderr.contains("WARN") && stderr.contains(warning),
            "{env:?}: {stderr}"
        ),
        None => assert!(!stderr.contains("WARN"), "{env:?}: {stderr}"),
    }
}

#[test]
fn nothing_is_exported_when_tracing_is_off_or_unsupported() {
    let receiver = OtlpReceiver::start().unwrap();
    let endpoint = receiver.endpoint();
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str());
    not_exported(&[], None);
    not_exported(&[endpoint, ("OTEL_SDK_DISABLED", "true")], None);
    not_exported(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")], None);
    not_exported(
        &[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
        Some("OTEL_EXPORTER_OTLP_PROTOCOL=grpc: lexmesh exports traces over OTLP `http/protobuf`"),
    );
    assert_eq!(receiver.requests(), 0);
}

#[test]
#[ignore = "a scenario, run in a child process"]
fn scenario_off() {
    if !in_scenario("scenario_off") {
        return;
    }
    let telemetry = telemetry::init("lexmesh-test");
    assert!(!telemetry.exporting());
    let span = info_span!("job");
    let mut incoming = HeaderMap::new();
    incoming.insert(
        TRACEPARENT,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    assert!(!telemetry::set_parent_from_headers(&span, Some(&incoming)));
    telemetry::add_link(
        &span,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    let mut headers = HeaderMap::new();
    span.in_scope(|| telemetry::inject_current(&mut headers));
    telemetry::inject(&span, &mut headers);
    assert!(headers.is_empty());
    assert_eq!(telemetry::traceparent(&span), None);
    span.in_scope(|| tracing::info!("logging still works"));
    telemetry.flush().unwrap();
    telemetry.shutdown().unwrap();
}
