//! Configuration: `gateway.yaml` is read (bounded) into a checked YAML tree, deserialized into raw serde types
//! (every unknown key is an error, `${VAR}` expanded), then compiled into a validated [`Config`]. Every error
//! is reported as `file:line:col: key.path: message`.

mod compile;
mod de;
#[cfg(test)]
mod doc_keys;
mod doors;
mod duration;
mod egress;
mod exposure;
mod feedback;
mod interp;
mod locate;
mod model;
mod raw;
mod redis;
mod secret;
mod tokens;
mod yaml;

pub use compile::parse_endpoint;
pub use duration::parse_duration;
pub use feedback::MAX_PROTECTION_PREFIX;
pub use interp::{Env, ProcessEnv};
pub use model::*;
pub use secret::Secret;

use locate::Locator;
use std::fmt;
use yaml::Problem;

/// The config file is read only up to this size (8 MiB).
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
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
    /// Reads and compiles the config file, taking `${VAR}` values from `env`. The file must be a regular file
    /// of at most [`MAX_CONFIG_BYTES`].
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let text = crate::files::read_text(path, MAX_CONFIG_BYTES).map_err(|e| {
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
    ///
    /// Three passes, each reporting every problem it finds: the YAML tree (syntax, duplicate keys, alias
    /// budget, depth), deserialization (unknown keys, `${VAR}` references, types: a type error stops this
    /// pass), and `compile` (values, scripts). A key with a problem from an earlier pass gets no follow-on
    /// error from a later one.
    pub fn from_yaml(text: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let error = |p: Problem| ConfigError {
            file: path.to_path_buf(),
            location: p.mark.map(|m| (m.line, m.column)),
            path: p.path,
            message: p.message,
        };
        let doc = yaml::Document::parse(text).map_err(|p| ConfigErrors(vec![error(p)]))?;
        let mut problems = doc.problems.clone();
        let cx = de::Context::new(&doc, env);
        let raw = cx.deserialize::<raw::RawConfig>();
        let literal_secrets = cx.literal_secrets();
        problems.extend(cx.into_problems());
        let config = match raw {
            Ok(raw) => match compile::compile(raw, path, env) {
                Ok(config) => {
                    // A literal default is a guessable secret, except where nothing is ever sent (a demo).
                    let dry_run = |key: &str| {
                        let tenant = key.strip_prefix("tenants.").and_then(|rest| rest.split('.').next());
                        tenant.and_then(|t| config.tenant(t)).is_some_and(|t| t.tencent.dry_run)
                    };
                    problems.extend(literal_secrets.into_iter().filter(|p| !dry_run(&p.path)));
                    Some(config)
                }
                Err(found) => {
                    let locator = Locator::new(&doc);
                    let reported: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
                    let fresh = found.into_iter().filter(|(key, _)| !reported.iter().any(|r| covers(r, key)));
                    problems.extend(fresh.map(|(key, message)| Problem {
                        mark: locator.find(&key),
                        path: key,
                        message,
                    }));
                    None
                }
            },
            Err(stopped) => {
                problems.push(stopped);
                None
            }
        };
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => {
                let mut errors: Vec<ConfigError> = problems.into_iter().map(error).collect();
                errors.sort_by_key(|e| e.location);
                Err(ConfigErrors(errors))
            }
        }
    }
}

/// Whether a problem reported at `reported` covers `key` (the same key or one inside it).
fn covers(reported: &str, key: &str) -> bool {
    match key.strip_prefix(reported) {
        Some(rest) => rest.is_empty() || (!reported.is_empty() && (rest.starts_with('.') || rest.starts_with('['))),
        None => false,
    }
}
