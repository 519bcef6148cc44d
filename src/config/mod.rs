//! Configuration: `gateway.yaml` is read (bounded) into a checked YAML tree, deserialized into raw serde types
//! (every unknown key is an error, `${VAR}` expanded), then compiled into a validated [`Config`]. Every error
//! is reported as `file:line:col: key.path: message`. The compiled config is inert (values, and the files it
//! names, read): runtime state lives in runtime.rs, built by Runtime::build, dropped with it on reload.

mod check;
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
mod limits_backend;
mod listen;
mod locate;
mod model;
mod raw;
mod script;
mod secret;
mod tokens;
mod yaml;

#[cfg(test)]
pub(crate) use compile::parse_endpoint;
pub(crate) use doors::{read_scope, ReadScope};
pub(crate) use feedback::MAX_PROTECTION_PREFIX;
pub use interp::{Env, ProcessEnv};
pub use model::*;
pub use script::{
    OnScriptError, ScriptLimits, ScriptSpec, Settings, DEFAULT_INSTRUCTIONS, DEFAULT_MEMORY, DEFAULT_TIME,
    MAX_SCRIPT_BYTES, TIME_RANGE,
};
pub use secret::Secret;

use locate::Locator;
use std::fmt;
use std::sync::Arc;
use yaml::Problem;

/// The config file is read only up to this size (8 MiB).
pub(crate) const MAX_CONFIG_BYTES: u64 = 8 << 20;
use std::path::{Path, PathBuf};

/// The JSON Schema (draft 2020-12) of gateway.yaml, derived from the types the config is read into, so it
/// follows every key the parser accepts. `${VAR}` references are text: a key that takes a number takes no
/// reference, as when the file is read.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(raw::RawConfig).to_value()
}

/// One config problem, pointing at the line to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub(crate) location: Option<(usize, usize)>,
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
    /// pass), and `compile` (values; script files are read here, compiled by `Runtime::build`). A key with a
    /// problem from an earlier pass gets no follow-on error from a later one.
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
                Ok(mut config) => {
                    locate_scripts(&mut config, &doc);
                    // A literal default is a guessable secret, except where nothing is ever sent (a demo).
                    let dry_run = |key: &str| {
                        let tenant = key.strip_prefix("tenants.").and_then(|rest| rest.split('.').next());
                        tenant.and_then(|t| config.tenant(t)).is_some_and(|t| t.dry_run())
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

impl Config {
    /// The config at `path` as read, `${VAR}` references expanded, as YAML with every secret (tokens, keys,
    /// passwords, URLs that may hold one, test numbers' codes) printed as `**REDACTED**`: `check --print`.
    /// Keys left out take their defaults. Call after [`Config::load`] succeeded.
    pub fn redacted_yaml(path: &Path, env: &dyn Env) -> Result<String, ConfigErrors> {
        let fail = |message: String| {
            ConfigErrors(vec![ConfigError { file: path.to_path_buf(), location: None, path: String::new(), message }])
        };
        let text = crate::files::read_text(path, MAX_CONFIG_BYTES)
            .map_err(|e| fail(format!("cannot read the config file: {e}")))?;
        let doc = yaml::Document::parse(&text).map_err(|p| fail(p.message))?;
        let cx = de::Context::new(&doc, env);
        let raw = cx.deserialize::<raw::RawConfig>().map_err(|p| fail(p.message))?;
        let value = serde_json::to_value(&raw).map_err(|e| fail(e.to_string()))?;
        let mut out = String::new();
        let mut emitter = yaml_rust2::YamlEmitter::new(&mut out);
        emitter.multiline_strings(true);
        emitter.dump(&to_yaml(value)).map_err(|e| fail(format!("{e:?}")))?;
        out.push('\n');
        Ok(out)
    }
}

/// A JSON value as a YAML node; keys left out (null) or empty (`[]`, `{}`) are dropped, their defaults apply.
fn to_yaml(value: serde_json::Value) -> yaml_rust2::Yaml {
    use yaml_rust2::Yaml;
    match value {
        serde_json::Value::Null => Yaml::Null,
        serde_json::Value::Bool(b) => Yaml::Boolean(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        serde_json::Value::String(s) => Yaml::String(s),
        serde_json::Value::Array(items) => Yaml::Array(items.into_iter().map(to_yaml).collect()),
        serde_json::Value::Object(map) => Yaml::Hash(
            map.into_iter()
                .filter(|(_, v)| match v {
                    serde_json::Value::Null => false,
                    serde_json::Value::Array(items) => !items.is_empty(),
                    serde_json::Value::Object(map) => !map.is_empty(),
                    _ => true,
                })
                .map(|(k, v)| (Yaml::String(k), to_yaml(v)))
                .collect(),
        ),
    }
}

/// Records where each tenant's `script:` key is, for the errors of compiling the script (`Runtime::build`).
fn locate_scripts(config: &mut Config, doc: &yaml::Document) {
    if config.tenants.iter().all(|t| t.script.is_none()) {
        return;
    }
    let locator = Locator::new(doc);
    // The tenants were just compiled: nothing else holds them yet.
    for tenant in config.tenants.iter_mut().filter_map(Arc::get_mut) {
        let key = format!("tenants.{}.script", tenant.name);
        if let Some(script) = &mut tenant.script {
            script.location = locator.find(&key).map(|m| (m.line, m.column));
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
