//! Portcullis: an identity-aware reverse proxy on Pingora.
//!
//! The request pipeline lives in `proxy`; everything it decides with is in modules that
//! never import Pingora (`config`, `route`, `policy`, `netguard`, `respond`, `audit`).
//! The library exists for the binary, the benchmarks in `benches/` and the fuzz targets in
//! `fuzz/`; it has no stable API.

mod admin;
pub mod assertion;
mod audit;
mod certs;
pub mod cli;
pub mod config;
mod demo;
pub mod identity;
pub mod idp;
mod keys;
mod listeners;
mod logging;
mod metrics;
pub mod netguard;
mod pem;
pub mod policy;
mod proxy;
mod redirect;
mod respond;
pub mod route;
pub mod runtime;
mod server;
pub mod session;
pub mod store;
mod tls;
