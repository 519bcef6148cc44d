//! `${VAR}` and `${VAR:-default}` interpolation of config strings from the environment.
//!
//! Interpolation runs on each string value while the document is deserialized (not on the raw file), so a
//! variable's value can never inject YAML structure, and an unset variable is reported at the line and key
//! path that names it. A reference is parsed whole before anything is looked up: defaults nest
//! (`${A:-${B}}`, `${A:-x${B}y}`) with balanced braces, and anything that is not a complete reference is an
//! error, so no `${` reaches a compiled value. A variable's value is used verbatim, never expanded again.
//! `$$` writes a literal `$`. Errors name variables, never a value or a default.

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

/// How deeply defaults may nest: `${A:-${B:-${C}}}` is three levels.
const MAX_NESTING: usize = 8;

/// A parsed string: literal text and references.
#[derive(Debug, PartialEq)]
enum Part<'a> {
    Text(&'a str),
    /// `$$`.
    Dollar,
    Reference {
        name: &'a str,
        default: Option<Vec<Part<'a>>>,
    },
}

/// Expands every `${...}` reference in `input`. The error names the variable, never its value.
pub(super) fn expand(input: &str, env: &dyn Env) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut parser = Parser { src: input, pos: 0 };
    let parts = parser.parts(0)?;
    debug_assert_eq!(parser.pos, input.len());
    let mut out = String::with_capacity(input.len());
    evaluate(&parts, env, None, &mut out)?;
    Ok(out)
}

/// Whether a reference in `input` has a default with literal text in it (`${A:-x}`, `${A:-x${B}}`; not
/// `${A:-${B}}`): a value that is the config's own text whenever the variable is unset.
pub(crate) fn has_literal_default(input: &str) -> bool {
    fn literal(parts: &[Part<'_>], in_default: bool) -> bool {
        parts.iter().any(|part| match part {
            Part::Text(_) | Part::Dollar => in_default,
            Part::Reference { default, .. } => default.as_deref().is_some_and(|d| literal(d, true)),
        })
    }
    if !input.contains("${") {
        return false;
    }
    Parser { src: input, pos: 0 }.parts(0).is_ok_and(|parts| literal(&parts, false))
}

/// Whether `text` holds a `${` that [`expand`] would read as a reference (`$${` is a literal).
pub(crate) fn has_reference(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'$', b'$') => i += 2,
            (b'$', b'{') => return true,
            _ => i += 1,
        }
    }
    false
}

fn evaluate(parts: &[Part<'_>], env: &dyn Env, within: Option<&str>, out: &mut String) -> Result<(), String> {
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Dollar => out.push('$'),
            Part::Reference { name, default } => match (env.var(name), default) {
                // Verbatim: a value is never expanded again, so the environment cannot inject a reference.
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => evaluate(default, env, Some(name), out)?,
                (None, None) => {
                    return Err(match within {
                        None => format!("environment variable {name} is not set"),
                        Some(outer) => format!(
                            "environment variable {name} is not set (it is the default of {outer}, which is not set either)"
                        ),
                    })
                }
            },
        }
    }
    Ok(())
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    /// Parts up to the end of the input (`depth` 0) or up to the `}` that closes the current default, which
    /// is left for the caller. Plain `{` … `}` pairs inside a default are literal text and stay balanced.
    fn parts(&mut self, depth: usize) -> Result<Vec<Part<'a>>, String> {
        let mut parts = Vec::new();
        let mut text_start = self.pos;
        let mut braces = 0usize;
        while let Some(c) = self.rest().chars().next() {
            match c {
                '$' if self.rest().starts_with("$$") => {
                    push_text(&mut parts, &self.src[text_start..self.pos]);
                    parts.push(Part::Dollar);
                    self.pos += 2;
                    text_start = self.pos;
                }
                '$' if self.rest().starts_with("${") => {
                    push_text(&mut parts, &self.src[text_start..self.pos]);
                    parts.push(self.reference(depth)?);
                    text_start = self.pos;
                }
                '{' if depth > 0 => {
                    braces += 1;
                    self.pos += 1;
                }
                '}' if depth > 0 && braces == 0 => break,
                '}' if depth > 0 => {
                    braces -= 1;
                    self.pos += 1;
                }
                c => self.pos += c.len_utf8(),
            }
        }
        push_text(&mut parts, &self.src[text_start..self.pos]);
        Ok(parts)
    }

    /// A reference starting at `${`; leaves `pos` after its closing `}`.
    fn reference(&mut self, depth: usize) -> Result<Part<'a>, String> {
        self.pos += 2;
        let name_len = self.rest().bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
        let name = &self.rest()[..name_len];
        self.pos += name_len;
        if name.is_empty() {
            return Err("`${` must be followed by a variable name (write `$$` for a literal `$`)".into());
        }
        if name.as_bytes()[0].is_ascii_digit() {
            return Err(format!("`${{{name}` is not a variable reference: names start with a letter or `_`"));
        }
        if self.rest().starts_with('}') {
            self.pos += 1;
            return Ok(Part::Reference { name, default: None });
        }
        if !self.rest().starts_with(":-") {
            return Err(match self.rest().is_empty() {
                true => format!("`${{{name}` is not closed with `}}`"),
                false => format!(
                    "`${{{name}` is followed by an unsupported form: write `${{{name}}}` or `${{{name}:-default}}`"
                ),
            });
        }
        if depth + 1 > MAX_NESTING {
            return Err(format!("defaults nest more than {MAX_NESTING} levels deep in `${{{name}:-…}}`"));
        }
        self.pos += 2;
        let default = self.parts(depth + 1)?;
        if !self.rest().starts_with('}') {
            return Err(format!("`${{{name}:-…` is not closed with `}}`"));
        }
        self.pos += 1;
        Ok(Part::Reference { name, default: Some(default) })
    }
}

