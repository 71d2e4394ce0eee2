//! The runtime against a real nats-server: resources are created idempotently (on a current
//! server and on Debian's 2.9), records change only by compare-and-set, folders round-trip
//! through object stores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lexmesh_protocol::JobKind;
use lexmesh_protocol::record::{JobRecord, JobStatus};
use lexmesh_runtime::connection::{Patience, connect};
use lexmesh_runtime::{Config, Mesh, objects, records};
use lexmesh_testkit::NatsServer;

async fn open(server: &NatsServer) -> Mesh {
    let mut config = Config::default();
    config.nats.url = server.url();
    let client = connect(&config.nats, "test", Patience::FailFast)
        .await
        .unwrap();
    Mesh::open(client, 1, std::time::Duration::from_secs(10))
        .await
        .unwrap()
}

fn record(job_id: &str) -> JobRecord {
    JobRecord::new(job_id, JobKind::Train, JobStatus::Running, 1, 1.0)
}

async fn exercise(server: &NatsServer) {
    // Two services starting at once both succeed.
    let (a, b) = tokio::join!(open(server), open(server));
    let _ = b;
    // Concurrent increments through compare-and-set: none is lost.
    records::update(&a.jobs, "j1", |_| Some(record("j1")))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = a.jobs.clone();
        tasks.push(tokio::spawn(async move {
            records::update(&store, "j1", |r| {
                r.map(|mut r| {
                    r.attempts += 1;
                    r
                })
            })
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (r, _) = records::read(&a.jobs, "j1").await.unwrap().unwrap();
    assert_eq!(r.attempts, 9);
    assert!(records::read(&a.jobs, "nope").await.unwrap().is_none());
    // Cancel markers are not job records.
    records::mark_cancelled(&a.jobs, "j2", "test")
        .await
        .unwrap();
    assert!(records::is_marked_cancelled(&a.jobs, "j2").await.unwrap());
    assert!(!records::is_marked_cancelled(&a.jobs, "j1").await.unwrap());
    let listed = records::list(&a.jobs).await.unwrap();
    assert_eq!(listed.len(), 1);

    // A folder round-trips; a file removed locally is removed from the store on the next sync.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("epoch-0001")).unwrap();
    std::fs::write(src.path().join("epoch-0001/model.bpk"), vec![7u8; 300_000]).unwrap();
    std::fs::write(src.path().join("latest"), "epoch-0001").unwrap();
    let up = objects::sync_dir(&a.checkpoints, "job-x", src.path(), &["latest"])
        .await
        .unwrap();
    assert_eq!(up.last().unwrap().0, "latest", "the pointer goes last");
    std::fs::remove_dir_all(src.path().join("epoch-0001")).unwrap();
    std::fs::create_dir_all(src.path().join("epoch-0002")).unwrap();
    std::fs::write(src.path().join("epoch-0002/model.bpk"), b"two").unwrap();
    std::fs::write(src.path().join("latest"), "epoch-0002").unwrap();
    objects::sync_dir(&a.checkpoints, "job-x", src.path(), &["latest"])
        .await
        .unwrap();
    let dst = tempfile::tempdir().unwrap();
    let n = objects::download_dir(&a.checkpoints, "job-x", dst.path())
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        std::fs::read(dst.path().join("epoch-0002/model.bpk")).unwrap(),
        b"two"
    );
    assert!(!dst.path().join("epoch-0001").exists());
    assert_eq!(
        objects::download_dir(&a.checkpoints, "job-y", dst.path())
            .await
            .unwrap(),
        0
    );
    assert!(
        objects::get_bytes(&a.models, "missing")
            .await
            .unwrap()
            .is_none()
    );
    // An object of several chunks is read into a buffer of its own size, not one grown by
    // doubling (which would hold up to twice its bytes while copying).
    let bytes: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
    objects::put_bytes(&a.models, "big", &bytes).await.unwrap();
    let read = objects::get_bytes(&a.models, "big").await.unwrap().unwrap();
    assert!(read == bytes, "the object's bytes changed on the way");
    assert_eq!(
        read.capacity(),
        bytes.len(),
        "the buffer was not sized from the object"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_records_and_objects_on_a_current_server() {
    let server = NatsServer::start().expect("nats-server (run scripts/setup-nats)");
    exercise(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_records_and_objects_on_debian_2_9() {
    let server = NatsServer::start_legacy().expect("Debian's nats-server 2.9");
    exercise(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_fails_fast_with_the_url() {
    let mut config = Config::default();
    let port = lexmesh_runtime::nats_server::free_port().unwrap();
    config.nats.url = format!("nats://127.0.0.1:{port}");
    config.nats.connect_timeout = std::time::Duration::from_secs(2);
    let error = connect(&config.nats, "test", Patience::FailFast)
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&port.to_string()), "{error}");
}

async fn connects(config: &Config) -> bool {
    connect(&config.nats, "test", Patience::FailFast)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password_and_token_authentication_are_used() {
    let server = NatsServer::builder()
        .extra_config("authorization { user: lexmesh, password: s3cret }")
        .start()
        .expect("nats-server (run scripts/setup-nats)");
    let mut config = Config::default();
    config.nats.url = server.url();
    config.nats.connect_timeout = std::time::Duration::from_secs(2);
    assert!(!connects(&config).await, "connected without credentials");
    config.nats.user = Some("lexmesh".into());
    config.nats.password = Some("wrong".into());
    assert!(!connects(&config).await, "connected with a wrong password");
    config.nats.password = Some("s3cret".into());
    assert!(connects(&config).await);

    let server = NatsServer::builder()
        .extra_config("authorization { token: t0ken }")
        .start()
        .expect("nats-server");
    let mut config = Config::default();
    config.nats.url = server.url();
    config.nats.connect_timeout = std::time::Duration::from_secs(2);
    assert!(!connects(&config).await, "connected without the token");
    config.nats.token = Some("t0ken".into());
    assert!(connects(&config).await);
}

/// `connect`'s error, as the user reads it.
async fn refusal(config: &Config) -> String {
    connect(&config.nats, "test", Patience::FailFast)
        .await
        .map(|_| ())
        .expect_err("connected")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_are_used_and_never_shown() {
    // A password with characters a URL must percent-encode.
    let server = NatsServer::builder()
        .extra_config("authorization { user: lexmesh, password: \"s3/cr@t\" }")
        .start()
        .expect("nats-server (run scripts/setup-nats)");
    let with_login = |login: &str| {
        server
            .url()
            .replacen("nats://", &format!("nats://{login}@"), 1)
    };
    let mut config = Config::default();
    config.nats.connect_timeout = std::time::Duration::from_secs(2);
    config.nats.url = with_login("lexmesh:s3%2Fcr%40t");
    assert!(
        connects(&config).await,
        "the URL's user and password are not used"
    );
    // Every node of a cluster URL carries the same login.
    config.nats.url = format!("{}, {}", with_login("lexmesh:s3%2Fcr%40t"), config.nats.url);
    assert!(connects(&config).await);

    config.nats.url = with_login("lexmesh:wr0ng");
    let error = refusal(&config).await;
    assert!(
        error.contains("lexmesh:***@")
            && error.contains("user `lexmesh` with the password of nats.url")
            && !error.contains("wr0ng"),
        "{error}"
    );
    // Two logins at once: which one was meant?
    config.nats.url = with_login("lexmesh:s3%2Fcr%40t");
    config.nats.user = Some("lexmesh".into());
    config.nats.password = Some("s3/cr@t".into());
    let error = refusal(&config).await;
    assert!(
        error.contains("nats.url") && error.contains("nats.user is set too"),
        "{error}"
    );

    let server = NatsServer::builder()
        .extra_config("authorization { token: t0ken }")
        .start()
        .expect("nats-server");
    let mut config = Config::default();
    config.nats.connect_timeout = std::time::Duration::from_secs(2);
    config.nats.url = server.url().replacen("nats://", "nats://t0ken@", 1);
    assert!(connects(&config).await, "the URL's token is not used");
    config.nats.url = server.url().replacen("nats://", "nats://n0tthet0ken@", 1);
    let error = refusal(&config).await;
    assert!(
        error.contains("nats://***@")
            && error.contains("the token of nats.url")
            && !error.contains("n0tthet0ken"),
        "{error}"
    );
}

/// How many messages the events stream holds on `subject`.
async fn stored_on(mesh: &Mesh, subject: &str) -> usize {
    use futures::StreamExt;
    let stream = mesh
        .js
        .get_stream(lexmesh_protocol::names::EVENTS_STREAM)
        .await
        .unwrap();
    let info = stream
        .info_with_subjects(subject)
        .await
        .unwrap()
        .next()
        .await;
    info.map_or(0, |r| r.unwrap().1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_ends_once_in_the_events_stream_however_often_its_end_is_published() {
    use lexmesh_protocol::JobEvent;
    use lexmesh_protocol::error::ErrorCode;
    use lexmesh_protocol::event::{Cancelled, Failed};
    use lexmesh_runtime::events;

    let server = NatsServer::start().expect("nats-server (run scripts/setup-nats)");
    let mesh = open(&server).await;
    let failed = |job: &str, retrying: bool, timestamp_ms: f64| {
        JobEvent::Failed(Failed {
            job_id: job.into(),
            kind: JobKind::Train,
            attempt: 1,
            instance: "trainer-a".into(),
            code: ErrorCode::Internal,
            reason: "disk full".into(),
            retrying,
            timestamp_ms,
        })
    };
    // The owner's `cancelled`, then the same ending rebuilt from the record elsewhere, later,
    // by another instance: one stored event.
    for (instance, timestamp_ms) in [("trainer-a", 1000.0), ("trainer-b", 2500.0)] {
        let event = JobEvent::Cancelled(Cancelled {
            job_id: "ends-once".into(),
            kind: JobKind::Train,
            attempt: 1,
            instance: instance.into(),
            epochs_completed: 2,
            timestamp_ms,
        });
        events::publish(&mesh, &event, None).await.unwrap();
    }
    assert_eq!(
        stored_on(&mesh, "lexmesh.events.ends-once.cancelled").await,
        1
    );
    // A final `failed` likewise; `failed` events that will be retried are each their own.
    for timestamp_ms in [1000.0, 2000.0] {
        events::publish(&mesh, &failed("fails-once", false, timestamp_ms), None)
            .await
            .unwrap();
        events::publish(&mesh, &failed("retried", true, timestamp_ms), None)
            .await
            .unwrap();
    }
    assert_eq!(
        stored_on(&mesh, "lexmesh.events.fails-once.failed").await,
        1
    );
    assert_eq!(stored_on(&mesh, "lexmesh.events.retried.failed").await, 2);
}

/// A process that closes its connection and exits at once (its runtime dropped right after
/// `close`) has delivered everything it published: with `drain` alone, the messages still queued
/// in the client are lost with the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_connection_delivers_everything_published_before() {
    use futures::StreamExt;
    const MESSAGES: usize = 16;
    let server = NatsServer::start().expect("nats-server (run scripts/setup-nats)");
    let mut config = Config::default();
    config.nats.url = server.url();
    let observer = connect(&config.nats, "observer", Patience::FailFast)
        .await
        .unwrap();
    let mut received = observer.subscribe("last.words").await.unwrap();
    observer.flush().await.unwrap();

    let nats = config.nats.clone();
    std::thread::spawn(move || {
        // The "process": its own runtime, dropped as soon as the connection is closed.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = connect(&nats, "leaving", Patience::FailFast).await.unwrap();
            for i in 0..MESSAGES {
                let body = vec![u8::try_from(i).unwrap(); 256 * 1024];
                client.publish("last.words", body.into()).await.unwrap();
            }
            lexmesh_runtime::connection::close(&client, std::time::Duration::from_secs(10)).await;
        });
        drop(runtime);
    })
    .join()
    .unwrap();

    let mut seen = Vec::new();
    while seen.len() < MESSAGES {
        match tokio::time::timeout(std::time::Duration::from_secs(10), received.next()).await {
            Ok(Some(message)) => seen.push(message.payload[0]),
            _ => break,
        }
    }
    let expected: Vec<u8> = (0..MESSAGES).map(|i| u8::try_from(i).unwrap()).collect();
    assert_eq!(seen, expected, "messages published before close were lost");
}
