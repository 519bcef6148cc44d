//! Configuration: `gateway.yaml` is read into raw serde types (unknown keys are errors), then compiled into a
//! validated [`Config`]. Every error is reported as `file:line:col: key.path: message`.

mod compile;
mod duration;
mod feedback;
mod interp;
mod locate;
mod model;
mod raw;
mod secret;
mod tokens;

pub use compile::parse_endpoint;
pub use duration::parse_duration;
pub use feedback::MAX_PROTECTION_PREFIX;
pub use interp::{Env, ProcessEnv};
pub use model::*;
pub use secret::Secret;

use locate::{Location, Locator};
use std::fmt;
use std::path::{Path, PathBuf};

/// One config problem, pointing at the line to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub location: Option<(usize, usize)>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if let Some((line, column)) = self.location {
            write!(f, "{line}:{column}:")?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found in a config, in file order.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and compiles the config file, taking `${VAR}` values from `env`.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                location: None,
                path: String::new(),
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        Config::from_yaml(&text, path, env)
    }

    /// Compiles config text; `path` names it in errors and anchors relative script paths.
    pub fn from_yaml(text: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let error = |location: Option<Location>, key: String, message: String| ConfigError {
            file: path.to_path_buf(),
            location: location.map(|l| (l.line, l.column)),
            path: key,
            message,
        };
        let de = serde_yaml::Deserializer::from_str(text);
        let raw: raw::RawConfig = match serde_path_to_error::deserialize(de) {
            Ok(raw) => raw,
            Err(e) => {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                let inner = e.into_inner();
                let location = inner
                    .location()
                    .map(|l| Location { line: l.line(), column: l.column() })
                    .or_else(|| Locator::new(text).find(&key));
                let message = yaml_message(&inner, &key);
                return Err(ConfigErrors(vec![error(location, key, message)]));
            }
        };
        compile::compile(raw, path, env).map_err(|problems| {
            let locator = Locator::new(text);
            let mut errors: Vec<_> =
                problems.into_iter().map(|(key, message)| error(locator.find(&key), key, message)).collect();
            errors.sort_by_key(|e| e.location);
            ConfigErrors(errors)
        })
    }
}

/// serde_yaml's message without its own `path: ` prefix and ` at line L column C` suffix (both are printed
/// in front already).
fn yaml_message(e: &serde_yaml::Error, key: &str) -> String {
    let message = e.to_string();
    let message = match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && key.starts_with(path) => rest,
        _ => &message,
    };
    let message = match message.rfind(" at line ") {
        Some(cut) => &message[..cut],
        None => message,
    };
    without_quoted_values(message)
}

/// Drops the value from serde's `invalid type: string "…"` messages: the value could be a secret written in
/// the wrong place (`tokens: my-token` instead of a list).
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(" \"") {
        match rest[start + 2..].find("\", ").or_else(|| rest[start + 2..].rfind('"')) {
            Some(len) => {
                out.push_str(&rest[..start]);
                rest = &rest[start + 2 + len + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}
