//! `trackway serve` (the collector) and `trackway demo` (the collector plus sample traffic).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use trackway::{Analytics, Message};
use trackway_collector::delivery::kind::{DestinationConfig, Kind};
use trackway_collector::storage::StoreLocation;
use trackway_collector::{Cidr, Collector, Config, Source, generate_admin_token};

use trackway_samples as samples;

use crate::Failure;

/// Name of the source made from `--write-key` flags.
const FLAG_SOURCE: &str = "default";

/// Flags of `trackway serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the embedded event store (created if missing).
    #[arg(long, default_value = "./trackway-data")]
    data_dir: PathBuf,
    /// Where events live: sqlite://DIR (the embedded store, as --data-dir) or
    /// postgres://user:password@host/database, shared by a group of collectors.
    #[arg(long, env = "TRACKWAY_STORE", hide_env_values = true)]
    store: Option<String>,
    /// A write key to accept (source "default"); repeat for several. From
    /// `TRACKWAY_WRITE_KEY` when not given, so no key needs to appear in the command line
    /// (several keys: a --config file).
    #[arg(long = "write-key", env = "TRACKWAY_WRITE_KEY", hide_env_values = true)]
    write_keys: Vec<String>,
    /// A TOML file of sources: [[source]] name = "web", write_keys = ["..."].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Token of the admin API and debugger; generated and printed when absent.
    #[arg(long, env = "TRACKWAY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Deliver the --write-key source's events to this webhook (destination "Webhook").
    #[arg(long, requires = "write_keys")]
    webhook: Option<String>,
    /// Archive the --write-key source's events as JSON lines here (destination "File").
    #[arg(long, requires = "write_keys")]
    file_dir: Option<PathBuf>,
    /// Relay the --write-key source's events to this Tracking API host (destination
    /// "Forward"); needs --forward-write-key.
    #[arg(long, requires_all = ["write_keys", "forward_write_key"])]
    forward: Option<String>,
    /// The upstream's write key for --forward.
    #[arg(long, env = "TRACKWAY_FORWARD_WRITE_KEY", hide_env_values = true)]
    forward_write_key: Option<String>,
    /// Delete events older than this many days once every destination has them.
    #[arg(long)]
    retention_days: Option<u64>,
    /// The URL browsers reach this collector at, handed to analytics.js by the settings
    /// endpoint (https://collect.example.com); defaults to http://<listen address>, and is
    /// required when listening on all interfaces.
    #[arg(long)]
    public_url: Option<String>,
    /// A proxy (CIDR, or one address) whose X-Forwarded-For gives the client's address;
    /// repeat for several. Without one, the header is ignored.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<Cidr>,
    /// An origin whose pages may send as the --write-key source (https://shop.example);
    /// repeat for several. Without one, any origin may.
    #[arg(long = "allowed-origin", requires = "write_keys")]
    allowed_origins: Vec<String>,
    /// Do not add the sender's address as context.ip to the --write-key source's events.
    #[arg(long, requires = "write_keys")]
    no_collect_ip: bool,
}

/// The URL the settings endpoint hands browsers: `--public-url`, else the listen address.
/// An address on all interfaces (0.0.0.0, ::) is no address a browser can reach, so then
/// the operator must say; a port of 0 is only known once bound, so then each settings
/// request's Host is used.
fn public_url(args: &ServeArgs) -> Result<Option<String>, Failure> {
    if let Some(url) = &args.public_url {
        return Ok(Some(url.clone()));
    }
    if args.listen.ip().is_unspecified() {
        return Err(Failure::Usage(format!(
            "--public-url is required when listening on all interfaces ({}): \
             give the URL browsers reach this collector at, like https://collect.example.com",
            args.listen
        )));
    }
    if !args.trusted_proxies.is_empty() {
        // Behind a proxy the listen address (often 127.0.0.1) is not what browsers reach:
        // settings naming it would send every page's events to the visitor's own machine.
        return Err(Failure::Usage(
            "--public-url is required behind a proxy (--trusted-proxy): give the URL \
             browsers reach this collector at, like https://collect.example.com"
                .into(),
        ));
    }
    Ok((args.listen.port() != 0).then(|| format!("http://{}", args.listen)))
}

impl ServeArgs {
    /// The destinations given as flags, for the flag source.
    fn flag_destinations(&self) -> Vec<DestinationConfig> {
        let destination = |name: &str, kind| DestinationConfig {
            name: name.into(),
            kind,
            retry_window: None,
            backoff_base: None,
            backoff_cap: None,
            concurrency: None,
        };
        let mut all = Vec::new();
        if let Some(url) = &self.webhook {
            let kind = Kind::Webhook {
                url: url.clone(),
                headers: Default::default(),
                secret: None,
                batch_size: 1,
                timeout: None,
            };
            all.push(destination("Webhook", kind));
        }
        if let Some(dir) = &self.file_dir {
            all.push(destination(
                "File",
                Kind::File {
                    dir: dir.clone(),
                    max_bytes: 100 * 1024 * 1024,
                },
            ));
        }
        if let (Some(host), Some(write_key)) = (&self.forward, &self.forward_write_key) {
            all.push(destination(
                "Forward",
                Kind::Forward {
                    host: host.clone(),
                    write_key: write_key.clone(),
                },
            ));
        }
        all
    }
}

