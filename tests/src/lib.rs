//! End-to-end test harness for berth: start the registry under test on a
//! loopback port, generate OCI test images, and drive real clients (skopeo,
//! a private dockerd + docker CLI) against it. The scenarios live in
//! `tests/`; this library is what they share.
//!
//! Clients come from Debian (`scripts/install-test-deps`); a missing client
//! makes a test fail, never skip. Every daemon is stopped by a Drop guard,
//! also when a check fails.
//!
//! * [`registry`]: the registry process (berth, or `BERTH_TEST_REGISTRY_BIN`).
//! * [`images`]: deterministic OCI layouts (`multi`, `index`).
//! * [`dockerd`] / [`docker`]: a private Docker engine and its CLI.
//! * [`skopeo`]: skopeo with a private auth file.
//! * [`api`] / [`http`]: direct API checks and raw TCP exchanges.
//! * [`cmd`]: running programs, signals, log tails.

pub mod api;
pub mod certs;
pub mod cmd;
pub mod containerd;
pub mod docker;
pub mod dockerd;
pub mod durability;
pub mod http;
pub mod images;
pub mod registry;
pub mod relay;
pub mod skopeo;
pub mod tokens;

/// Prints a step with the time since `t0` (shown with `--nocapture`).
pub fn step(t0: std::time::Instant, what: &str) {
    eprintln!("[berth-tests] {:7.1}s {what}", t0.elapsed().as_secs_f64());
}
