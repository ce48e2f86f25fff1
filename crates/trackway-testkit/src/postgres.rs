//! [`TestPostgres`]: a throwaway PostgreSQL server of the tests' own, on a loopback port.
//!
//! ```text
//!  new() ─▶ initdb (as `postgres` when run as root) ─▶ pg_ctl start -w ─▶ url()
//!                  into a temporary directory            on 127.0.0.1:<free port>
//!  stop() / start(): the same cluster down and up again (outage tests), on the same port
//!                    (a start retried while another socket briefly holds it)
//!  drop: pg_ctl stop -m immediate, the directory removed, even when a test panics
//! ```
//!
//! Debian's `postgresql` package keeps `initdb` and `pg_ctl` under
//! `/usr/lib/postgresql/<version>/bin`, not on PATH; the newest version found there is used,
//! else PATH (`TRACKWAY_PG_BIN` names another directory). `initdb` refuses to run as root, so
//! as root every server command runs as the `postgres` user (through `runuser`) and the data
//! directory is handed to that user. The server listens on 127.0.0.1 only, with `trust`
//! authentication: nothing but this machine can reach it, and it lives as long as the test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian puts each installed version's server binaries.
const DEBIAN_LIB: &str = "/usr/lib/postgresql";

/// The user Debian's package runs the server as (it owns nothing else we touch).
const SERVER_USER: &str = "postgres";

/// How long `pg_ctl` waits for the server to start or stop: a cold start on a busy 2-core
/// machine takes a few seconds.
const PG_CTL_WAIT_SECONDS: &str = "60";

/// How many times a start is tried on a fresh port when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// How many times a restart ([`TestPostgres::start`] after [`TestPostgres::stop`]) is tried on
/// the server's port: during the outage another socket may have been given that port for a
/// moment (a client's outgoing connection, say).
const RESTART_ATTEMPTS: usize = 5;

/// The pause between two restart attempts.
const RESTART_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// A PostgreSQL server for one test (or one test binary); stopped and deleted when dropped.
pub struct TestPostgres {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    running: bool,
    /// Serves TLS with `server.crt` and `server.key` in `root` ([`TestPostgres::with_tls`]).
    tls: bool,
}

/// Why a test server could not be made.
#[derive(Debug)]
pub struct PostgresUnavailable(pub String);

impl std::fmt::Display for PostgresUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot run a test PostgreSQL ({}); install Debian's `postgresql` package (scripts/test does)",
            self.0
        )
    }
}

impl std::error::Error for PostgresUnavailable {}

impl TestPostgres {
    /// Creates a cluster in a temporary directory and starts it on a free loopback port.
    pub fn new() -> Result<TestPostgres, PostgresUnavailable> {
        TestPostgres::create(None)
    }

    /// Like [`TestPostgres::new`], serving TLS (`ssl = on`) with this certificate (chain) and
    /// private key, both PEM. Clients may still connect without TLS.
    pub fn with_tls(
        certificate_pem: &str,
        key_pem: &str,
    ) -> Result<TestPostgres, PostgresUnavailable> {
        TestPostgres::create(Some((certificate_pem, key_pem)))
    }

