//! Test support for Trackway: [`FakeApi`], a scripted fake of the Tracking API that really
//! speaks HTTP/1.1 on a loopback port. The fake records every request (headers, raw and
//! decoded body) and answers each from a script: a status, a `Retry-After`, a hang, a
//! connection cut mid-response.
//!
//! It is deliberately written on `std::net` rather than a server framework: the faults it
//! injects (half a response, a silent socket) are exactly what a well-behaved framework will
//! not produce.
//!
//! Beside it: [`postgres::TestPostgres`], a throwaway PostgreSQL server, and
//! [`proxy::CuttableProxy`], a TCP proxy whose network a test can cut and restore.

#![forbid(unsafe_code)]

pub mod postgres;
pub mod proxy;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// Largest request head the fake reads.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How the fake answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `200 {"success":true}`.
    Ok,
    /// This status with a JSON error body.
    Status(u16),
    /// This status with a `Retry-After` header of the given value.
    RetryAfter(u16, String),
    /// Read the request, say nothing for this long, then close the connection.
    Hang(Duration),
    /// Send a status line and half a body, then close the connection.
    CloseMidResponse,
    /// Wait this long, then answer `200`: a slow but healthy receiver.
    Delay(Duration),
    /// This status with this body (JSON), such as a `200` listing rejected messages.
    Json(u16, String),
}

impl Reply {
    /// True if the fake acknowledged the request (a 2xx was fully sent).
    pub fn is_success(&self) -> bool {
        matches!(self, Reply::Ok | Reply::Delay(_))
            || matches!(self, Reply::Status(s) | Reply::Json(s, _) if (200..300).contains(s))
    }
}

/// One request the fake received, with what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body as sent (possibly compressed).
    pub raw_body: Vec<u8>,
    /// The body decompressed (if gzipped or zstd-compressed) and parsed as JSON, when that
    /// worked.
    pub json: Option<Value>,
    /// What the fake answered.
    pub reply: Reply,
    /// The client's address: requests on one kept-alive connection share it.
    pub peer: SocketAddr,
    /// When the whole request (head and body) had arrived, before any scripted pause: the
    /// gap between two requests is what a client waited between them (a `Retry-After`, a
    /// backoff, a request timeout).
    pub arrived: Instant,
    /// [`Received::arrived`] by the wall clock, to compare with a `Retry-After` given as an
    /// HTTP date.
    pub arrived_at: SystemTime,
}

impl Received {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The messages of a batch body (empty if the body is not a batch).
    pub fn messages(&self) -> Vec<Value> {
        match self.json.as_ref().and_then(|b| b.get("batch")) {
            Some(Value::Array(batch)) => batch.clone(),
            _ => Vec::new(),
        }
    }
}

type Rule = Box<dyn Fn(&Received) -> Option<Reply> + Send + Sync>;

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    rule: Mutex<Option<Rule>>,
    log: Mutex<Vec<Received>>,
    accept_encoding: Mutex<Option<String>>,
    arrived: Condvar,
    stopping: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake Tracking API. Stops when dropped.
pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<State>,
}

impl FakeApi {
    /// Starts on `127.0.0.1` on a free port.
    pub fn start() -> FakeApi {
        FakeApi::start_on(0)
    }

