//! The README and the crate docs, as a new user reads them, agree with the program.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap()
}

/// The text from `heading` up to the next heading, which starts with `next`.
fn section<'a>(text: &'a str, heading: &str, next: &str) -> &'a str {
    let start = text.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    let rest = &text[start + heading.len()..];
    &rest[..rest.find(next).unwrap_or(rest.len())]
}

/// The first quickstart a reader copies points at the demo's collector with the demo's key,
/// before any mention of `Analytics::new` (which sends to Segment), and names `examples/`.
fn assert_quickstart_points_at_the_demo(name: &str, quickstart: &str) {
    let builder = quickstart
        .find(r#"Analytics::builder("demo-write-key")"#)
        .unwrap_or_else(|| panic!("{name}: no builder with the demo's key:\n{quickstart}"));
    let host = quickstart
        .find(r#".host("http://127.0.0.1:8080")"#)
        .unwrap_or_else(|| panic!("{name}: no host of the demo:\n{quickstart}"));
    let new = quickstart.find("Analytics::new").unwrap_or(usize::MAX);
    assert!(
        builder < new && host < new,
        "{name}: Segment comes first:\n{quickstart}"
    );
    assert!(
        quickstart.contains("Analytics::new"),
        "{name}: Segment is not shown"
    );
    assert!(
        quickstart.contains("examples/"),
        "{name}: examples/ not named"
    );
}

#[test]
fn the_quickstarts_point_at_the_demo_first_then_segment() {
    let readme = read("README.md");
    assert_quickstart_points_at_the_demo("README.md", section(&readme, "## Quickstart", "\n## "));
    let docs = read("crates/trackway/src/lib.rs");
    assert_quickstart_points_at_the_demo(
        "lib.rs",
        section(&docs, "//! # Quickstart", "\n//! # What"),
    );
    // The example the docs name exists and reads the key and host they give it.
    let example = read("crates/trackway/examples/quickstart.rs");
    assert!(
        example.contains("TRACKWAY_WRITE_KEY") && example.contains("TRACKWAY_HOST"),
        "{example}"
    );
    // The demo's key and host are the ones the quickstarts use.
    let serve = read("crates/trackway-cli/src/serve.rs");
    assert!(serve.contains(r#"const DEMO_WRITE_KEY: &str = "demo-write-key";"#));
    assert!(serve.contains(r#"default_value = "127.0.0.1:8080""#));
}

/// The subcommands `trackway --help` lists, without `help`.
fn subcommands() -> Vec<String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_trackway"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    let commands = help
        .split("Commands:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{help}"));
    commands
        .lines()
        .take_while(|l| l.starts_with("  "))
        // A long description wraps onto lines indented further (clap wraps at the terminal's
        // width when a build enables its `wrap_help`): those name no subcommand.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_layout_table_lists_every_subcommand() {
    let commands = subcommands();
    assert!(commands.len() >= 7, "{commands:?}");
    let readme = read("README.md");
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `crates/trackway-cli`"))
        .unwrap();
    for command in &commands {
        assert!(
            row.contains(&format!("`{command}`")),
            "the README's layout table misses `{command}`: {row}"
        );
    }
}

#[test]
fn the_readmes_send_command_works_against_the_demo_as_written() {
    let readme = read("README.md");
    let block = section(&readme, "## From a shell", "\n## ");
    let start = block.find("```sh\n").unwrap() + "```sh\n".len();
    let command = block[start..][..block[start..].find("```").unwrap()].replace("\\\n", " ");
    let command = command.trim();
    let rest = command
        .strip_prefix("cargo run -p trackway-cli -- ")
        .unwrap_or_else(|| panic!("{command}"));
    assert!(rest.contains("--host=http://127.0.0.1:8080"), "{rest}");

    let temp = tempfile::tempdir().unwrap();
    let (_demo, lines) = crate::demo::demo(&temp.path().join("data"), false, temp.path());
    let debugger = crate::demo::field(&lines, "debugger:");
    let (base, _) = debugger.split_once("/#").unwrap();
    // The same command, run by this build, at the port this demo got instead of 8080.
    let line = format!(
        "'{}' {}",
        env!("CARGO_BIN_EXE_trackway"),
        rest.replace("http://127.0.0.1:8080", base)
    );
    let output = crate::demo::shell(&line, false).output().unwrap();
    assert!(
        output.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
