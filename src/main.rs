//! The `portcullis` command; everything it does lives in the library (`src/lib.rs`).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: a fifth of the proxy's CPU went to glibc `malloc`/`free`,
/// with records allocated on request threads and freed on the audit thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    portcullis::cli::Cli::parse().execute()
}
