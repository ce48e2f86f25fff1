//! Integration tests of the `trackway` binary against a scripted fake of the Tracking API.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly at the first surprise"
)]

mod bench;
mod demo;
mod flags;
mod group;
mod import;
mod logging;
mod readme;
mod replay;
mod secrets;
mod send;
mod serve;
mod spool;
mod stdout;

/// A child process (a collector, a `tail`), killed and reaped when dropped: a test that fails
/// part-way leaves nothing running to keep retrying, burn CPU or hold the test log's pipe
/// open. Derefs to the [`Child`](std::process::Child).
pub(crate) struct Running(pub(crate) std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = std::process::Child;

    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

/// The lines `output` prints, through a channel, so that a process that prints nothing fails
/// its test at a `recv_timeout` rather than hanging it on a read.
pub(crate) fn lines_of(
    output: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<std::io::Result<String>> {
    let (lines, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(output)) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    printed
}

/// `trackway serve` on a free loopback port, with `admin_token` and its store in `data_dir`;
/// the caller adds the sources, the environment and where the output goes. The collector
/// prints its URL as the first line of its stdout.
pub(crate) fn serve_command(
    admin_token: &str,
    data_dir: impl AsRef<std::ffi::OsStr>,
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_trackway"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            admin_token,
        ])
        .arg("--data-dir")
        .arg(data_dir);
    command
}
