//! Why a configuration cannot be used: one typed error per problem, each
//! message one line naming the key (or the file).

use std::path::PathBuf;

/// Why the configuration cannot be used. Every message is one line naming
/// the key (or the file).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("configuration file {path} is not valid YAML: {message}")]
    Yaml {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A key has a value of the wrong form.
    #[error("invalid configuration: {key} must be {expected}, got {got}")]
    Invalid {
        /// The dotted key path.
        key: &'static str,
        /// The expected form.
        expected: String,
        /// What was found.
        got: String,
    },
    /// A section read a key that is not in the table (a bug in berth).
    #[error("configuration key {key} is read but missing from the key table")]
    NotInTable {
        /// The dotted key path.
        key: &'static str,
    },
    /// A section read a key as another kind than its table entry (a bug in berth).
    #[error("configuration key {key} is read as another kind than its table entry: {got}")]
    Mistyped {
        /// The dotted key path.
        key: &'static str,
        /// What the table's parser produced.
        got: String,
    },
}

impl ConfigError {
    /// `key` must be `expected`, got `got`.
    pub fn invalid(key: &'static str, expected: &str, got: impl ToString) -> ConfigError {
        ConfigError::Invalid {
            key,
            expected: expected.to_owned(),
            got: got.to_string(),
        }
    }
}
