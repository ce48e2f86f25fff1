//! The one place the client maps a file into memory, and so the one `unsafe` in the crate.

#![expect(
    unsafe_code,
    reason = "mapping a file is unsafe in Rust; the spool writes through a mapping so that a \
              call makes no system call"
)]

use std::fs::File;
use std::io;

use memmap2::MmapMut;

/// Maps the whole of `file` (a spool segment, opened for reading and writing) shared, so
/// writes land in the page cache and reach the file.
pub(super) fn map_segment(file: &File) -> io::Result<MmapMut> {
    // SAFETY: a mapping is undefined behaviour if the file shrinks under it (the pages
    // vanish) or if another process writes it while Rust holds references into it. Segment
    // files are created at their full size, preallocated with real blocks, and never
    // truncated; they live in a spool directory that one client at a time holds with an
    // advisory lock (`LOCK`, taken at build and kept until the spool's thread ends), so no
    // other trackway process writes or deletes them while they are mapped. Within this
    // process the spool keeps writers and readers apart: only the call holding the writer's
    // lock writes the record area, only the worker writes the progress bytes, and readers read
    // only bytes published as complete (see `spool/mod.rs`). A user who edits the files by
    // hand while the client runs is outside what the lock can prevent, as for any database
    // file.
    unsafe { MmapMut::map_mut(file) }
}
