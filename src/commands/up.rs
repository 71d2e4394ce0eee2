//! `lexmesh up`: a local mesh. Starts a nats-server when none answers at the configured URL,
//! then one `lexmesh serve <service>` process per replica (the health service included),
//! restarts a replica that exits, and on Ctrl-C or SIGTERM stops the replicas (SIGTERM, up to
//! 30 s each to finish) and then the server.
//!
//! A replica that exits or dies of its own fault is restarted under the `[health]` restart
//! policy (`restart_delay`, growing by `restart_factor` up to `restart_max_delay`, given up on
//! after `max_restarts` within `restart_window` with a `crash_loop` alert). One killed from
//! outside (SIGKILL, SIGTERM, SIGINT: an operator, or the health service replacing a replica
//! that hangs) is no sign of a crash loop: it is restarted after `restart_delay`, uncounted.
//! Replicas get `up`'s pid and shut down should `up` die (even by SIGKILL).

use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lexmesh_health::policy::{RestartPolicy, RestartTracker};
use lexmesh_protocol::alert::AlertState;
use lexmesh_protocol::names::Service;
use lexmesh_protocol::record::InstanceExit;
use lexmesh_runtime::Config;
use lexmesh_runtime::nats_server::{self, LocalServer, LocalServerOptions, ServerFlavor};
use lexmesh_runtime::nats_url::redacted;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli_mesh::UpArgs;
use crate::client;
use crate::commands::up_users::{LocalUsers, PUBLISHER_USER, SERVICES_USER};

/// Most replicas of one service `up` starts.
const MAX_REPLICAS: u32 = 16;

/// Port of a URL that names none.
const DEFAULT_PORT: u16 = 4222;

/// How long a replica has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The cores each trainer replica may use: the machine's (or the configured `service.cores`)
/// divided among the trainer replicas, at least 1 each; `None` with one trainer or none, which
/// then detects its cores itself.
pub fn trainer_cores(config: &Config, replicas: &[(Service, u32)]) -> Option<usize> {
    let trainers = replicas
        .iter()
        .find(|(service, _)| *service == Service::Trainer)
        .map_or(0, |(_, n)| *n as usize);
    (trainers > 1).then(|| (config.cores() / trainers).max(1))
}

/// Largest message the started server accepts (lexmesh's own limit is 4 MiB).
const MAX_PAYLOAD: u64 = 8 * 1024 * 1024;

