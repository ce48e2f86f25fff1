//! CPU time and memory of this process, from `/proc/self`.

use std::fs;

/// Clock ticks per second of `utime`/`stime` (USER_HZ, 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// `utime + stime` in ticks from the text of a `stat` file.
fn ticks_in(stat: &str) -> Option<u64> {
    // The command name may hold spaces or parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); field 3 (state) is index 0 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks used by the whole process so far, exited threads included.
pub fn process_ticks() -> u64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks_in(&s))
        .unwrap_or(0)
}

/// CPU ticks used so far by the live threads whose name starts with `prefix`.
pub fn thread_ticks(prefix: &str) -> u64 {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|task| fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| ticks_in(&stat))
        .sum()
}

/// Peak resident set size (`VmHWM`) in KiB.
pub fn vm_hwm_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds used by the process and by the sink's threads, read at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    process: u64,
    sink: u64,
}

impl Cpu {
    /// Reads both now.
    pub fn now(sink_prefix: &str) -> Cpu {
        Cpu {
            process: process_ticks(),
            sink: thread_ticks(sink_prefix),
        }
    }

    /// Seconds (process, sink threads) from `earlier` to `self`.
    pub fn since(&self, earlier: &Cpu) -> (f64, f64) {
        (
            (self.process - earlier.process) as f64 / TICKS_PER_SECOND,
            (self.sink - earlier.sink) as f64 / TICKS_PER_SECOND,
        )
    }
}
