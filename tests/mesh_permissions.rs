//! Who may publish what (`k8s/nats-permissions.conf`) on a real nats-server: the services run
//! as the `lexmesh` user with its credentials; a `publisher` user, as another system would
//! connect, submits a job, follows its events (live and stored), reads its record, classifies
//! and cancels, and every other kind of action is refused by the server and changes nothing.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use lexmesh_testkit::{
    CLASSIFY, TRAIN, TestMesh, eventually, no_early_stop_job, repo_root, sample_train_job,
    small_settings,
};
use serde_json::{Value, json};

/// The `lexmesh` binary under test.
const LEXMESH: &str = env!("CARGO_BIN_EXE_lexmesh");

const SERVICES_PASSWORD: &str = "services-secret-1";
const PUBLISHER_PASSWORD: &str = "publisher-secret-1";

/// The server configuration: the shipped permission sets, the two users, and the test
/// harness's own client (no credentials) as the services user.
fn server_config() -> String {
    let permissions =
        std::fs::read_to_string(repo_root().join("k8s/nats-permissions.conf")).unwrap();
    format!(
        "{permissions}\n\
         authorization {{\n\
           users = [\n\
             {{ user: lexmesh, password: \"{SERVICES_PASSWORD}\", permissions: $LEXMESH_SERVICES }}\n\
             {{ user: publisher, password: \"{PUBLISHER_PASSWORD}\", permissions: $LEXMESH_PUBLISHER }}\n\
           ]\n\
         }}\n\
         no_auth_user: lexmesh\n"
    )
}

/// The publisher's connection, with the errors the server sent it.
async fn publisher(url: &str) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let client = async_nats::ConnectOptions::with_user_and_password(
        "publisher".into(),
        PUBLISHER_PASSWORD.into(),
    )
    .request_timeout(Some(Duration::from_secs(5)))
    .event_callback(move |event| {
        let seen = seen.clone();
        async move {
            if let async_nats::Event::ServerError(error) = event {
                seen.lock().unwrap().push(error.to_string());
            }
        }
    })
    .connect(url)
    .await
    .expect("the publisher user connects");
    (client, errors)
}

