//! Portcullis: an identity-aware reverse proxy on Pingora.
//!
//! The request pipeline lives in [`proxy`]; everything it decides with is in modules that
//! never import Pingora (`config`, `route`, `policy`, `netguard`, `respond`, `audit`).

mod admin;
mod audit;
mod cli;
mod config;
mod demo;
mod identity;
mod idp;
mod keys;
mod logging;
mod metrics;
mod netguard;
mod pem;
mod policy;
mod proxy;
mod redirect;
mod respond;
mod route;
mod server;
mod session;
mod store;
mod tls;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: a fifth of the proxy's CPU went to glibc `malloc`/`free`,
/// with records allocated on request threads and freed on the audit thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::Cli::parse().execute()
}