/// Flags of `trackway demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the embedded event store.
    #[arg(long, default_value = "./trackway-data")]
    data_dir: PathBuf,
    /// Sample events sent per second after the first burst (0: only the burst).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
}

/// The demo's write key: it is a local demo, not a secret.
const DEMO_WRITE_KEY: &str = "demo-write-key";

pub(crate) fn serve(args: ServeArgs) -> Result<(), Failure> {
    let mut sources = match &args.config {
        Some(path) => Config::sources_from_file(path).map_err(|e| Failure::Usage(e.to_string()))?,
        None => Vec::new(),
    };
    if !args.write_keys.is_empty() {
        let mut source = Source::new(FLAG_SOURCE, args.write_keys.clone());
        source.destinations = args.flag_destinations();
        if !args.allowed_origins.is_empty() {
            source.allowed_origins = Some(args.allowed_origins.clone());
        }
        source.collect_ip = !args.no_collect_ip;
        sources.push(source);
    }
    let store = match (&args.store, &args.config) {
        (Some(text), _) => Some(
            text.parse::<StoreLocation>()
                .map_err(|e| Failure::Usage(e.to_string()))?,
        ),
        (None, Some(path)) => {
            Config::store_from_file(path).map_err(|e| Failure::Usage(e.to_string()))?
        }
        (None, None) => None,
    };
    // An operator who chose the token knows it; printing it would copy a secret into
    // whatever keeps the collector's output (a journal, a CI log).
    let token_shown = args.admin_token.is_none();
    let public_url = public_url(&args)?;
    let mut config = config(args.data_dir, sources, args.admin_token)?;
    config.public_url = public_url;
    config.trusted_proxies = args.trusted_proxies;
    if let Some(store) = store {
        config.set_store(store);
    }
    config.retention = args
        .retention_days
        .map(|days| Duration::from_secs(days * 24 * 60 * 60));
    run(async move {
        let (collector, listener) = open(&config, args.listen).await?;
        let stop = stop_signal();
        announce(
            listener.local_addr().unwrap_or(args.listen),
            &config,
            token_shown,
        );
        collector
            .serve(listener, stop)
            .await
            .map_err(|e| Failure::Failed(e.to_string()))
    })
}

pub(crate) fn demo(args: DemoArgs) -> Result<(), Failure> {
    let sources = vec![Source::new("demo", vec![DEMO_WRITE_KEY.into()])];
    let config = config(args.data_dir, sources, None)?;
    run(async move {
        let (collector, listener) = open(&config, args.listen).await?;
        let addr = listener.local_addr().unwrap_or(args.listen);
        let stop = stop_signal();
        announce_demo(addr, &config);
        let analytics = Analytics::builder(DEMO_WRITE_KEY)
            .host(format!("http://{addr}"))
            .no_proxy()
            .build()
            .map_err(|e| Failure::Failed(e.to_string()))?;
        let rate = args.rate;
        let traffic = std::thread::spawn(move || send_samples(&analytics, rate));
        let result = collector.serve(listener, stop).await;
        drop(traffic);
        result.map_err(|e| Failure::Failed(e.to_string()))
    })
}

/// Sends every sample once, then one every `1/rate` seconds, until the process ends.
fn send_samples(analytics: &Analytics, rate: f64) {
    let mut rng = fastrand::Rng::new();
    let templates: Vec<&str> = samples::templates().collect();
    let mut send = |template: &str| {
        let Ok(value) = samples::fill(template, &mut rng) else {
            return;
        };
        if let Ok(message) = Message::from_json(value)
            && let Err(e) = analytics.enqueue(message)
        {
            report(&format!("demo: sample refused: {e}"));
        }
    };
    templates.iter().for_each(|t| send(t));
    let report_burst = analytics.flush(Duration::from_secs(10));
    report(&format!(
        "demo: sent {} sample events: {report_burst}",
        templates.len()
    ));
    if rate <= 0.0 {
        return;
    }
    let pause = Duration::from_secs_f64(1.0 / rate);
    let mut next = 0;
    loop {
        std::thread::sleep(pause);
        send(templates[next % templates.len()]);
        next += 1;
    }
}

fn config(
    data_dir: PathBuf,
    sources: Vec<Source>,
    admin_token: Option<String>,
) -> Result<Config, Failure> {
    let admin_token = match admin_token {
        Some(token) => token,
        None => generate_admin_token().map_err(|e| Failure::Failed(e.to_string()))?,
    };
    Ok(Config::new(data_dir, sources, admin_token))
}

/// Binds `listen`, then opens the store. In that order, so that a port someone else holds
/// (a second demo, another server on 8080) leaves no empty data directory behind.
async fn open(
    config: &Config,
    listen: SocketAddr,
) -> Result<(Collector, tokio::net::TcpListener), Failure> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| cannot_listen(listen, &e))?;
    let collector = Collector::open(config).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok((collector, listener))
}

