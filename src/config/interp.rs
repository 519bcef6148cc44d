//! `${VAR}` and `${VAR:-default}` interpolation of config strings from the environment.
//!
//! Interpolation runs on each scalar while it is deserialized (not on the raw file), so a variable's value can
//! never inject YAML structure, and an unset variable is reported at the line and key path that names it.
//! `$$` writes a literal `$`.

/// Where variable values come from: the process environment in production, a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Expands every `${...}` reference in `input`. The error names the variable, never its value.
pub fn expand(input: &str, env: &dyn Env) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| "unterminated `${` (write `$$` for a literal `$`)".to_owned())?;
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if !is_var_name(name) {
                return Err(format!("`${{{reference}}}` is not a valid variable reference"));
            }
            match (env.var(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        HashMap::from([("A".to_owned(), "alpha".to_owned()), ("EMPTY".to_owned(), String::new())])
    }

    #[test]
    fn expands_set_default_and_literal() {
        let env = env();
        assert_eq!(expand("plain", &env).unwrap(), "plain");
        assert_eq!(expand("${A}", &env).unwrap(), "alpha");
        assert_eq!(expand("x-${A}-y", &env).unwrap(), "x-alpha-y");
        assert_eq!(expand("${B:-beta}", &env).unwrap(), "beta");
        assert_eq!(expand("${A:-beta}", &env).unwrap(), "alpha");
        assert_eq!(expand("${EMPTY:-d}", &env).unwrap(), "");
        assert_eq!(expand("${B:-}", &env).unwrap(), "");
        assert_eq!(expand("cost $$5 $x", &env).unwrap(), "cost $5 $x");
    }

    #[test]
    fn unset_variable_is_named() {
        assert_eq!(expand("${MISSING}", &env()).unwrap_err(), "environment variable MISSING is not set");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(expand("${A", &env()).is_err());
        assert!(expand("${1A}", &env()).is_err());
        assert!(expand("${}", &env()).is_err());
    }
}
