//! The same thing has the same flag on every subcommand: `--write-key` and `--host`, with the
//! older spellings (`send`'s contract `--writeKey`, `--url`) kept as aliases.

use std::process::Command;

use trackway_testkit::{FakeApi, basic_auth_write_key};

fn trackway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trackway"));
    command
        .env_remove("RUST_LOG")
        .env_remove("TRACKWAY_WRITE_KEY")
        .env_remove("TRACKWAY_ADMIN_TOKEN")
        .env("NO_PROXY", "*");
    command
}

fn help(subcommand: &str) -> String {
    let output = trackway().args([subcommand, "--help"]).output().unwrap();
    assert!(output.status.success(), "{subcommand} --help");
    String::from_utf8(output.stdout).unwrap()
}

/// Whether `subcommand --help` lists `flag` as an option or an option's alias (not merely
/// names it in a description).
fn takes(subcommand: &str, flag: &str) -> bool {
    help(subcommand).lines().any(|line| {
        let line = line.trim_start();
        let aliases = line
            .rfind("[alias")
            .map_or("", |at| &line[at..])
            .trim_end_matches(']');
        line.starts_with(&format!("{flag} "))
            || aliases.split([' ', ',']).any(|alias| alias == flag)
    })
}

#[test]
fn every_subcommand_that_needs_them_takes_write_key_and_host() {
    for subcommand in ["send", "import", "bench", "serve"] {
        assert!(
            takes(subcommand, "--write-key"),
            "{subcommand}: {}",
            help(subcommand)
        );
    }
    for subcommand in ["send", "import", "bench", "tail", "replay"] {
        assert!(
            takes(subcommand, "--host"),
            "{subcommand}: {}",
            help(subcommand)
        );
    }
    assert!(takes("send", "--writeKey"), "the contract's flag");
    for subcommand in ["tail", "replay"] {
        assert!(takes(subcommand, "--url"), "{subcommand} keeps --url");
    }
}

#[test]
fn send_takes_write_key_as_well_as_the_contracts_write_key() {
    let api = FakeApi::start();
    for flag in ["--write-key", "--writeKey"] {
        let key = format!("key-given-as{flag}");
        let output = trackway()
            .args(["send", "--type", "track", "--userId", "u1", "--event", "E"])
            .args([flag, &key, "--host", &api.url()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let last = api.requests().pop().unwrap();
        let sent = basic_auth_write_key(last.header("authorization").unwrap());
        assert_eq!(sent.as_deref(), Some(key.as_str()));
    }
}

#[test]
fn tail_and_replay_name_the_collector_they_could_not_reach() {
    let down = FakeApi::unused_addr();
    for subcommand in ["tail", "replay"] {
        let output = trackway()
            .args([subcommand, "--host", &format!("http://{down}")])
            .args(["--admin-token", "flags-test-admin-token"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{subcommand}");
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(
            text.contains(&format!("cannot reach the collector at http://{down}"))
                && text.contains("trackway serve"),
            "{subcommand}: {text}"
        );
    }
}