/// Says why `listen` could not be bound and, when the port is taken, how to pick another.
fn cannot_listen(listen: SocketAddr, error: &std::io::Error) -> Failure {
    let mut text = format!("cannot listen on {listen}: {error}");
    if error.kind() == std::io::ErrorKind::AddrInUse {
        let (mut next, mut any) = (listen, listen);
        next.set_port(listen.port().wrapping_add(1).max(1));
        any.set_port(0);
        text.push_str(&format!(
            "; another program holds port {}: choose another port with --listen \
             (such as --listen {next}, or --listen {any} for any free one)",
            listen.port(),
        ));
    }
    Failure::Failed(text)
}

/// Tells the operator where to look. The admin token is printed only when `token_shown` (the
/// collector generated it, so nobody else knows it); a token the operator supplied stays out
/// of the output. A closed stdout must not take the server down, so write errors are ignored
/// (`println!` would panic).
fn announce(addr: SocketAddr, config: &Config, token_shown: bool) {
    use std::io::Write;
    let sources: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
    let debugger = if token_shown {
        format!("http://{addr}/#token={}", config.admin_token)
    } else {
        format!("http://{addr}/#token=<your admin token>")
    };
    let text = format!(
        "trackway collector listening on http://{addr}\n  store:    {}\n  sources:  {}\n  debugger: {debugger}\n",
        store_shown(config),
        sources.join(", "),
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// The store as the operator may see it: a database URL with its password masked.
fn store_shown(config: &Config) -> String {
    match &config.postgres {
        Some(url) => StoreLocation::Postgres(url.clone()).to_string(),
        None => config.data_dir.display().to_string(),
    }
}

/// Tells a new user everything needed to try the demo, ready to paste: its write key, a
/// `send` and a `tail` command for this address, and the debugger's URL. The key is the demo's
/// fixed local key and the token was generated by this run (the demo never takes one), so
/// neither is anyone's secret: printing them in full is the point.
fn announce_demo(addr: SocketAddr, config: &Config) {
    use std::io::Write;
    // Listening on all interfaces (0.0.0.0, ::) is not an address to send to: the commands
    // use this machine's loopback, which reaches the same socket.
    let mut reachable = addr;
    if addr.ip().is_unspecified() {
        reachable.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let host = format!("http://{reachable}");
    let trackway = invocation();
    let text = format!(
        "trackway demo: collector listening on {host}\n  \
         store:     {store}\n  \
         write key: {DEMO_WRITE_KEY}\n  \
         debugger:  {host}/#token={token}\n\
         send an event (from another terminal; ctrl-c here stops the demo):\n  \
         {trackway} send --host {host} --write-key {DEMO_WRITE_KEY} --type track --userId u1 --event 'Signed Up'\n\
         follow events:\n  \
         {trackway} tail --host {host} --admin-token {token}\n",
        store = config.data_dir.display(),
        token = config.admin_token,
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// How the user runs this same program from where they are: `trackway` when that name on
/// `PATH` is this binary (installed), `cargo run -p trackway-cli --` when it is a build of
/// the checkout they are in (with `--release` for a release build), else its full path.
fn invocation() -> String {
    let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "trackway".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::canonicalize(dir.join(exe.file_name().unwrap_or_default()))
                .is_ok_and(|found| found == exe)
        })
    });
    if on_path {
        return "trackway".into();
    }
    let profile = exe
        .parent()
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str());
    let in_checkout = std::env::current_dir().is_ok_and(|dir| {
        dir.ancestors()
            .any(|d| d.join("crates/trackway-cli/Cargo.toml").is_file())
    });
    match (in_checkout, profile) {
        (true, Some("release")) => "cargo run --release -p trackway-cli --".into(),
        (true, Some("debug")) => "cargo run -p trackway-cli --".into(),
        _ => format!("'{}'", exe.display()),
    }
}

#[expect(clippy::print_stderr, reason = "the demo reports its traffic")]
fn report(line: &str) {
    eprintln!("{line}");
}

/// Longest wait at exit for work stuck outside the runtime's control (a destination's
/// request in flight): its event is delivered again after the restart, as at-least-once allows.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Runs `work` on a multi-threaded runtime, and bounds the wait for stragglers at exit.
fn run(work: impl std::future::Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    #[cfg(not(feature = "ordered-keys"))]
    tracing::warn!(
        "this trackway is built without the `ordered-keys` feature: the collector stores \
         events with their keys sorted, not in the order their library sent them"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("trackway-collector")
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(work);
    runtime.shutdown_timeout(EXIT_GRACE);
    result
}

/// Resolves on ctrl-c or SIGTERM. The handlers are installed by this call, not when the
/// future is first polled: called before the URL is announced, it makes a SIGTERM sent by
/// whoever read the URL (a supervisor, a test) a clean stop rather than a death by signal.
/// Needs the runtime.
fn stop_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        // A signal that cannot be listened for never stops the collector.
        let received = |signal: std::io::Result<Signal>| async move {
            match signal {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        async move {
            tokio::select! {
                () = received(interrupt) => {}
                () = received(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