/// Runs the command.
pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let replicas = parse_replicas(&args.replicas)?;
    let config = client::load_config(&args.mesh)?;
    let (host, port) = server_address(&config.nats.url)?;
    let mut server = None;
    let mut nats = config.nats.clone();
    // The services' login on a server started with `--auth`, for every replica.
    let mut common_env = Vec::new();
    let url = if answers(&host, port) {
        if args.auth {
            bail!(
                "--auth sets up the users of a nats-server that `up` starts, but a server \
                 already answers at {}: give that server the users and permissions of \
                 k8s/nats-permissions.conf, and the services' credentials through --config",
                redacted(&config.nats.url)
            );
        }
        eprintln!("using the NATS server at {}", redacted(&config.nats.url));
        config.nats.url.clone()
    } else {
        let Some(bind) = local_bind_address(&host) else {
            bail!(
                "nothing answers at {} and {host} is not this machine; start that server or \
                 point NATS_URL / --config at one",
                redacted(&config.nats.url)
            );
        };
        let binary = match nats_server::locate(ServerFlavor::Current) {
            Ok(binary) => binary,
            Err(e) => {
                eprintln!(
                    "error: nothing answers at {} and no nats-server to start: {e}",
                    redacted(&config.nats.url)
                );
                return Ok(ExitCode::FAILURE);
            }
        };
        let version = nats_server::version(&binary)
            .map(|(a, b, c)| format!("{a}.{b}.{c}"))
            .unwrap_or_else(|_| "(version unknown)".into());
        let users = if args.auth {
            Some(LocalUsers::load_or_create(&args.data_dir)?)
        } else {
            None
        };
        let options = LocalServerOptions {
            host: bind,
            port,
            max_payload: Some(MAX_PAYLOAD),
            extra_config: users.as_ref().map(LocalUsers::server_config),
            ..LocalServerOptions::new(&binary, args.data_dir.join("store"), &args.data_dir)
        };
        let started = LocalServer::start(options).context("starting nats-server")?;
        let url = started.url();
        crate::render::print_line(&format!(
            "started nats-server {version} at {url} (data in {})",
            args.data_dir.display()
        ));
        if let Some(users) = users {
            let (services, publisher) = users.write_client_files(&url)?;
            crate::render::print_line(&format!(
                "users: `{SERVICES_USER}` for the services and the command line (--config {}), \
                 `{PUBLISHER_USER}` for other systems (their URL is in {})",
                services.display(),
                publisher.display()
            ));
            nats.user = Some(SERVICES_USER.to_string());
            nats.password = Some(users.passwords.services.clone());
            common_env.push(("LEXMESH_NATS__USER", SERVICES_USER.to_string()));
            common_env.push(("LEXMESH_NATS__PASSWORD", users.passwords.services));
            nats.token = None;
            nats.nkey_seed = None;
            nats.creds_file = None;
        }
        server = Some(started);
        url
    };
    let exe = std::env::current_exe().context("finding the lexmesh executable")?;
    let trainer_cores = trainer_cores(&config, &replicas);
    let supervised = client::runtime()?.block_on(supervise(Supervision {
        exe,
        url,
        config: args.mesh.config.clone(),
        replicas,
        policy: lexmesh_mesh::health::restart_policy(&config.health),
        nats,
        metrics_listen: config.metrics.listen.clone(),
        trainer_cores,
        common_env,
    }));
    if let Some(mut server) = server {
        match server.stop() {
            Ok(()) => eprintln!("stopped nats-server"),
            Err(e) => eprintln!("error: stopping nats-server: {e}"),
        }
    }
    supervised
}

/// Replicas per service, in start-up order, from `SERVICE=N` arguments (also comma-separated);
/// a service not named gets one.
pub fn parse_replicas(specs: &[String]) -> anyhow::Result<Vec<(Service, u32)>> {
    let mut counts: Vec<(Service, Option<u32>)> = Service::ALL.iter().map(|s| (*s, None)).collect();
    for spec in specs
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((name, n)) = spec.split_once('=') else {
            bail!("--replicas `{spec}` is not SERVICE=N (for example trainer=2)");
        };
        let service: Service = name
            .trim()
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        let n: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n <= MAX_REPLICAS)
            .with_context(|| {
                format!("--replicas `{spec}`: N must be a whole number from 0 to {MAX_REPLICAS}")
            })?;
        let slot = counts
            .iter_mut()
            .find(|(s, _)| *s == service)
            .map(|(_, count)| count);
        match slot {
            Some(count @ None) => *count = Some(n),
            Some(Some(_)) => bail!("--replicas names {} twice", service.name()),
            None => bail!("unknown service `{}`", service.name()),
        }
    }
    let replicas: Vec<(Service, u32)> = counts
        .into_iter()
        .map(|(s, n)| (s, n.unwrap_or(1)))
        .collect();
    if replicas.iter().all(|(_, n)| *n == 0) {
        bail!("--replicas leaves nothing to start");
    }
    Ok(replicas)
}

/// Host and port of the first server of a NATS URL list (`nats://user:pw@host:4222,...`).
fn server_address(urls: &str) -> anyhow::Result<(String, u16)> {
    let first = urls.split(',').next().unwrap_or_default().trim();
    let rest = first.split_once("://").map_or(first, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            bail!("cannot read a host in the NATS URL `{}`", redacted(first));
        };
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        bail!("cannot read a host in the NATS URL `{}`", redacted(first));
    }
    let port = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("bad port `{p}` in the NATS URL `{}`", redacted(first)))?,
        None => DEFAULT_PORT,
    };
    Ok((host.to_string(), port))
}

