//! The `portcullis` command; everything it does lives in the library (`src/lib.rs`).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: a fifth of the proxy's CPU went to glibc `malloc`/`free`,
/// with records allocated on request threads and freed on the audit thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // No transparent huge pages: mimalloc asks for them on its arenas, and then one touched
    // byte keeps 2 MiB resident. Measured: idle RSS 23 MiB without, 37 MiB whenever the kernel
    // granted them, and RSS climbing a minute after a burst of streams ended as khugepaged
    // merged the freed ranges back (docs/performance.md, "Memory"). Best effort: a kernel
    // without the flag just keeps its default.
    let _ = nix::sys::prctl::set_thp_disable(true);
    portcullis::cli::Cli::parse().execute()
}
