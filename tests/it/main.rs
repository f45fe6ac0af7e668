//! End-to-end tests, one binary: the real `portcullis` binary in front of a real upstream, with
//! real TLS, a real OpenID Provider and a real SAML IdP. Each module was once a binary of its
//! own; the harness and the browser flows they share live in `common`.

mod common;

mod access;
mod audit_sinks;
mod audit_trail;
mod cli;
mod console;
mod control;
mod demo;
mod lifecycle;
mod login;
mod machine;
mod netguard;
mod oidc;
mod proxy;
mod reload;
mod replicas;
mod saml;
mod store;
mod store_topologies;
mod streams;
mod upstream_tls;