/// Waits until the server has refused `subject` to the publisher (its error names it).
async fn refused(errors: &Mutex<Vec<String>>, what: &str, subject: &str) {
    eventually(
        &format!("the server refusing {what} ({subject})"),
        Duration::from_secs(10),
        || async {
            errors
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(subject))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_submits_and_follows_jobs_and_may_do_nothing_else() {
    let mut mesh = TestMesh::builder(LEXMESH)
        .server_config(server_config())
        .start()
        .await;
    let services = [
        ("LEXMESH_NATS__USER", "lexmesh"),
        ("LEXMESH_NATS__PASSWORD", SERVICES_PASSWORD),
    ];
    mesh.start_all(&services).await;
    let url = mesh.server.url();

    // A wrong password is refused with a clear error.
    let wrong = async_nats::ConnectOptions::with_user_and_password(
        "publisher".into(),
        "not-the-password".into(),
    )
    .connect(&url)
    .await;
    let error = wrong.expect_err("a wrong password is refused").to_string();
    assert!(error.to_lowercase().contains("authorization"), "{error}");

    let (client, errors) = publisher(&url).await;
    let js = async_nats::jetstream::new(client.clone());

    // Allowed: submit a job (with JetStream's ack), follow its live events, read its record
    // and its stored events, classify with its model.
    let mut live = client.subscribe("lexmesh.events.perm-1.>").await.unwrap();
    let job = sample_train_job("perm-1", "perm-model", small_settings(2));
    js.publish(TRAIN, serde_json::to_vec(&job).unwrap().into())
        .await
        .expect("publish the job")
        .await
        .expect("the jobs stream stored it");
    let last = loop {
        let message = tokio::time::timeout(Duration::from_secs(90), live.next())
            .await
            .expect("the job's events arrive")
            .unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        if lexmesh_testkit::is_final(&event) {
            break event;
        }
    };
    assert_eq!(last["event"], "completed", "{last}");
    let records = js
        .get_key_value("lexmesh_jobs")
        .await
        .expect("open the job records");
    let record: Value =
        serde_json::from_slice(&records.get("perm-1").await.unwrap().expect("the record")).unwrap();
    assert_eq!(record["status"], "completed");
    let stored = js
        .get_stream("LEXMESH_EVENTS")
        .await
        .expect("open the events stream")
        .create_consumer(pull::OrderedConfig {
            filter_subject: "lexmesh.events.perm-1.>".into(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("an ordered consumer on the events stream");
    let pending = stored.cached_info().num_pending;
    assert!(pending >= 3, "{pending} stored events");
    let first = stored
        .messages()
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    let first: Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(first["event"], "accepted");
    let reply = client
        .request(
            CLASSIFY,
            serde_json::to_vec(&json!({"model_id": "perm-model", "texts": ["متن یک رأی دادگاه"]}))
                .unwrap()
                .into(),
        )
        .await
        .expect("classify answers");
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(reply["error"].is_null(), "{reply}");

    // Allowed: cancel a running job.
    let mut long_events = client.subscribe("lexmesh.events.perm-2.>").await.unwrap();
    let long = no_early_stop_job("perm-2", 400);
    js.publish(TRAIN, serde_json::to_vec(&long).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), long_events.next())
            .await
            .expect("perm-2 starts")
            .unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        if event["event"] == "progress" {
            break;
        }
    }
    let answer = client
        .request(
            "lexmesh.control.perm-2.cancel",
            serde_json::to_vec(&json!({"job_id": "perm-2"}))
                .unwrap()
                .into(),
        )
        .await
        .expect("the running instance answers the cancel");
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer["outcome"], "cancelling", "{answer}");
    let end = loop {
        let message = tokio::time::timeout(Duration::from_secs(60), long_events.next())
            .await
            .expect("perm-2 ends")
            .unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        if lexmesh_testkit::is_final(&event) {
            break event;
        }
    };
    assert_eq!(end["event"], "cancelled");
    // The cancel marker of a job nobody runs yet.
    records
        .put("perm-3.cancel", "cancelled by the publisher".into())
        .await
        .expect("the publisher may leave a cancel marker");
    assert!(
        errors.lock().unwrap().is_empty(),
        "allowed actions were refused: {:?}",
        errors.lock().unwrap()
    );

    // Refused, each by the server, and nothing changes. What the services user sees:
    let mut watched = mesh.client.subscribe("lexmesh.>").await.unwrap();
    let forged = |subject: &str| (subject.to_string(), json!({"forged": true}));
    for (what, (subject, body)) in [
        ("a heartbeat", forged("lexmesh.heartbeat.trainer.fake-1")),
        (
            "a health event",
            forged("lexmesh.health.trainer-a.replaced"),
        ),
        ("an alert", forged("lexmesh.alerts.memory")),
        ("a metrics report", forged("lexmesh.metrics.trainer.fake-1")),
        ("a dead letter", forged("lexmesh.deadletter.train")),
        ("a job event", forged("lexmesh.events.perm-1.completed")),
    ] {
        client
            .publish(subject.clone(), serde_json::to_vec(&body).unwrap().into())
            .await
            .unwrap();
        refused(&errors, what, &subject).await;
    }
    // JetStream administration and writes it may not do (requests the server drops).
    let admin = [
        (
            "deleting the jobs stream",
            "$JS.API.STREAM.DELETE.LEXMESH_JOBS",
        ),
        (
            "purging the events stream",
            "$JS.API.STREAM.PURGE.LEXMESH_EVENTS",
        ),
        ("creating a stream", "$JS.API.STREAM.CREATE.FORGED"),
        (
            "deleting the trainers' consumer",
            "$JS.API.CONSUMER.DELETE.LEXMESH_JOBS.lexmesh-train",
        ),
        (
            "deleting the job records",
            "$JS.API.STREAM.DELETE.KV_lexmesh_jobs",
        ),
        ("writing a job record", "$KV.lexmesh_jobs.perm-1"),
        ("uploading a model", "$O.lexmesh_models.C.forged"),
        (
            "deleting the models store",
            "$JS.API.STREAM.DELETE.OBJ_lexmesh_models",
        ),
    ];
    for (what, subject) in admin {
        client
            .publish(subject.to_string(), r#"{"forged":true}"#.into())
            .await
            .unwrap();
        refused(&errors, what, subject).await;
    }
    // Listening where only services listen.
    let _spy = client.subscribe("lexmesh.heartbeat.>").await.unwrap();
    refused(&errors, "subscribing to heartbeats", "lexmesh.heartbeat.>").await;
    let _spy = client.subscribe("lexmesh.jobs.>").await.unwrap();
    refused(&errors, "reading the job queue", "lexmesh.jobs.>").await;

    // Nothing changed: the streams, the consumer and the record are as they were, and no
    // forged message reached anyone.
    let services_js = async_nats::jetstream::new(mesh.client.clone());
    for stream in [
        "LEXMESH_JOBS",
        "LEXMESH_EVENTS",
        "KV_lexmesh_jobs",
        "OBJ_lexmesh_models",
    ] {
        if let Err(e) = services_js.get_stream(stream).await {
            panic!("{stream} is gone: {e}");
        }
    }
    assert!(
        services_js.get_stream("FORGED").await.is_err(),
        "a stream was created"
    );
    let events = services_js.get_stream("LEXMESH_EVENTS").await.unwrap();
    assert!(events.cached_info().state.messages >= pending);
    let record_now: Value = serde_json::from_slice(
        &services_js
            .get_key_value("lexmesh_jobs")
            .await
            .unwrap()
            .get("perm-1")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record_now, record);
    let still = mesh.job_record("perm-1").await.unwrap();
    assert_eq!(still["status"], "completed");
    let consumers: Vec<String> = services_js
        .get_stream("LEXMESH_JOBS")
        .await
        .unwrap()
        .consumer_names()
        .map(|n| n.unwrap())
        .collect()
        .await;
    assert!(
        consumers.iter().any(|c| c == "lexmesh-train"),
        "{consumers:?}"
    );
    let forged: Vec<String> = {
        let mut seen = Vec::new();
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), watched.next()).await
        {
            if serde_json::from_slice::<Value>(&message.payload).is_ok_and(|v| v["forged"] == true)
            {
                seen.push(message.subject.to_string());
            }
        }
        seen
    };
    assert!(forged.is_empty(), "forged messages got through: {forged:?}");
}
