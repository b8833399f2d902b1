//! The berth server: configuration, the thread-per-core runtime, the
//! connection layer and the registry API. The binary (`main.rs`) is a thin
//! CLI over this library.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acme;
pub mod api;
pub mod auth;
pub mod config;
pub mod conn;
pub mod exchange;
pub mod filestamp;
pub mod logging;
pub mod oci_error;
pub mod proxy;
pub mod runtime;
pub mod stream;
pub mod tls;
