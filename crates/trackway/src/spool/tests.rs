use std::io::{Seek, SeekFrom};

use super::*;

const KEY: &str = "wk-spool-test-0123456789";
const HOST: &str = "http://127.0.0.1:9/v1/batch";

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        sync_interval: Duration::from_millis(10),
        max_bytes: 1024 * 1024,
        abort_in_write: None,
    }
}

fn message(n: usize) -> (Vec<u8>, Range<usize>) {
    let bytes = format!(
        "{{\"messageId\":\"m-{n}\",\"pad\":\"{}\"}}",
        "x".repeat(n % 50)
    );
    let id_end = bytes.find(",\"pad").unwrap_or(0);
    (bytes.into_bytes(), 13..id_end)
}

/// The messages the reader yields until it has none, as text.
fn read_all(reader: &mut SpoolReader) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(spooled) = reader.next() {
        let Payload::Encoded { bytes, id } = spooled.pending.payload else {
            panic!("the spool yields encoded messages");
        };
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert_eq!(
            &text[id],
            format!("\"{}\"", &text[14..text.find("\",").unwrap()])
        );
        out.push(text);
    }
    out
}

fn expected(range: Range<usize>) -> Vec<String> {
    range
        .map(|n| String::from_utf8(message(n).0).unwrap())
        .collect()
}

fn append(spool: &Spool, range: Range<usize>) {
    for n in range {
        let (bytes, id) = message(n);
        spool.append(&bytes, &id).unwrap();
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    found.sort();
    found
}

#[test]
fn records_come_back_in_order_and_settled_ones_are_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    assert_eq!(opened.recovery, Recovery::default());
    let mut reader = opened.reader;
    append(&opened.spool, 0..10);
    assert_eq!(reader.appended(), 10);
    assert_eq!(read_all(&mut reader), expected(0..10));
    // The first four are settled; then the process goes away.
    reader.settled(4);
    drop((opened.spool, reader, opened.keeper));

    let opened = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    assert_eq!(opened.recovery.messages, 6);
    assert_eq!(opened.recovery.truncated_tails, 0);
    let mut reader = opened.reader;
    assert_eq!(
        reader.recovered_bytes(),
        expected(4..10)
            .iter()
            .map(|m| Spool::cost(m.len()))
            .sum::<u64>()
    );
    append(&opened.spool, 10..12);
    let mut read = Vec::new();
    while let Some(spooled) = reader.next() {
        read.push(spooled.recovered);
    }
    // Recovered first, in order, then this process's own.
    assert_eq!(read, [true, true, true, true, true, true, false, false]);
}

#[test]
fn a_torn_tail_is_cut_off_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    append(&opened.spool, 0..3);
    drop(opened);
    // What a crash mid-write leaves: a record's header and part of its payload.
    let path = &segments(dir.path())[0];
    let bytes = std::fs::read(path).unwrap();
    let end = format::scan(&bytes).end;
    let (payload, id) = message(3);
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(end as u64)).unwrap();
    file.write_all(&format::record_header(&payload, &id))
        .unwrap();
    file.write_all(&payload[..payload.len() / 2]).unwrap();
    drop(file);

    let opened = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    assert_eq!(
        opened.recovery,
        Recovery {
            messages: 3,
            truncated_tails: 1
        }
    );
    let mut reader = opened.reader;
    assert_eq!(read_all(&mut reader), expected(0..3));
    drop((opened.spool, reader, opened.keeper));
    let opened = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    assert_eq!(opened.recovery.truncated_tails, 0, "counted again");
    assert_eq!(opened.recovery.messages, 3);
}

#[test]
fn one_client_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    let second = Spool::open(&config(dir.path()), KEY, HOST);
    assert!(
        matches!(second, Err(SpoolError::Locked { .. })),
        "{:?}",
        second.err()
    );
    drop(first);
    assert!(Spool::open(&config(dir.path()), KEY, HOST).is_ok());
}

