//! The merged configuration tree (embedded default, file, `REGISTRY_*`
//! variables) and typed reads of it through the key table: every read
//! names a key of [`KEYS`](super::keys::KEYS), is parsed by that key's
//! [`Kind`], falls back to its default, and fails with an error naming it.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::error::ConfigError;
use super::keys::{self, Key, Kind};
use super::values::{parse_duration, parse_listen, parse_size, show_duration};

/// A parsed value of one key.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    /// Not configured and no default.
    Unset,
    /// [`Kind::Bool`].
    Bool(bool),
    /// [`Kind::Text`] and [`Kind::Choice`] (the canonical word).
    Text(String),
    /// [`Kind::List`].
    List(Vec<String>),
    /// [`Kind::Duration`] and [`Kind::Millis`].
    Duration(Duration),
    /// [`Kind::Int`] and [`Kind::Size`].
    Int(u64),
    /// [`Kind::Addr`].
    Addr(SocketAddr),
}

/// The merged tree, read through the key table.
pub struct Source<'v> {
    root: &'v Value,
    /// The keys the sections have read, so a test can tell a table entry
    /// that nothing uses.
    read: RefCell<BTreeSet<&'static str>>,
}

impl<'v> Source<'v> {
    /// Reads `root`.
    pub fn new(root: &'v Value) -> Source<'v> {
        Source {
            root,
            read: RefCell::new(BTreeSet::new()),
        }
    }

    /// The keys read so far through [`Source::get`] and the typed readers.
    #[cfg(test)]
    pub fn keys_read(&self) -> BTreeSet<&'static str> {
        self.read.borrow().clone()
    }

    /// The raw value at a dotted path, if present and not null.
    pub fn raw(&self, dotted: &str) -> Option<&'v Value> {
        lookup(self.root, dotted)
    }

    /// The key's value: configured, else its default, else `Unset`.
    pub fn get(&self, path: &'static str) -> Result<Setting, ConfigError> {
        self.read.borrow_mut().insert(path);
        self.value_of(path)
    }

    /// The key's value, as [`Source::get`], without counting it as read.
    fn value_of(&self, path: &'static str) -> Result<Setting, ConfigError> {
        let key = keys::find(path).ok_or(ConfigError::NotInTable { key: path })?;
        match self.raw(path) {
            Some(value) => parse(key, value),
            None => match key.default {
                None => Ok(Setting::Unset),
                Some(text) => parse(key, &default_value(key, text)),
            },
        }
    }

    /// A [`Kind::Bool`] key (which must have a default).
    pub fn flag(&self, path: &'static str) -> Result<bool, ConfigError> {
        match self.get(path)? {
            Setting::Bool(b) => Ok(b),
            other => Err(mistyped(path, &other)),
        }
    }

    /// A [`Kind::Text`] or [`Kind::Choice`] key; `None` when unset or empty.
    pub fn text(&self, path: &'static str) -> Result<Option<String>, ConfigError> {
        match self.get(path)? {
            Setting::Unset => Ok(None),
            Setting::Text(s) => Ok(Some(s)),
            other => Err(mistyped(path, &other)),
        }
    }

    /// A [`Kind::List`] key; empty when unset.
    pub fn list(&self, path: &'static str) -> Result<Vec<String>, ConfigError> {
        match self.get(path)? {
            Setting::Unset => Ok(Vec::new()),
            Setting::List(items) => Ok(items),
            other => Err(mistyped(path, &other)),
        }
    }

    /// A [`Kind::Duration`] or [`Kind::Millis`] key; `None` when unset.
    pub fn duration(&self, path: &'static str) -> Result<Option<Duration>, ConfigError> {
        match self.get(path)? {
            Setting::Unset => Ok(None),
            Setting::Duration(d) => Ok(Some(d)),
            other => Err(mistyped(path, &other)),
        }
    }

    /// A duration key that has a default and must not be zero.
    pub fn positive_duration(&self, path: &'static str) -> Result<Duration, ConfigError> {
        match self.duration(path)? {
            Some(d) if !d.is_zero() => Ok(d),
            Some(_) => Err(ConfigError::invalid(path, "a positive duration", "0")),
            None => required(path, None),
        }
    }

    /// A [`Kind::Int`] or [`Kind::Size`] key (which must have a default).
    pub fn int(&self, path: &'static str) -> Result<u64, ConfigError> {
        match self.get(path)? {
            Setting::Int(n) => Ok(n),
            other => Err(mistyped(path, &other)),
        }
    }

    /// An integer key as a `usize` (its table limit keeps it small).
    pub fn count(&self, path: &'static str) -> Result<usize, ConfigError> {
        let n = self.int(path)?;
        usize::try_from(n).map_err(|_| ConfigError::invalid(path, "a smaller number", n))
    }

    /// A [`Kind::Addr`] key; `None` when unset.
    pub fn addr(&self, path: &'static str) -> Result<Option<SocketAddr>, ConfigError> {
        match self.get(path)? {
            Setting::Unset => Ok(None),
            Setting::Addr(a) => Ok(Some(a)),
            other => Err(mistyped(path, &other)),
        }
    }

    /// Every key of the table as `key: value` (secrets masked, unset keys
    /// with the README's default text, in parentheses unless it says
    /// "unset"), in table order. A
    /// key that does not parse (possible only in a section that is off)
    /// shows its raw value.
    pub fn effective(&self) -> Vec<String> {
        keys::KEYS
            .iter()
            .map(|key| {
                let shown = match self.value_of(key.path) {
                    Ok(Setting::Unset) => {
                        let text = key.default_markdown().replace('`', "");
                        if text.starts_with("unset") {
                            text
                        } else {
                            format!("({text})")
                        }
                    }
                    Ok(_) if key.secret => "********".into(),
                    Ok(setting) => show(key, &setting),
                    Err(_) if key.secret => "********".into(),
                    Err(_) => self.raw(key.path).map(describe).unwrap_or_default(),
                };
                format!("{}: {shown}", key.path)
            })
            .collect()
    }

    /// Paths present in the tree that berth does not read.
    pub fn unknown_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_unknown(self.root, String::new(), &mut out);
        out
    }
}

