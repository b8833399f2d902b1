//! The berth server: configuration, start-up and the background schedulers
//! (`server`, `schedulers`), the maintenance commands, the thread-per-core runtime, the connection
//! layer, the registry API, and the debug listener with health and metrics.
//! The binary (`main.rs`) parses the command line and calls this library.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acme;
pub mod api;
pub mod auth;
pub mod config;
pub mod conn;
pub mod debug;
pub mod exchange;
pub mod filestamp;
pub mod health;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod oci_error;
pub mod proxy;
pub mod runtime;
pub mod schedulers;
pub mod server;
pub mod stream;
pub mod tls;