#[test]
fn a_spool_for_another_key_or_host_or_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    append(&opened.spool, 0..1);
    drop(opened);
    let other_key = Spool::open(&config(dir.path()), "another-key-0123", HOST);
    assert!(matches!(other_key, Err(SpoolError::OtherWriteKey { .. })));
    let message = other_key.err().unwrap().to_string();
    assert!(
        !message.contains(KEY) && !message.contains("another-key"),
        "{message}"
    );
    let other_host = Spool::open(&config(dir.path()), KEY, "http://elsewhere/v1/batch");
    assert!(matches!(other_host, Err(SpoolError::OtherHost { .. })));

    let path = &segments(dir.path())[0];
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(8)).unwrap();
    file.write_all(&7u32.to_le_bytes()).unwrap();
    drop(file);
    let newer = Spool::open(&config(dir.path()), KEY, HOST).err().unwrap();
    assert!(
        matches!(newer, SpoolError::NewerFormat { version: 7, .. }),
        "{newer}"
    );
    assert!(
        newer.to_string().contains("newer trackway (spool format 7"),
        "{newer}"
    );
}

#[test]
#[cfg(unix)]
fn files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("spool");
    let opened = Spool::open(&config(&dir), KEY, HOST).unwrap();
    append(&opened.spool, 0..1);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for segment in segments(&dir) {
        assert_eq!(mode(&segment), 0o600, "{}", segment.display());
    }
}

#[test]
fn segments_roll_over_and_settled_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    let keeper = std::thread::spawn(move || opened.keeper.run());
    let mut reader = opened.reader;
    // Segments of 256 KiB: about 16,000 of these messages make several.
    append(&opened.spool, 0..16000);
    assert!(
        segments(dir.path()).len() >= 4,
        "{:?}",
        segments(dir.path())
    );
    assert_eq!(read_all(&mut reader), expected(0..16000));
    // Half settled: the segments before the half are deleted, not the others. (Named, not
    // counted: the keeper may still be making the spare after the last roll, so the count
    // can rise while the deletions lower it.) The first two hold fewer than 8,000 messages,
    // the third holds the 8,000th.
    let before = segments(dir.path());
    let (doomed, kept) = before.split_at(2);
    reader.settled(8000);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while doomed.iter().any(|p| p.exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "settled segments left: {:?}",
            segments(dir.path())
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for segment in kept {
        assert!(segment.exists(), "{} was deleted", segment.display());
    }
    drop((opened.spool, reader));
    keeper.join().unwrap();

    let opened = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    assert_eq!(opened.recovery.messages, 8000);
    let mut reader = opened.reader;
    assert_eq!(read_all(&mut reader), expected(8000..16000));
    reader.settled(8000);
    drop((opened.spool, reader));
    opened.keeper.run();
    // Everything settled: only the tail and the spare are left, both empty.
    let opened = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    assert_eq!(opened.recovery, Recovery::default());
}

#[test]
fn an_empty_spool_left_for_another_host_opens_for_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    append(&opened.spool, 0..2);
    let mut reader = opened.reader;
    assert_eq!(read_all(&mut reader).len(), 2);
    reader.settled(2);
    drop((opened.spool, reader, opened.keeper));
    // Everything settled: nothing ties the directory to that host or key any more.
    let opened = Spool::open(&config(dir.path()), "a-new-key-0123", "http://new/v1/batch");
    assert_eq!(opened.unwrap().recovery, Recovery::default());
}

#[test]
fn a_segment_power_loss_left_unwritten_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // Made ahead and renamed into place, then power was lost before anything synced it: its
    // name survived, its contents did not.
    std::fs::write(dir.path().join("0000000000000007.seg"), vec![0; 4096]).unwrap();
    std::fs::write(dir.path().join("0000000000000008.seg"), b"").unwrap();
    let opened = Spool::open(&config(dir.path()), KEY, HOST).unwrap();
    assert_eq!(opened.recovery, Recovery::default());
    let left = segments(dir.path());
    assert!(
        left.iter()
            .all(|p| p.file_name().unwrap() > "0000000000000008.seg"),
        "{left:?}"
    );
}