/// The address a local server should listen on for clients of `host`, when `host` is this
/// machine.
fn local_bind_address(host: &str) -> Option<String> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some("127.0.0.1".into());
    }
    match host.parse::<IpAddr>().ok()? {
        IpAddr::V4(ip) if ip.is_loopback() || ip.is_unspecified() => Some(host.to_string()),
        // The server's URL is written `nats://<host>:<port>`, which an IPv6 address breaks.
        IpAddr::V6(ip) if ip.is_loopback() => Some("127.0.0.1".into()),
        _ => None,
    }
}

/// Whether something accepts TCP connections at `host:port`.
fn answers(host: &str, port: u16) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|addr| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
}

/// Whether the replicas should keep running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Keep running (and restart what exits).
    No,
    /// SIGTERM, then wait.
    Graceful,
    /// A second signal: kill what is still running.
    Force,
}

/// What to run.
struct Supervision {
    exe: PathBuf,
    url: String,
    config: Option<PathBuf>,
    replicas: Vec<(Service, u32)>,
    policy: RestartPolicy,
    /// Connection settings other than the URL (credentials), for alerts.
    nats: lexmesh_runtime::config::NatsConfig,
    /// `metrics.listen`: metrics replica n listens on its port + n − 1.
    metrics_listen: String,
    /// `service.cores` of each trainer replica, when several share the machine.
    trainer_cores: Option<usize>,
    /// Configuration every replica gets (`LEXMESH_*__*` variables): the services' user of a
    /// server started with `--auth`.
    common_env: Vec<(&'static str, String)>,
}

/// One replica: `lexmesh serve <service>` with instance `<service>-<n>`.
#[derive(Clone)]
struct Replica {
    service: Service,
    instance: String,
    exe: PathBuf,
    url: String,
    config: Option<PathBuf>,
    policy: RestartPolicy,
    /// Where alerts go (None when `up` could not connect).
    alerts: Option<async_nats::Client>,
    /// Where `up` notes how each replica's process ended (`lexmesh_instances`), for the job
    /// loop's judgement of lost attempts (None when `up` could not connect).
    exits: Option<async_nats::jetstream::kv::Store>,
    /// Configuration set for this replica alone (`LEXMESH_*__*` variables).
    env: Vec<(&'static str, String)>,
}

async fn supervise(plan: Supervision) -> anyhow::Result<ExitCode> {
    let (stop_tx, stop_rx) = watch::channel(Stop::No);
    let mut tasks = JoinSet::new();
    let alerts = {
        let mut nats = plan.nats.clone();
        nats.url = plan.url.clone();
        let config = lexmesh_runtime::Config {
            nats,
            ..Default::default()
        };
        match tokio::time::timeout(Duration::from_secs(10), client::connect(&config)).await {
            Ok(Ok(client)) => Some(client),
            Ok(Err(e)) => {
                eprintln!("warning: no alerts from `up`: {e:#}");
                None
            }
            Err(_) => {
                eprintln!("warning: no alerts from `up`: NATS did not answer");
                None
            }
        }
    };
    let exits = match &alerts {
        Some(client) => {
            let js = async_nats::jetstream::new(client.clone());
            match lexmesh_runtime::mesh::ensure_kv(
                &js,
                lexmesh_protocol::names::INSTANCES_BUCKET,
                1,
                plan.nats.replicas,
            )
            .await
            {
                Ok(store) => Some(store),
                Err(e) => {
                    eprintln!("warning: `up` cannot note how replicas end: {e:#}");
                    None
                }
            }
        }
        None => None,
    };
    let metrics_count = plan
        .replicas
        .iter()
        .find(|(s, _)| *s == Service::Metrics)
        .map_or(0, |(_, n)| *n);
    let metrics_addresses = free_listen_addresses(&plan.metrics_listen, metrics_count);
    for (n, address) in metrics_addresses.iter().enumerate() {
        let wanted = nth_listen_address(&plan.metrics_listen, n as u32);
        if *address != wanted {
            eprintln!(
                "metrics-{}: {wanted} is taken; listening on {address}",
                n + 1
            );
        }
        if has_port(address) {
            eprintln!(
                "metrics-{}: dashboard at http://{}/ (Prometheus metrics at /metrics)",
                n + 1,
                browsable(address)
            );
        } else {
            eprintln!(
                "metrics-{}: dashboard and Prometheus metrics on a free port of {address} (its \
                 log line `serving the dashboard on` names it)",
                n + 1
            );
        }
    }
    for (service, count) in &plan.replicas {
        for n in 1..=*count {
            let replica = Replica {
                service: *service,
                instance: format!("{}-{n}", service.name()),
                exe: plan.exe.clone(),
                url: plan.url.clone(),
                config: plan.config.clone(),
                policy: plan.policy,
                alerts: alerts.clone(),
                exits: exits.clone(),
                env: match service {
                    // Replicas on one machine cannot share the Prometheus port.
                    Service::Metrics => vec![(
                        "LEXMESH_METRICS__LISTEN",
                        metrics_addresses[n as usize - 1].clone(),
                    )],
                    // Trainers side by side share the machine's cores instead of each
                    // training on all of them.
                    Service::Trainer => plan
                        .trainer_cores
                        .map(|cores| ("LEXMESH_SERVICE__CORES", cores.to_string()))
                        .into_iter()
                        .collect(),
                    _ => Vec::new(),
                }
                .into_iter()
                .chain(plan.common_env.iter().cloned())
                .collect(),
            };
            tasks.spawn(run_replica(replica, stop_rx.clone()));
        }
    }
    eprintln!("mesh is up at {}; Ctrl-C stops it", redacted(&plan.url));
    let mut signals = Signals::new()?;
    let mut interrupted = false;
    loop {
        tokio::select! {
            name = signals.next() => {
                eprintln!("{name}: stopping the replicas (up to {}s each; again to kill them)", STOP_GRACE.as_secs());
                stop_tx.send_replace(Stop::Graceful);
                interrupted = true;
                break;
            }
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Err(e)) => eprintln!("error: a supervisor task failed: {e}"),
                Some(Ok(())) => {}
            },
        }
    }
    loop {
        tokio::select! {
            name = signals.next() => {
                eprintln!("{name}: killing the replicas");
                stop_tx.send_replace(Stop::Force);
            }
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Err(e)) => eprintln!("error: a supervisor task failed: {e}"),
                Some(Ok(())) => {}
            },
        }
    }
    if interrupted {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: every replica has stopped");
        Ok(ExitCode::FAILURE)
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, listened to for the whole run so none is missed between
/// two waits.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// Waits until `stop` leaves [`Stop::No`] (or reaches `level`), or its sender is gone.
async fn until(stop: &mut watch::Receiver<Stop>, level: Stop) {
    let reached = |s: &Stop| match level {
        Stop::Force => *s == Stop::Force,
        _ => *s != Stop::No,
    };
    // An error means the supervisor is gone: stop as well.
    let _ = stop.wait_for(reached).await;
}

/// Runs one replica until the mesh stops, restarting it when it exits.
async fn run_replica(replica: Replica, mut stop: watch::Receiver<Stop>) {
    let name = replica.instance.clone();
    let mut restarts = RestartTracker::new(replica.policy);
    loop {
        if *stop.borrow() != Stop::No {
            return;
        }
        let mut child = match spawn(&replica) {
            Ok(child) => child,
            Err(e) => {
                eprintln!("error: cannot start {name}: {e:#}");
                return;
            }
        };
        let pid = child.id();
        crate::render::print_line(&format!(
            "started {name} (pid {})",
            pid.map_or_else(|| "?".into(), |p| p.to_string())
        ));
        let started = Instant::now();
        let status = tokio::select! {
            status = child.wait() => status,
            () = until(&mut stop, Stop::Graceful) => {
                terminate(&mut child, pid, &name, &mut stop).await;
                return;
            }
        };
        if *stop.borrow() != Stop::No {
            return;
        }
        if let Ok(s) = &status
            && s.code() == Some(i32::from(lexmesh_mesh::Unusable::EXIT_CODE))
        {
            eprintln!(
                "{name} cannot run with its configuration (its error is above); not restarted"
            );
            return;
        }
        let cause = status.as_ref().ok().map(|s| ExitCause::of(*s));
        let status = status.map_or_else(|e| format!("wait failed: {e}"), |s| s.to_string());
        let ran = started.elapsed();
        eprintln!(
            "{name} exited unexpectedly ({status}) after {}",
            client::format_duration(ran)
        );
        if let (Some(store), Some(pid)) = (&replica.exits, pid) {
            let exit = InstanceExit {
                instance: name.clone(),
                pid,
                cause: match cause {
                    Some(ExitCause::Killed) => lexmesh_protocol::record::ExitCause::Killed,
                    Some(ExitCause::OnItsOwn) => lexmesh_protocol::record::ExitCause::Crashed,
                    None => lexmesh_protocol::record::ExitCause::Unknown,
                },
                status: status.clone(),
                ended_ms: lexmesh_protocol::time::now_ms(),
            };
            if let Err(e) = lexmesh_runtime::records::write_instance_exit(store, &exit).await {
                eprintln!("warning: cannot note how {name} ended: {e}");
            }
        }
        if cause == Some(ExitCause::Killed) {
            // Killed from outside (an operator, the health service, the kernel): no sign of a
            // crash loop, so no back-off and no count towards giving up.
            let delay = restarts.policy().first_delay;
            eprintln!(
                "restarting {name} in {:.1}s (it was killed)",
                delay.as_secs_f64()
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = until(&mut stop, Stop::Graceful) => return,
            }
            continue;
        }
        let Some(delay) = restarts.delay_before_restart(Instant::now()) else {
            let policy = restarts.policy();
            let message = format!(
                "{name} exited {} times within {}; giving up on it",
                policy.max_restarts + 1,
                client::format_duration(policy.window)
            );
            eprintln!("error: {message}");
            if let Some(alerts) = &replica.alerts {
                let alert = lexmesh_runtime::alerts::new_alert(
                    lexmesh_protocol::alert::AlertKind::CrashLoop,
                    AlertState::Raised,
                    (replica.service.name(), &name),
                    (
                        f64::from(policy.max_restarts + 1),
                        f64::from(policy.max_restarts),
                    ),
                    &message,
                    "up",
                );
                lexmesh_runtime::alerts::publish_alert(alerts, &alert).await;
            }
            return;
        };
        eprintln!("restarting {name} in {:.1}s", delay.as_secs_f64());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = until(&mut stop, Stop::Graceful) => return,
        }
    }
}

