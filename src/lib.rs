//! Portcullis: an identity-aware reverse proxy on Pingora.
//!
//! A security core in plain Rust (`config`, `route`, `identity`, `netguard`, `policy`, `audit`,
//! `assertion`, `idp`, `session`, `store`, `runtime`…) under a thin Pingora shell (`proxy`,
//! `server`, `tls`, `admin`). The core never names Pingora and the modules form no import
//! cycle (`scripts/layers.py`); docs/architecture.md draws the layers.
//! The library exists for the binary, the benchmarks in `benches/` and the fuzz targets in
//! `fuzz/`; it has no stable API.

mod admin;
pub mod apikey;
pub mod assertion;
mod audit;
mod certs;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
mod demo;
pub mod identity;
pub mod idp;
mod keys;
mod listeners;
mod logging;
pub mod machine;
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
