//! Records the resolved versions of the two libraries so the report can print them.

use std::fs;

fn lock_version(lock: &str, name: &str) -> String {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{name}\"")
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
        {
            return v.trim_matches('"').to_owned();
        }
    }
    "unknown".to_owned()
}

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (var, name) in [
        ("SEGMENT_VERSION", "segment"),
        ("TRACKWAY_VERSION", "trackway"),
    ] {
        println!("cargo:rustc-env={var}={}", lock_version(&lock, name));
    }
}