/// Why a replica's process ended, for the restart policy (and, noted in `lexmesh_instances`,
/// for the judgement of the jobs it was running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitCause {
    /// Ended by SIGKILL, SIGTERM or SIGINT, which come from outside the process.
    Killed,
    /// Exited, or died of its own fault (an abort, a segfault, a panic): what a crash loop is
    /// made of.
    OnItsOwn,
}

impl ExitCause {
    fn of(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        const SIGINT: i32 = 2;
        const SIGKILL: i32 = 9;
        const SIGTERM: i32 = 15;
        match status.signal() {
            Some(SIGKILL | SIGTERM | SIGINT) => Self::Killed,
            _ => Self::OnItsOwn,
        }
    }
}

/// Addresses for `count` metrics replicas: `address`'s port, the next and so on, skipping
/// ports something already listens on (another mesh on the same host), so that a second
/// `lexmesh up` does not leave its metrics replicas failing on a taken port.
fn free_listen_addresses(address: &str, count: u32) -> Vec<String> {
    if !has_port(address) {
        // Port 0 (any free port) or an address the replica will report itself.
        return (0..count).map(|n| nth_listen_address(address, n)).collect();
    }
    let mut chosen = Vec::new();
    let mut offset = 0;
    while chosen.len() < count as usize {
        let candidate = nth_listen_address(address, offset);
        offset += 1;
        if offset > 200 || std::net::TcpListener::bind(&candidate).is_ok() {
            chosen.push(candidate);
        }
    }
    chosen
}