/// The value of a key whose table entry has a default (so it is never
/// unset); an error naming the key if the table lacks it.
pub fn required<T>(path: &'static str, value: Option<T>) -> Result<T, ConfigError> {
    value.ok_or_else(|| mistyped(path, &Setting::Unset))
}

/// The error for a key whose table entry does not fit how it is read (a
/// table mistake, caught by the tests that load the defaults).
fn mistyped(path: &'static str, got: &Setting) -> ConfigError {
    ConfigError::Mistyped {
        key: path,
        got: format!("{got:?}"),
    }
}

/// A default from the table as a YAML value of its kind.
fn default_value(key: &Key, text: &str) -> Value {
    match key.kind {
        Kind::Bool | Kind::Int { .. } | Kind::Millis => {
            serde_yaml_ng::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        }
        _ => Value::String(text.to_owned()),
    }
}

/// Parses one present value by its key's kind.
fn parse(key: &Key, value: &Value) -> Result<Setting, ConfigError> {
    let path = key.path;
    match key.kind {
        Kind::Bool => match value {
            Value::Bool(b) => Ok(Setting::Bool(*b)),
            other => Err(ConfigError::invalid(path, "true or false", describe(other))),
        },
        Kind::Text => Ok(match scalar_text(path, value)? {
            s if s.is_empty() => Setting::Unset,
            s => Setting::Text(s),
        }),
        Kind::Choice(words, expected) => {
            let s = scalar_text(path, value)?;
            words
                .iter()
                .find(|(word, _)| *word == s)
                .map(|(_, canonical)| Setting::Text((*canonical).to_owned()))
                .ok_or_else(|| ConfigError::invalid(path, expected, s))
        }
        Kind::List => string_list(path, value).map(Setting::List),
        Kind::Duration => {
            let s = scalar_text(path, value)?;
            parse_duration(&s)
                .map(Setting::Duration)
                .ok_or_else(|| ConfigError::invalid(path, "a duration such as 30s, 2m or 500ms", s))
        }
        Kind::Millis => value
            .as_u64()
            .filter(|n| *n > 0 && *n <= 86_400_000)
            .map(|n| Setting::Duration(Duration::from_millis(n)))
            .ok_or_else(|| {
                ConfigError::invalid(path, "milliseconds from 1 to 86400000", describe(value))
            }),
        Kind::Int { min, max } => value
            .as_u64()
            .filter(|n| (min..=max).contains(n))
            .map(Setting::Int)
            .ok_or_else(|| ConfigError::Invalid {
                key: path,
                expected: format!("an integer from {min} to {max}"),
                got: describe(value),
            }),
        Kind::Size => {
            let s = scalar_text(path, value)?;
            parse_size(&s).map(Setting::Int).ok_or_else(|| {
                ConfigError::invalid(
                    path,
                    "a size in bytes such as 500GiB, 200GB or 1073741824",
                    s,
                )
            })
        }
        Kind::Addr => {
            let s = scalar_text(path, value)?;
            parse_listen(&s)
                .map(Setting::Addr)
                .ok_or_else(|| ConfigError::invalid(path, "HOST:PORT or :PORT", s))
        }
    }
}

