//! TLS to the shared database: a test PostgreSQL serving a certificate made for the test (by
//! the `openssl` command, which Debian's `postgresql` package depends on), and collectors
//! connecting with libpq's `sslmode` and `sslrootcert`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use trackway_collector::Collector;
use trackway_testkit::postgres::TestPostgres;

use crate::support::{TestServer, config, send};

/// The password the URLs carry (the test server trusts every connection, so any will do): it
/// must never show in an error.
const PASSWORD: &str = "pw-never-shown-7731";

/// Certificates made in a temporary directory.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn text(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian's postgresql package depends on it)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two certificate authorities, `ca` and `other`, and a server certificate signed by `ca`
/// that names `localhost` only.
fn certificates() -> Certificates {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    for ca in ["ca", "other"] {
        openssl(
            path,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=trackway test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ],
        );
    }
    openssl(
        path,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        path.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        path,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    Certificates { dir }
}

fn server(certificates: &Certificates) -> TestPostgres {
    TestPostgres::with_tls(
        &certificates.text("server.crt"),
        &certificates.text("server.key"),
    )
    .unwrap()
}

/// The URL of `server`'s `postgres` database as `host`, with a password and `tls` parameters.
fn url(server: &TestPostgres, host: &str, tls: &str) -> String {
    format!(
        "postgres://postgres:{PASSWORD}@{host}:{}/postgres?{tls}",
        server.port()
    )
}

/// Why a collector on `url` refused to start.
fn refusal(url: &str) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    config.postgres = Some(url.to_owned());
    match Collector::open(&config) {
        Ok(_) => panic!("a collector started on {url}"),
        Err(e) => e.to_string(),
    }
}

/// The collector's sessions on `server`, as (encrypted, count).
fn sessions(server: &TestPostgres) -> String {
    server
        .psql(
            "SELECT string_agg(ssl::text, ',' ORDER BY ssl) FROM pg_stat_ssl
             JOIN pg_stat_activity USING (pid) WHERE application_name = 'trackway-collector'",
        )
        .unwrap()
}

#[test]
fn a_collector_with_verify_full_stores_its_events_over_tls() {
    let certificates = certificates();
    let server = server(&certificates);
    let root = certificates.path("ca.crt");
    let tls = format!("sslmode=verify-full&sslrootcert={}", root.display());
    let data = tempfile::tempdir().unwrap();
    let url = url(&server, "localhost", &tls);
    let collector = TestServer::start_configured(data.path(), |config| {
        config.postgres = Some(url);
    });
    send(
        &collector,
        vec![json!({"type": "track", "event": "E", "userId": "u", "messageId": "over-tls"})],
    );
    let events = collector.events("");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["messageId"], "over-tls");
    let sessions = sessions(&server);
    assert!(
        !sessions.is_empty() && sessions.split(',').all(|ssl| ssl == "true"),
        "a session without TLS: {sessions:?}"
    );
}

#[test]
fn verify_ca_skips_the_host_name_and_verify_full_does_not() {
    let certificates = certificates();
    let server = server(&certificates);
    let root = certificates.path("ca.crt");
    // The certificate names `localhost`, not the address.
    let message = refusal(&url(
        &server,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", root.display()),
    ));
    assert!(
        message.contains("TLS") && message.contains("does not name the host"),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
    let data = tempfile::tempdir().unwrap();
    let url = url(
        &server,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", root.display()),
    );
    let collector = TestServer::start_configured(data.path(), |config| {
        config.postgres = Some(url);
    });
    send(
        &collector,
        vec![json!({"type": "track", "event": "E", "userId": "u", "messageId": "m"})],
    );
    assert_eq!(collector.events("").len(), 1);
}

#[test]
fn a_root_that_did_not_sign_the_servers_certificate_stops_the_collector_naming_tls() {
    let certificates = certificates();
    let server = server(&certificates);
    let wrong = certificates.path("other.crt");
    for mode in ["verify-full", "verify-ca", "require"] {
        let message = refusal(&url(
            &server,
            "localhost",
            &format!("sslmode={mode}&sslrootcert={}", wrong.display()),
        ));
        assert!(
            message.contains("TLS") && message.contains("not signed by sslrootcert"),
            "{mode}: {message}"
        );
        assert!(!message.contains(PASSWORD), "{mode}: {message}");
    }
    // A root file that is not there is named too.
    let message = refusal(&url(
        &server,
        "localhost",
        "sslmode=verify-full&sslrootcert=/no/such/root.pem",
    ));
    assert!(message.contains("/no/such/root.pem"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
}

#[test]
fn require_encrypts_without_checking_and_disable_does_not_encrypt() {
    let certificates = certificates();
    let server = server(&certificates);
    for (tls, encrypted) in [("sslmode=require", "true"), ("sslmode=disable", "false")] {
        let data = tempfile::tempdir().unwrap();
        let url = url(&server, "127.0.0.1", tls);
        let collector = TestServer::start_configured(data.path(), |config| {
            config.postgres = Some(url);
        });
        send(
            &collector,
            vec![json!({"type": "track", "event": "E", "userId": "u", "messageId": tls})],
        );
        let sessions = sessions(&server);
        assert!(
            !sessions.is_empty() && sessions.split(',').all(|ssl| ssl == encrypted),
            "{tls}: {sessions:?}"
        );
        drop(collector);
        // The next collector's sessions alone.
        crate::support::eventually("the collector's sessions ended", || sessions_gone(&server));
    }
}

fn sessions_gone(server: &TestPostgres) -> bool {
    server
        .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'trackway-collector'")
        .unwrap()
        == "0"
}
