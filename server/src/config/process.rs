//! The `log` and `runtime` sections: how the process logs and runs its
//! event loops.

use super::error::ConfigError;
use super::source::{required, Source};

/// Which I/O driver the event loops use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring where the kernel allows it, else epoll/poll.
    Auto,
    /// io_uring only; fail to start without it.
    IoUring,
    /// epoll/poll even where io_uring works.
    Poll,
}

/// `log.*` as read.
pub(super) struct LogSection {
    pub level: String,
    pub formatter: crate::logging::Formatter,
    pub access_log: bool,
}

/// `runtime.*` as read.
pub(super) struct RuntimeSection {
    pub driver: DriverChoice,
    pub threads: usize,
}

pub(super) fn parse_log(src: &Source) -> Result<LogSection, ConfigError> {
    let formatter = match src.text("log.formatter")?.as_deref() {
        Some("json") => crate::logging::Formatter::Json,
        _ => crate::logging::Formatter::Text,
    };
    Ok(LogSection {
        level: required("log.level", src.text("log.level")?)?,
        formatter,
        access_log: !src.flag("log.accesslog.disabled")?,
    })
}

pub(super) fn parse_runtime(src: &Source) -> Result<RuntimeSection, ConfigError> {
    let driver = match src.text("runtime.driver")?.as_deref() {
        Some("io_uring") => DriverChoice::IoUring,
        Some("poll") => DriverChoice::Poll,
        _ => DriverChoice::Auto,
    };
    Ok(RuntimeSection {
        driver,
        threads: src.count("runtime.threads")?,
    })
}