/// How a parsed value reads in the effective configuration.
fn show(key: &Key, setting: &Setting) -> String {
    match setting {
        Setting::Unset => String::new(),
        Setting::Bool(b) => b.to_string(),
        Setting::Text(s) => one_line(s),
        Setting::List(items) => {
            let items: Vec<String> = items.iter().map(|s| one_line(s)).collect();
            format!("[{}]", items.join(", "))
        }
        Setting::Duration(d) if key.kind == Kind::Millis => d.as_millis().to_string(),
        Setting::Duration(d) => show_duration(*d),
        Setting::Int(n) => n.to_string(),
        Setting::Addr(a) => a.to_string(),
    }
}

/// `s`, quoted and escaped if it holds control characters (a newline
/// must not start a line of its own in the effective configuration).
fn one_line(s: &str) -> String {
    if s.chars().any(char::is_control) {
        format!("{s:?}")
    } else {
        s.to_owned()
    }
}

/// A string or a number's text.
fn scalar_text(path: &'static str, value: &Value) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(ConfigError::invalid(path, "a string", describe(other))),
    }
}

/// A list of strings: a YAML sequence, or (from `REGISTRY_..._0`-style
/// environment overrides) a map whose keys are indexes.
fn string_list(key: &'static str, value: &Value) -> Result<Vec<String>, ConfigError> {
    let invalid = |got: &Value| ConfigError::invalid(key, "a list of strings", describe(got));
    match value {
        Value::Sequence(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| invalid(v)))
            .collect(),
        Value::Mapping(map) => {
            let mut indexed = Vec::new();
            for (k, v) in map {
                let index = k
                    .as_str()
                    .and_then(|k| k.parse::<usize>().ok())
                    .ok_or_else(|| invalid(k))?;
                indexed.push((
                    index,
                    v.as_str().map(str::to_owned).ok_or_else(|| invalid(v))?,
                ));
            }
            indexed.sort();
            Ok(indexed.into_iter().map(|(_, v)| v).collect())
        }
        Value::String(s) => Ok(vec![s.clone()]),
        other => Err(invalid(other)),
    }
}

/// Parses YAML text into a tree; an empty document is an empty map.
pub fn parse_yaml(text: &str, origin: &str) -> Result<Value, ConfigError> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Yaml {
        path: origin.to_owned(),
        message: e.to_string().replace('\n', " "),
    })?;
    Ok(if value.is_null() {
        Value::Mapping(Mapping::new())
    } else {
        value
    })
}

/// Overlays `overlay` onto `base`: maps merge key by key, anything else replaces.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (k, v) in overlay {
                let key = lowercase_key(&k);
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(key, v);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn lowercase_key(k: &Value) -> Value {
    match k {
        Value::String(s) => Value::String(s.to_ascii_lowercase()),
        other => other.clone(),
    }
}

/// Sets `keys` under `root`, turning scalars on the way into maps (so that
/// `REGISTRY_AUTH=htpasswd` then `REGISTRY_AUTH_HTPASSWD_PATH=...` both work).
pub fn set_path(root: &mut Value, keys: &[String], value: Value) {
    let Some((first, rest)) = keys.split_first() else {
        // A non-empty scalar set on a section selects its type
        // (`REGISTRY_AUTH=htpasswd`): keep that type's settings, whatever
        // order the variables are applied in. An empty one clears it.
        if let (Value::Mapping(map), Value::String(kind)) = (&mut *root, &value) {
            if !kind.is_empty() {
                let key = Value::String(kind.clone());
                let settings = map
                    .remove(&key)
                    .unwrap_or_else(|| Value::Mapping(Mapping::new()));
                map.clear();
                map.insert(key, settings);
                return;
            }
        }
        *root = value;
        return;
    };
    if !root.is_mapping() {
        let mut map = Mapping::new();
        if let Value::String(kind) = root {
            map.insert(Value::String(kind.clone()), Value::Mapping(Mapping::new()));
        }
        *root = Value::Mapping(map);
    }
    if let Value::Mapping(map) = root {
        let key = Value::String(first.clone());
        let child = map.entry(key).or_insert(Value::Null);
        set_path(child, rest, value);
    }
}

fn lookup<'v>(root: &'v Value, dotted: &str) -> Option<&'v Value> {
    dotted
        .split('.')
        .try_fold(root, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

/// A value as YAML text on one line, for error messages.
pub fn describe(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().replace('\n', " "))
        .unwrap_or_else(|_| "?".into())
}

fn collect_unknown(v: &Value, prefix: String, out: &mut Vec<String>) {
    let known = keys::find(&prefix).is_some();
    let Value::Mapping(map) = v else {
        if !prefix.is_empty() && !known {
            out.push(prefix);
        }
        return;
    };
    if !prefix.is_empty() && known {
        return;
    }
    for (k, child) in map {
        let name = k.as_str().map(str::to_owned).unwrap_or_else(|| describe(k));
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        collect_unknown(child, path, out);
    }
}