fn push_text<'a>(parts: &mut Vec<Part<'a>>, text: &'a str) {
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        HashMap::from([
            ("A".to_owned(), "alpha".to_owned()),
            ("EMPTY".to_owned(), String::new()),
            ("INJECT".to_owned(), "${A}$$".to_owned()),
        ])
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
        assert_eq!(expand("$${A}", &env).unwrap(), "${A}", "`$$` escapes the `$` of a reference");
        assert_eq!(expand("${B:-127.0.0.1:8080}", &env).unwrap(), "127.0.0.1:8080");
    }

    #[test]
    fn defaults_nest() {
        let env = env();
        assert_eq!(expand("${B:-${A}}", &env).unwrap(), "alpha");
        assert_eq!(expand("${B:-x${A}y}", &env).unwrap(), "xalphay");
        assert_eq!(expand("${B:-${C:-${A}}}", &env).unwrap(), "alpha");
        assert_eq!(expand("${B:-${C:-deep}}-tail", &env).unwrap(), "deep-tail");
        let eight = "${B:-${C:-${D:-${E:-${F:-${G:-${H:-${I:-x}}}}}}}}";
        assert_eq!(expand(eight, &env).unwrap(), "x", "eight levels of defaults");
        assert_eq!(expand("${B:-{json}}", &env).unwrap(), "{json}", "balanced braces are literal text");
        assert_eq!(expand("${B:-a$$b}", &env).unwrap(), "a$b");
        // The default is not looked up when the variable is set: its unset variables are no error.
        assert_eq!(expand("${A:-${MISSING}}", &env).unwrap(), "alpha");
    }

    #[test]
    fn values_are_never_expanded_again() {
        assert_eq!(expand("${INJECT}", &env()).unwrap(), "${A}$$");
        assert_eq!(expand("${B:-${INJECT}}", &env()).unwrap(), "${A}$$");
    }

    #[test]
    fn unset_variables_are_named() {
        assert_eq!(expand("${MISSING}", &env()).unwrap_err(), "environment variable MISSING is not set");
        let e = expand("${OUTER:-${FALLBACK_VALUE}}", &env()).unwrap_err();
        assert!(e.starts_with("environment variable FALLBACK_VALUE is not set (it is the default of OUTER"), "{e}");
    }

    #[test]
    fn anything_but_a_complete_reference_is_an_error_that_names_no_value() {
        for bad in [
            "${A",
            "${1A}",
            "${}",
            "${ A}",
            "${A:-${B}",
            "${A:-x",
            "${A:?message}",
            "${A:=x}",
            "${A-x}",
            "x${A:-{unbalanced}",
            "${B:-${C:-${D:-${E:-${F:-${G:-${H:-${I:-${J:-x}}}}}}}}}",
        ] {
            let e = expand(bad, &env()).expect_err(bad);
            assert!(!e.contains("alpha") && !e.contains("message") && !e.contains("unbalanced"), "{bad}: {e}");
        }
        assert!(has_reference("a${B"));
        assert!(!has_reference("a$${B} $x"));
    }
}
