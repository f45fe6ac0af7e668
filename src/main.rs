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

fn main() -> ExitCode {
    cli::Cli::parse().execute()
}
