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