    /// Starts on `127.0.0.1:port` (0 for any free port).
    ///
    /// # Panics
    /// If the port cannot be bound: this is test support.
    pub fn start_on(port: u16) -> FakeApi {
        FakeApi::start_at(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// An address where nothing listens (connections are refused) until [`FakeApi::start_at`]
    /// starts there: for tests of a server that is down and comes back. Each call gives
    /// another loopback address (`127.1.x.y`), so no other fake, which binds `127.0.0.1`, and
    /// no other test's down server can take the port in the meantime.
    ///
    /// # Panics
    /// If no port can be bound: this is test support.
    pub fn unused_addr() -> SocketAddr {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 65_536;
        let ip = std::net::Ipv4Addr::new(127, 1, (n >> 8) as u8, (n & 0xff) as u8);
        TcpListener::bind((ip, 0))
            .and_then(|probe| probe.local_addr())
            .expect("a free port on a loopback address")
    }

    /// Starts on `addr`.
    ///
    /// # Panics
    /// If `addr` cannot be bound: this is test support.
    pub fn start_at(addr: SocketAddr) -> FakeApi {
        let listener = TcpListener::bind(addr).expect("bind the fake API");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&shared);
                thread::spawn(move || serve_connection(stream, &state));
            }
        });
        FakeApi { addr, state }
    }

    /// The base URL, such as `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers the next requests with `replies`, in order; after them the rule, then 200.
    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.state.script).extend(replies);
    }

    /// Answers requests the script does not cover with `rule`'s reply (200 when it returns
    /// `None`).
    pub fn set_rule(&self, rule: impl Fn(&Received) -> Option<Reply> + Send + Sync + 'static) {
        *lock(&self.state.rule) = Some(Box::new(rule));
    }

    /// Answers from now on with this `Accept-Encoding` header (RFC 7694: the request
    /// encodings the server takes), or without one.
    pub fn set_accept_encoding(&self, value: Option<&str>) {
        *lock(&self.state.accept_encoding) = value.map(str::to_owned);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.state.log).clone()
    }

    /// The time between each request's arrival and the next one's, in arrival order: what the
    /// client waited between attempts.
    pub fn gaps(&self) -> Vec<Duration> {
        gaps(&self.requests())
    }

    /// The messages of every request that was acknowledged, in order.
    pub fn accepted_messages(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.reply.is_success())
            .flat_map(Received::messages)
            .collect()
    }

    /// Waits until at least `n` requests arrived or `timeout` passed; true if they did.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut log = lock(&self.state.log);
        while log.len() < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            log = match self.state.arrived.wait_timeout(log, deadline - now) {
                Ok((log, _)) => log,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_connection(stream: TcpStream, state: &State) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let Some(mut received) = read_request(&mut reader, peer) else {
            return;
        };
        let reply = lock(&state.script).pop_front().unwrap_or_else(|| {
            lock(&state.rule)
                .as_ref()
                .and_then(|rule| rule(&received))
                .unwrap_or(Reply::Ok)
        });
        received.reply = reply.clone();
        let keep_open = match &reply {
            Reply::Hang(pause) => {
                record(state, received);
                thread::sleep(*pause);
                false
            }
            Reply::CloseMidResponse => {
                record(state, received);
                let _ = writer.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{\"succ",
                );
                false
            }
            Reply::Ok
            | Reply::Status(_)
            | Reply::RetryAfter(..)
            | Reply::Delay(_)
            | Reply::Json(..) => {
                if let Reply::Delay(pause) = &reply {
                    thread::sleep(*pause);
                }
                let (status, retry_after) = match &reply {
                    Reply::Status(status) | Reply::Json(status, _) => (*status, None),
                    Reply::RetryAfter(status, value) => (*status, Some(value.as_str())),
                    _ => (200, None),
                };
                let body = if let Reply::Json(_, body) = &reply {
                    body.clone()
                } else if (200..300).contains(&status) {
                    r#"{"success":true}"#.to_owned()
                } else {
                    format!(r#"{{"success":false,"error":"scripted {status}"}}"#)
                };
                let mut response = format!(
                    "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                    body.len()
                );
                if let Some(value) = retry_after {
                    response.push_str(&format!("retry-after: {value}\r\n"));
                }
                if let Some(value) = lock(&state.accept_encoding).as_deref() {
                    response.push_str(&format!("accept-encoding: {value}\r\n"));
                }
                response.push_str("\r\n");
                response.push_str(&body);
                // Record before answering, so a client that saw the answer finds it logged.
                record(state, received);
                writer.write_all(response.as_bytes()).is_ok()
            }
        };
        if !keep_open {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

fn record(state: &State, received: Received) {
    lock(&state.log).push(received);
    state.arrived.notify_all();
}

/// Reads one request; `None` at end of stream or on anything malformed.
fn read_request(reader: &mut BufReader<TcpStream>, peer: SocketAddr) -> Option<Received> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let before = head.len();
        reader.read_until(b'\n', &mut head).ok()?;
        if head.len() == before || head.len() > MAX_HEAD_BYTES {
            return None;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = request.parse(&head).ok()? else {
        return None;
    };
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let length: usize = find("content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut raw_body = vec![0; length];
    reader.read_exact(&mut raw_body).ok()?;
    let decoded = match find("content-encoding") {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(raw_body.as_slice())
                .read_to_end(&mut out)
                .ok()
                .map(|_| out)
        }
        Some("zstd") => zstd::stream::decode_all(raw_body.as_slice()).ok(),
        _ => Some(raw_body.clone()),
    };
    let json = decoded.and_then(|bytes| serde_json::from_slice(&bytes).ok());
    Some(Received {
        method: request.method.unwrap_or_default().to_owned(),
        path: request.path.unwrap_or_default().to_owned(),
        headers,
        raw_body,
        json,
        reply: Reply::Ok,
        peer,
        arrived: Instant::now(),
        arrived_at: SystemTime::now(),
    })
}

/// The time between each request's arrival and the next one's, in order: for requests of one
/// client, what it waited between them.
pub fn gaps(requests: &[Received]) -> Vec<Duration> {
    requests
        .windows(2)
        .map(|pair| pair[1].arrived.saturating_duration_since(pair[0].arrived))
        .collect()
}

/// The write key of a `Basic` authorization header, if it carries one.
pub fn basic_auth_write_key(header: &str) -> Option<String> {
    use base64::Engine;
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.strip_suffix(':').map(str::to_owned).or(Some(text))
}
