//! Slow and oversized clients are cut off; the server stays up.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{TestServer, WRITE_KEY, basic, post};

/// Writes `request` raw and returns everything the server answers before closing.
fn exchange(server: &TestServer, request: &[u8]) -> String {
    let address = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    // A safety net only: the server must close long before this.
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The server may refuse and close before reading everything: that is an answer too.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server kept a stalled connection open: {e}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn still_serves(server: &TestServer) {
    let body = br#"{"batch":[{"type":"track","userId":"u","event":"E"}]}"#;
    assert_eq!(
        post(
            &server.url,
            "/v1/batch",
            &[("authorization", &basic(WRITE_KEY))],
            body
        )
        .0,
        200
    );
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let server = TestServer::start();
    let answer = exchange(
        &server,
        b"POST /v1/batch HTTP/1.1\r\nhost: x\r\ncontent-type: app",
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    still_serves(&server);
}

#[test]
fn a_client_that_stalls_mid_body_is_disconnected() {
    let server = TestServer::start();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 1000\r\n\r\n{{\"batch\":[",
        basic(WRITE_KEY)
    );
    let answer = exchange(&server, head.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    still_serves(&server);
    assert!(
        server.events("").len() == 1,
        "the stalled request stored nothing"
    );
}

#[test]
fn huge_headers_are_refused() {
    let server = TestServer::start();
    let request = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let answer = exchange(&server, request.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    still_serves(&server);
}

#[test]
fn a_client_that_trickles_its_body_is_cut_off_at_the_body_timeout() {
    let server = TestServer::start();
    let address = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 1000\r\n\r\n",
        basic(WRITE_KEY)
    );
    stream.write_all(head.as_bytes()).unwrap();
    // One byte every 100 ms: never idle for the 300 ms idle limit, yet never done.
    let mut answer = Vec::new();
    for _ in 0..100 {
        if stream.write_all(b" ").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        stream.set_nonblocking(true).unwrap();
        let mut buffer = [0_u8; 512];
        if let Ok(n) = stream.read(&mut buffer) {
            answer.extend_from_slice(&buffer[..n]);
        }
        stream.set_nonblocking(false).unwrap();
        if !answer.is_empty() {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    still_serves(&server);
}

/// POSTs a small valid batch with `key`, giving up after 10 s; the status and `Retry-After`,
/// or `None` when no answer came in that time.
fn probe(server: &TestServer, key: &str) -> Option<(u16, Option<String>)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .proxy(None)
        .build()
        .into();
    let response = agent
        .post(format!("{}/v1/batch", server.url))
        .header("authorization", basic(key))
        .send(&br#"{"batch":[{"type":"track","userId":"u","event":"E"}]}"#[..])
        .ok()?;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Some((response.status().as_u16(), retry_after))
}

#[test]
fn when_slow_uploads_hold_every_ingest_slot_others_get_503_and_bad_keys_401() {
    let temp = tempfile::tempdir().unwrap();
    // Bodies may take their time: only the slot wait can turn a request away here.
    let server = TestServer::start_configured(temp.path(), |config| {
        config.body_timeout = Duration::from_secs(120);
    });
    let address = server.url.trim_start_matches("http://").to_owned();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 1000\r\n\r\n{{\"batch\":[",
        basic(WRITE_KEY)
    );
    let stalled: Vec<TcpStream> = (0..trackway_collector::MAX_CONCURRENT_INGEST)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();
    // Once the stalled uploads hold every slot, a request that cannot get one is told to
    // come back later instead of waiting for them.
    let mut answer = None;
    crate::support::eventually("a request is turned away", || {
        answer = probe(&server, WRITE_KEY);
        answer.as_ref().is_some_and(|(status, _)| *status == 503)
    });
    let (_, retry_after) = answer.unwrap();
    assert_eq!(
        retry_after.as_deref(),
        Some(trackway_collector::RETRY_AFTER_SECONDS.to_string().as_str())
    );
    // A wrong key does not wait for a slot at all.
    assert_eq!(probe(&server, "wrong-key").map(|(s, _)| s), Some(401));
    drop(stalled);
    crate::support::eventually("ingest recovers", || {
        probe(&server, WRITE_KEY).is_some_and(|(status, _)| status == 200)
    });
}
