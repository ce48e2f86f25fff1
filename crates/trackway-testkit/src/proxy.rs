//! [`CuttableProxy`]: a TCP proxy on a loopback port whose network the test can cut.
//!
//! ```text
//!  client ──▶ proxy (127.0.0.1:port) ──▶ upstream
//!              per connection: two pumps, one per direction
//!              cut():  every pump holds what it read and reads no more; new connections
//!                      are accepted but nothing crosses (a black hole: no reset, no FIN)
//!              heal(): the pumps pass on what they held and go on
//! ```
//!
//! A cut behaves like a network partition shorter than the hosts' TCP timeouts: the sockets
//! stay open, bytes sent are not answered, and once the network is back the connections carry
//! on where they stopped. (A client whose kernel gives up first, or that times out and closes
//! its connection, sees the close passed on to the upstream after the heal.) Unlike stopping
//! the upstream, nothing is refused: a client learns of the cut only from its own timeouts.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

/// Bytes a pump reads at a time.
const PUMP_BUFFER: usize = 16 * 1024;

/// A TCP proxy to one upstream address; stops (closing every connection) when dropped.
pub struct CuttableProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    cut: bool,
    stopped: bool,
    /// Both ends of every connection, to close them when the proxy stops.
    sockets: Vec<TcpStream>,
    connections: usize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while the network is cut; false once the proxy stopped.
    fn wait_connected(&self) -> bool {
        let mut state = self.state();
        while state.cut && !state.stopped {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        !state.stopped
    }
}

impl CuttableProxy {
    /// Starts a proxy on a free loopback port, passing connections on to `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<CuttableProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let accepting = Arc::clone(&shared);
        thread::Builder::new()
            .name("testkit-proxy".into())
            .spawn(move || accept_loop(&listener, upstream, &accepting))?;
        Ok(CuttableProxy { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cuts the network: nothing crosses in either direction until [`CuttableProxy::heal`],
    /// and no connection is closed.
    pub fn cut(&self) {
        self.shared.state().cut = true;
        self.shared.changed.notify_all();
    }

    /// Restores the network: what was held crosses, and the connections go on.
    pub fn heal(&self) {
        self.shared.state().cut = false;
        self.shared.changed.notify_all();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.state().connections
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        let sockets = {
            let mut state = self.shared.state();
            state.stopped = true;
            std::mem::take(&mut state.sockets)
        };
        self.shared.changed.notify_all();
        for socket in sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop, which then sees `stopped`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.state().stopped {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(upstream) else {
            // Refused upstream: so is the client.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let ends = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(client_in), Ok(server_out), Ok(client_kept), Ok(server_kept)) = ends else {
            continue;
        };
        {
            let mut state = shared.state();
            state.connections += 1;
            state.sockets.push(client_kept);
            state.sockets.push(server_kept);
        }
        for (from, to) in [(client_in, server_out), (server, client)] {
            let shared = Arc::clone(shared);
            let _ = thread::Builder::new()
                .name("testkit-pump".into())
                .spawn(move || pump(from, to, &shared));
        }
    }
}

/// Copies `from` to `to`, holding what it read while the network is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buffer = vec![0; PUMP_BUFFER];
    loop {
        if !shared.wait_connected() {
            return;
        }
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => {
                // The end closed: pass the close on once the network lets it through.
                if shared.wait_connected() {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
        };
        if !shared.wait_connected() || to.write_all(&buffer[..n]).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use std::time::Duration;

    /// An upstream that echoes every byte back.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        addr
    }

    #[test]
    fn a_cut_holds_the_bytes_without_closing_and_a_heal_delivers_them() {
        let proxy = CuttableProxy::start(echo()).unwrap();
        let mut client = TcpStream::connect(proxy.addr()).unwrap();
        client.write_all(b"one").unwrap();
        let mut answer = [0; 3];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"one");

        proxy.cut();
        client.write_all(b"two").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let held = client.read(&mut answer);
        assert!(
            matches!(&held, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut),
            "crossed a cut network, or closed: {held:?}"
        );
        // A new connection during the cut gets through to nothing either.
        let mut late = TcpStream::connect(proxy.addr()).unwrap();
        late.write_all(b"new").unwrap();
        late.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(late.read(&mut answer).is_err());

        proxy.heal();
        client.set_read_timeout(None).unwrap();
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"two");
        late.set_read_timeout(None).unwrap();
        late.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"new");
        assert_eq!(proxy.connections(), 2);
    }
}