    fn create(tls: Option<(&str, &str)>) -> Result<TestPostgres, PostgresUnavailable> {
        let bin = bin_dir().ok_or_else(|| PostgresUnavailable("no initdb found".into()))?;
        let root =
            std::env::temp_dir().join(format!("trackway-pg-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&root).map_err(|e| PostgresUnavailable(e.to_string()))?;
        let mut server = TestPostgres {
            bin,
            root,
            port: 0,
            running: false,
            tls: tls.is_some(),
        };
        if is_root() {
            // The server's user must own its directory; the temporary directory's parent is
            // world-traversable.
            server.checked(Command::new("chown").arg(SERVER_USER).arg(&server.root))?;
        }
        if let Some((certificate, key)) = tls {
            server.write_tls_files(certificate, key)?;
        }
        let data = server.data_dir();
        server.checked(server.command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port()?;
            match server.start_once() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| PostgresUnavailable("no port".into())))
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`: the superuser, no password.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `name` on this server (see [`TestPostgres::create_database`]).
    pub fn url_for(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates an empty database `name`, so tests sharing one server stay apart.
    pub fn create_database(&self, name: &str) -> Result<String, PostgresUnavailable> {
        self.psql(&format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url_for(name))
    }

    /// Runs one SQL command with `psql` as the superuser; returns its unaligned output.
    pub fn psql(&self, sql: &str) -> Result<String, PostgresUnavailable> {
        let output = self.checked(
            self.command("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
                .arg("-p")
                .arg(self.port.to_string()),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Stops the server at once, as a crash would (an outage), keeping its data.
    pub fn stop(&mut self) -> Result<(), PostgresUnavailable> {
        if self.running {
            self.running = false;
            self.pg_ctl(&["stop", "-m", "immediate"])?;
        }
        Ok(())
    }

    /// Starts the server again (on the same port) after [`TestPostgres::stop`]; tries a few
    /// times, and says so when another socket holds the port.
    pub fn start(&mut self) -> Result<(), PostgresUnavailable> {
        let mut attempt = 1;
        loop {
            match self.start_once() {
                Ok(()) => return Ok(()),
                Err(_) if attempt < RESTART_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(RESTART_PAUSE);
                }
                Err(e) if port_taken(self.port) => {
                    return Err(PostgresUnavailable(format!(
                        "port {} was taken by another socket while the server was stopped: {}",
                        self.port, e.0
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts the server on its port, once.
    fn start_once(&mut self) -> Result<(), PostgresUnavailable> {
        if self.running {
            return Ok(());
        }
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200 -c fsync=on",
            self.port,
            self.root.display()
        );
        if self.tls {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                self.root.join("server.crt").display(),
                self.root.join("server.key").display()
            ));
        }
        let log = self.root.join("server.log");
        let log = log.to_string_lossy().into_owned();
        self.pg_ctl(&["start", "-l", &log, "-o", &options])?;
        self.running = true;
        Ok(())
    }

    /// Writes the server's certificate and key where it reads them; the key readable by the
    /// server's user alone, as PostgreSQL requires.
    fn write_tls_files(&self, certificate: &str, key: &str) -> Result<(), PostgresUnavailable> {
        use std::os::unix::fs::PermissionsExt;
        let failed = |e: std::io::Error| PostgresUnavailable(format!("tls files: {e}"));
        for (name, text, mode) in [
            ("server.crt", certificate, 0o644),
            ("server.key", key, 0o600),
        ] {
            let path = self.root.join(name);
            std::fs::write(&path, text).map_err(failed)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(failed)?;
            if is_root() {
                self.checked(Command::new("chown").arg(SERVER_USER).arg(&path))?;
            }
        }
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), PostgresUnavailable> {
        let data = self.data_dir();
        self.checked(
            self.command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", PG_CTL_WAIT_SECONDS])
                .args(args),
        )
        .map(|_| ())
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `program` from the server's bin directory, run as the server's user when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVER_USER, "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn checked(&self, command: &mut Command) -> Result<Output, PostgresUnavailable> {
        let output = command
            .output()
            .map_err(|e| PostgresUnavailable(format!("{command:?}: {e}")))?;
        if output.status.success() {
            Ok(output)
        } else {
            let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            Err(PostgresUnavailable(format!(
                "{command:?} failed: {}{}\n{log}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Immediate: the data is thrown away next, so there is nothing to write out.
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The newest version's bin directory under [`DEBIAN_LIB`], or `TRACKWAY_PG_BIN`, or the
/// directory on PATH holding `initdb`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TRACKWAY_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_LIB)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find(|dir| Path::new(dir).join("initdb").is_file())
    })
}

fn is_root() -> bool {
    // `id -u` keeps this crate free of libc; it runs once per command at most.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A port nobody listens on right now (the server binds it a moment later; a clash is retried).
fn free_port() -> Result<u16, PostgresUnavailable> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| PostgresUnavailable(e.to_string()))
}

/// Whether something else listens on (or holds) loopback `port` now.
fn port_taken(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_err()
}

/// A number no other server of this process has had.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A server shared by the tests running at the same time, each in a database of its own
/// ([`TestPostgres::create_database`]): one `initdb` for many tests. It stops when the last
/// test holding it is done (statics are never dropped, so a server held in one would outlive
/// the test binary); the next test starts a new one.
pub fn shared() -> Result<std::sync::Arc<TestPostgres>, PostgresUnavailable> {
    use std::sync::{Arc, Mutex, Weak};
    static SHARED: Mutex<Weak<TestPostgres>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(server) = shared.upgrade() {
        return Ok(server);
    }
    let server = Arc::new(TestPostgres::new()?);
    *shared = Arc::downgrade(&server);
    Ok(server)
}

/// A database name no other test of this process has had.
pub fn database_name(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), unique())
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

impl TestPostgres {
    /// CPU seconds the server has used so far: the postmaster and its live processes, plus
    /// the processes that have ended (their times are added to the postmaster's). Linux only;
    /// 0 elsewhere. For benchmarks: the database's CPU per event.
    pub fn cpu_seconds(&self) -> f64 {
        let pid_file = std::fs::read_to_string(self.data_dir().join("postmaster.pid"));
        let Some(postmaster) = pid_file
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
        else {
            return 0.0;
        };
        let mut ticks = 0u64;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // After the command's closing parenthesis: state, ppid, ... utime (14), stime
            // (15), cutime (16), cstime (17), counting fields from 1.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
            let pid: Option<u32> = entry.file_name().to_str().and_then(|p| p.parse().ok());
            let ppid = field(4).map(|p| p as u32);
            if pid == Some(postmaster) {
                ticks += [14, 15, 16, 17]
                    .iter()
                    .filter_map(|&n| field(n))
                    .sum::<u64>();
            } else if ppid == Some(postmaster) {
                ticks += [14, 15].iter().filter_map(|&n| field(n)).sum::<u64>();
            }
        }
        ticks as f64 / TICKS_PER_SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_on_a_port_another_socket_took_says_so() {
        let mut server = TestPostgres::new().unwrap();
        server.stop().unwrap();
        let squatter = TcpListener::bind(("127.0.0.1", server.port())).unwrap();
        let error = server.start().unwrap_err();
        assert!(
            error
                .0
                .contains(&format!("port {} was taken", server.port())),
            "{}",
            error.0
        );
        drop(squatter);
        server.start().unwrap();
        server.psql("SELECT 1").unwrap();
    }
}