fn has_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_some_and(|p| p != 0)
}

/// The address as a browser would reach it (`0.0.0.0` and `[::]` are every interface: this host).
fn browsable(address: &str) -> String {
    address
        .replacen("0.0.0.0:", "127.0.0.1:", 1)
        .replacen("[::]:", "[::1]:", 1)
}

/// `address` with its port moved up by `offset` (port 0, "any free port", stays 0).
fn nth_listen_address(address: &str, offset: u32) -> String {
    match address.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u32>() {
            Ok(0) => address.to_string(),
            Ok(p) => format!("{host}:{}", p + offset),
            Err(_) => address.to_string(),
        },
        None => address.to_string(),
    }
}

fn spawn(replica: &Replica) -> anyhow::Result<Child> {
    let mut command = tokio::process::Command::new(&replica.exe);
    command.arg("serve").arg(replica.service.name());
    if let Some(config) = &replica.config {
        command.arg("--config").arg(config);
    }
    command
        .env("LEXMESH_NATS__URL", &replica.url)
        .env("LEXMESH_SERVICE__INSTANCE", &replica.instance)
        // The replica shuts down should `up` die in any way (SIGKILL included).
        .env(
            lexmesh_runtime::service::SUPERVISOR_PID_ENV,
            std::process::id().to_string(),
        )
        .envs(replica.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        // Own process group: a Ctrl-C in the terminal reaches `up` only, which then stops the
        // replicas in order instead of all at once.
        .process_group(0)
        // Should `up` itself die, do not leave replicas behind.
        .kill_on_drop(true);
    command
        .spawn()
        .with_context(|| format!("running {} serve", replica.exe.display()))
}

/// SIGTERM, then up to [`STOP_GRACE`] (cut short by [`Stop::Force`]), then SIGKILL.
async fn terminate(
    child: &mut Child,
    pid: Option<u32>,
    name: &str,
    stop: &mut watch::Receiver<Stop>,
) {
    if let Some(pid) = pid {
        // `kill -TERM`: the workspace allows no `unsafe`, so no libc::kill.
        let sent = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if let Err(e) = sent {
            eprintln!("error: cannot send SIGTERM to {name}: {e}");
        }
    }
    let stopped = tokio::select! {
        waited = tokio::time::timeout(STOP_GRACE, child.wait()) => match waited {
            Ok(Ok(status)) => Some(status.to_string()),
            Ok(Err(e)) => Some(format!("wait failed: {e}")),
            Err(_) => None,
        },
        () = until(stop, Stop::Force) => None,
    };
    match stopped {
        Some(status) => eprintln!("{name} stopped ({status})"),
        None => {
            eprintln!("{name} did not stop; killing it");
            if let Err(e) = child.kill().await {
                eprintln!("error: cannot kill {name}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_signals_from_outside_count_as_killed() {
        use std::os::unix::process::ExitStatusExt;
        // Raw wait statuses: a signal number alone, or an exit code shifted by 8.
        let killed = |signal: i32| ExitCause::of(std::process::ExitStatus::from_raw(signal));
        assert_eq!(killed(9), ExitCause::Killed);
        assert_eq!(killed(15), ExitCause::Killed);
        assert_eq!(killed(2), ExitCause::Killed);
        assert_eq!(
            killed(6),
            ExitCause::OnItsOwn,
            "SIGABRT is the process's own"
        );
        assert_eq!(
            killed(11),
            ExitCause::OnItsOwn,
            "SIGSEGV is the process's own"
        );
        let exited = |code: i32| ExitCause::of(std::process::ExitStatus::from_raw(code << 8));
        assert_eq!(exited(1), ExitCause::OnItsOwn);
        assert_eq!(exited(0), ExitCause::OnItsOwn);
    }

    #[test]
    fn replicas_default_to_one_each() {
        assert_eq!(
            parse_replicas(&[]).unwrap(),
            vec![
                (Service::Preprocessor, 1),
                (Service::Trainer, 1),
                (Service::Evaluator, 1),
                (Service::Health, 1),
                (Service::Metrics, 1)
            ]
        );
        assert_eq!(
            parse_replicas(&specs(&["trainer=2", "evaluator=0,preprocessor = 3"])).unwrap(),
            vec![
                (Service::Preprocessor, 3),
                (Service::Trainer, 2),
                (Service::Evaluator, 0),
                (Service::Health, 1),
                (Service::Metrics, 1)
            ]
        );
    }

    #[test]
    fn trainer_replicas_share_the_cores() {
        let mut config = Config::default();
        config.service.cores = 8;
        let plan = |n| vec![(Service::Preprocessor, 1), (Service::Trainer, n)];
        assert_eq!(trainer_cores(&config, &plan(1)), None);
        assert_eq!(trainer_cores(&config, &plan(2)), Some(4));
        assert_eq!(trainer_cores(&config, &plan(3)), Some(2));
        assert_eq!(trainer_cores(&config, &plan(16)), Some(1));
        assert_eq!(trainer_cores(&config, &[(Service::Evaluator, 2)]), None);
    }

    #[test]
    fn metrics_replicas_skip_ports_another_mesh_holds() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let wanted = format!("127.0.0.1:{port}");
        let chosen = free_listen_addresses(&wanted, 2);
        assert_eq!(chosen.len(), 2);
        assert!(!chosen.contains(&wanted), "{chosen:?}");
        assert_ne!(chosen[0], chosen[1]);
        for address in &chosen {
            let p: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();
            assert!(p > port, "{chosen:?}");
        }
        assert_eq!(free_listen_addresses("127.0.0.1:0", 2), ["127.0.0.1:0"; 2]);
        assert_eq!(browsable("0.0.0.0:9464"), "127.0.0.1:9464");
    }

    #[test]
    fn metrics_replicas_get_ports_of_their_own() {
        assert_eq!(nth_listen_address("0.0.0.0:9464", 0), "0.0.0.0:9464");
        assert_eq!(nth_listen_address("0.0.0.0:9464", 2), "0.0.0.0:9466");
        assert_eq!(nth_listen_address("[::1]:9464", 1), "[::1]:9465");
        assert_eq!(nth_listen_address("127.0.0.1:0", 3), "127.0.0.1:0");
        assert_eq!(nth_listen_address("nonsense", 1), "nonsense");
    }

    #[test]
    fn bad_replicas_are_explained() {
        let err = |list: &[&str]| parse_replicas(&specs(list)).unwrap_err().to_string();
        assert!(err(&["trainer"]).contains("not SERVICE=N"));
        assert!(err(&["teacher=2"]).contains("unknown service `teacher`"));
        assert!(err(&["trainer=two"]).contains("whole number"));
        assert!(err(&["trainer=-1"]).contains("whole number"));
        assert!(err(&["trainer=17"]).contains("from 0 to 16"));
        assert!(err(&["trainer=1", "trainer=2"]).contains("twice"));
        assert!(
            err(&["trainer=0,evaluator=0,preprocessor=0,health=0,metrics=0"])
                .contains("nothing to start")
        );
    }

    #[test]
    fn server_addresses_are_read_from_urls() {
        let addr = |u: &str| server_address(u).unwrap();
        assert_eq!(addr("nats://127.0.0.1:4222"), ("127.0.0.1".into(), 4222));
        assert_eq!(addr("nats://localhost"), ("localhost".into(), 4222));
        assert_eq!(
            addr("tls://user:p@ss@host.example:7422/, nats://b:1"),
            ("host.example".into(), 7422)
        );
        assert_eq!(addr("127.0.0.1:14222"), ("127.0.0.1".into(), 14222));
        assert_eq!(addr("nats://[::1]:5222"), ("::1".into(), 5222));
        assert!(server_address("nats://:4222").is_err());
        assert!(server_address("nats://h:port").is_err());
    }

    #[test]
    fn only_this_machine_gets_a_local_server() {
        assert_eq!(
            local_bind_address("localhost").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            local_bind_address("127.0.0.1").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(local_bind_address("0.0.0.0").as_deref(), Some("0.0.0.0"));
        assert_eq!(local_bind_address("::1").as_deref(), Some("127.0.0.1"));
        assert_eq!(local_bind_address("10.0.0.5"), None);
        assert_eq!(local_bind_address("nats.example"), None);
    }
}
