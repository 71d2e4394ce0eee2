//! A private `nats-server` with JetStream per test, on a free port of 127.0.0.1 in a temporary
//! folder; killed and its folder removed when dropped.

use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use lexmesh_runtime::nats_server::{self, LocalServer, LocalServerOptions, NatsServerError};
use tempfile::TempDir;

use crate::TestkitError;
pub use lexmesh_runtime::nats_server::ServerFlavor;

/// How many times a start is tried again when the chosen port was taken meanwhile.
const PORT_ATTEMPTS: usize = 8;

/// Options of a [`NatsServer`]; get one from [`NatsServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct NatsServerBuilder {
    flavor: ServerFlavor,
    max_payload: Option<u64>,
    websocket: bool,
    extra_config: Option<String>,
    name: Option<String>,
}

impl NatsServerBuilder {
    /// Which server to run (default [`ServerFlavor::Current`]).
    pub fn flavor(mut self, flavor: ServerFlavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// The server's `max_payload` in bytes (its default is 1 MiB).
    pub fn max_payload(mut self, bytes: u64) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Also listen for WebSocket clients (no TLS) on another free port; see
    /// [`NatsServer::websocket_url`].
    pub fn websocket(mut self, enabled: bool) -> Self {
        self.websocket = enabled;
        self
    }

    /// More nats-server configuration, added verbatim to the config file.
    pub fn extra_config(mut self, config: impl Into<String>) -> Self {
        self.extra_config = Some(config.into());
        self
    }

    /// The server's name (default `lexmesh-test`; each node of a cluster needs its own).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Starts the server in a fresh temporary folder on a free port.
    ///
    /// # Errors
    ///
    /// When no binary of the flavor is found (the message says how to install one), or the
    /// server does not start (the message holds the end of its log).
    pub fn start(self) -> Result<NatsServer, TestkitError> {
        let binary = nats_server::locate(self.flavor)?;
        let version = nats_server::version(&binary)?;
        let dir = tempfile::Builder::new()
            .prefix("lexmesh-nats-")
            .tempdir()
            .map_err(|source| TestkitError::Io {
                context: "cannot create a temporary folder",
                source,
            })?;
        let base = LocalServerOptions {
            name: self.name.unwrap_or_else(|| "lexmesh-test".to_owned()),
            max_payload: self.max_payload,
            extra_config: self.extra_config,
            ..LocalServerOptions::new(binary, dir.path().join("jetstream"), dir.path().join("log"))
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let options = LocalServerOptions {
                port: free_port()?,
                websocket_port: if self.websocket {
                    Some(free_port()?)
                } else {
                    None
                },
                ..base.clone()
            };
            match LocalServer::start(options) {
                Ok(server) => {
                    return Ok(NatsServer {
                        server,
                        version,
                        flavor: self.flavor,
                        dir,
                    });
                }
                Err(e @ NatsServerError::AddressInUse { .. }) => last_error = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_error
            .map(TestkitError::from)
            .unwrap_or_else(|| TestkitError::Io {
                context: "no free port",
                source: io::Error::from(io::ErrorKind::AddrInUse),
            }))
    }
}

fn free_port() -> Result<u16, TestkitError> {
    nats_server::free_port().map_err(|source| TestkitError::Io {
        context: "cannot find a free port",
        source,
    })
}

/// A private `nats-server` with JetStream, killed (and its temporary folder removed) on drop.
#[derive(Debug)]
pub struct NatsServer {
    // Declared before `dir` so that the process is killed before its folder is removed.
    server: LocalServer,
    version: (u32, u32, u32),
    flavor: ServerFlavor,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a current (2.10+) server with JetStream on a free port.
    ///
    /// # Errors
    ///
    /// See [`NatsServerBuilder::start`].
    pub fn start() -> Result<NatsServer, TestkitError> {
        Self::builder().start()
    }

    /// Starts Debian's nats-server 2.9 with JetStream on a free port.
    ///
    /// # Errors
    ///
    /// When Debian's 2.9 binary is absent (the message says so), or as
    /// [`NatsServerBuilder::start`].
    pub fn start_legacy() -> Result<NatsServer, TestkitError> {
        Self::builder().flavor(ServerFlavor::Legacy).start()
    }

    /// Options for a server: flavor, `max_payload`, WebSocket, extra configuration.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The WebSocket URL, when the server was built with [`NatsServerBuilder::websocket`].
    pub fn websocket_url(&self) -> Option<String> {
        self.server.websocket_url()
    }

    /// The client port (the same across [`restart`](Self::restart)s).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The JetStream store folder (the same across [`restart`](Self::restart)s).
    pub fn store_dir(&self) -> &Path {
        self.server.store_dir()
    }

    /// The server's log file (every start appends to it).
    pub fn log_path(&self) -> PathBuf {
        self.server.log_path()
    }

    /// The temporary folder that holds the store and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's version, e.g. `(2, 15, 1)`.
    pub fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    /// Which flavor of server this is.
    pub fn flavor(&self) -> ServerFlavor {
        self.flavor
    }

    /// The `nats-server` binary this server runs.
    pub fn binary(&self) -> &Path {
        &self.server.options().binary
    }

    /// The server's name (its JetStream cluster peer name).
    pub fn name(&self) -> &str {
        &self.server.options().name
    }

    /// Starts a JetStream cluster of `nodes` current servers on loopback (named
    /// `lexmesh-test-1` …, routes to each other, each with its own store). Its JetStream is
    /// usable once the nodes have elected a meta leader, a moment after they start.
    ///
    /// # Errors
    ///
    /// As [`NatsServerBuilder::start`].
    pub fn cluster(nodes: usize) -> Result<Vec<NatsServer>, TestkitError> {
        let ports = (0..nodes)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        let routes = ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut servers = Vec::new();
        for (n, port) in ports.iter().enumerate() {
            let config = format!(
                "cluster {{\n  name: lexmesh-test\n  listen: 127.0.0.1:{port}\n  routes: [{routes}]\n}}\n"
            );
            servers.push(
                NatsServer::builder()
                    .name(format!("lexmesh-test-{}", n + 1))
                    .max_payload(8 * 1024 * 1024)
                    .extra_config(config)
                    .start()?,
            );
        }
        Ok(servers)
    }

    /// The process id of the running server process.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Kills the server (SIGKILL, as in a crash) and starts it again on the same port with the
    /// same store folder; returns once it is ready. Also starts it after [`kill`](Self::kill).
    ///
    /// # Errors
    ///
    /// When the server does not start again (the message holds the end of its log).
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.server.kill();
        let options = self.server.options().clone();
        let mut attempt = 0;
        loop {
            match LocalServer::start(options.clone()) {
                Ok(server) => {
                    self.server = server;
                    return Ok(());
                }
                // The old socket may linger for a moment; the port is ours, so wait for it.
                Err(NatsServerError::AddressInUse { .. }) if attempt < 50 => {
                    attempt += 1;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Stops the server cleanly (SIGTERM, SIGKILL after 10 s); [`restart`](Self::restart)
    /// starts it again.
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent.
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        Ok(self.server.stop()?)
    }

    /// Kills the server (SIGKILL, as in a crash); [`restart`](Self::restart) starts it again.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.server.is_running()
    }
}
