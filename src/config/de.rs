//! A serde `Deserializer` over the checked YAML node tree ([`super::yaml`]): the raw config types come from
//! here, not from a YAML library's own deserializer, so that
//!
//! - every unknown key is reported, not just the first: a struct's field list (serde passes it to
//!   `deserialize_struct`) is the schema, and keys outside it are recorded and skipped, whatever the struct;
//! - `${VAR}` references are expanded in every string value as it is read ([`super::interp`]), and refused
//!   in keys, so no `${` can reach a compiled value whichever field it sits in;
//! - every error carries the key path and line of the node it is about, and never the value (it may be a
//!   secret): `invalid type: string, expected a sequence`.
//!
//! Plain scalars resolve as in YAML 1.2's core schema (as serde_yaml 0.9 did): `~`/`null`/empty, `true`/
//! `false`, integers (`0x`, `0o`, `0b`), floats; quoted and block scalars are text. A text field takes any
//! scalar as written (`sdkAppId: 1400006666` reads `"1400006666"`). An empty value reads as an empty list or
//! mapping where one is expected.

use super::interp::{expand, has_literal_default, has_reference, Env};
use super::yaml::{join, Document, Kind, Mark, NodeId, Problem, Style};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
use std::cell::RefCell;
use std::fmt;

/// A deserialization error: the message, and where (filled in by the innermost node that saw it).
#[derive(Debug)]
pub(super) struct Error {
    message: String,
    at: Option<(Mark, String)>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error { message: message.to_string(), at: None }
    }

    // serde's own messages quote the value (`invalid type: string "hunter2"`); these name its kind only.
    fn invalid_type(unexpected: Unexpected, expected: &dyn de::Expected) -> Self {
        Error::custom(format_args!("invalid type: {}, expected {expected}", kind(&unexpected)))
    }

    fn invalid_value(unexpected: Unexpected, expected: &dyn de::Expected) -> Self {
        Error::custom(format_args!("invalid value: {}, expected {expected}", kind(&unexpected)))
    }
}

fn kind<'u>(unexpected: &Unexpected<'u>) -> &'u str {
    match unexpected {
        Unexpected::Bool(_) => "boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "integer",
        Unexpected::Float(_) => "floating point",
        Unexpected::Char(_) => "character",
        Unexpected::Str(_) => "string",
        Unexpected::Bytes(_) => "bytes",
        Unexpected::Unit => "null",
        Unexpected::Option => "optional value",
        Unexpected::NewtypeStruct => "newtype struct",
        Unexpected::Seq => "sequence",
        Unexpected::Map => "mapping",
        Unexpected::Enum => "enum",
        Unexpected::UnitVariant => "unit variant",
        Unexpected::NewtypeVariant => "newtype variant",
        Unexpected::TupleVariant => "tuple variant",
        Unexpected::StructVariant => "struct variant",
        Unexpected::Other(other) => other,
    }
}

/// One deserialization of a document: the tree, the environment, and the problems recorded on the way that
/// do not stop it (unknown keys, unset variables).
pub(super) struct Context<'a> {
    doc: &'a Document,
    env: &'a dyn Env,
    problems: RefCell<Vec<Problem>>,
    /// Secrets written with a literal default (`${VAR:-literal}`): refused unless their tenant only dry-runs.
    literal_secrets: RefCell<Vec<Problem>>,
}

/// Keys whose values are secrets (the last segment of a key path, without its index).
const SECRET_KEYS: [&str; 9] = [
    "accessKeySecret",
    "authToken",
    "secretKey",
    "secret",
    "status_secret",
    "logto_webhook_secret",
    "password",
    "tokens",
    "admin_tokens",
];

fn is_secret_path(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or_default();
    SECRET_KEYS.contains(&last.split('[').next().unwrap_or_default())
}

impl<'a> Context<'a> {
    pub(super) fn new(doc: &'a Document, env: &'a dyn Env) -> Self {
        Context { doc, env, problems: RefCell::new(Vec::new()), literal_secrets: RefCell::new(Vec::new()) }
    }

    /// Secrets written with a literal default, as problems at their keys.
    pub(crate) fn literal_secrets(&self) -> Vec<Problem> {
        self.literal_secrets.borrow().clone()
    }

    /// Deserializes the whole document. The error is the one that stopped it (a type error).
    pub(crate) fn deserialize<T: DeserializeOwned>(&'a self) -> Result<T, Problem> {
        let root = self.doc.root();
        T::deserialize(NodeDe { cx: self, id: root, path: String::new(), key: false }).map_err(|e| {
            let (mark, path) = e.at.unwrap_or((self.doc.node(root).mark, String::new()));
            Problem { mark: Some(mark), path, message: e.message }
        })
    }

    /// The problems recorded while deserializing.
    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems.into_inner()
    }

    fn record(&self, mark: Mark, path: String, message: String) {
        self.problems.borrow_mut().push(Problem { mark: Some(mark), path, message });
    }
}

/// One node to deserialize, at its key path. `key`: the node is a mapping key (never interpolated).
struct NodeDe<'a> {
    cx: &'a Context<'a>,
    id: NodeId,
    path: String,
    key: bool,
}

impl<'a> NodeDe<'a> {
    fn mark(&self) -> Mark {
        self.cx.doc.node(self.id).mark
    }

    fn kind(&self) -> &'a Kind {
        let doc: &'a Document = self.cx.doc;
        &doc.node(doc.resolve(self.id)).kind
    }

    /// Gives an error without a place this node's place.
    fn locate(&self, mut e: Error) -> Error {
        if e.at.is_none() {
            e.at = Some((self.mark(), self.path.clone()));
        }
        e
    }

    /// A plain untagged scalar's text, if this is one.
    fn plain(&self) -> Option<&'a str> {
        match self.kind() {
            Kind::Scalar { value, style: Style::Plain } => Some(value),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        self.plain().is_some_and(|v| v.is_empty() || matches!(v, "~" | "null" | "Null" | "NULL"))
    }

    /// A scalar as text, `${VAR}` expanded (values) or refused (keys). A failed expansion is recorded and
    /// reads as empty text, so deserialization goes on and finds the other problems.
    fn text(&self) -> Option<String> {
        let Kind::Scalar { value, .. } = self.kind() else { return None };
        if self.key {
            if has_reference(value) {
                self.cx.record(self.mark(), self.path.clone(), "`${…}` is not expanded in keys".into());
            }
            return Some(value.clone());
        }
        if is_secret_path(&self.path) && has_literal_default(value) {
            self.cx.literal_secrets.borrow_mut().push(Problem {
                mark: Some(self.mark()),
                path: self.path.clone(),
                message: "a secret must not have a literal default (`${VAR:-text}`): the text would be the secret \
                          whenever VAR is unset (allowed only for a tenant whose providers all have dry_run: true)"
                    .into(),
            });
        }
        match expand(value, self.cx.env) {
            Ok(text) => Some(text),
            Err(message) => {
                self.cx.record(self.mark(), self.path.clone(), message);
                Some(String::new())
            }
        }
    }

    /// What this node is, for a type error.
    fn unexpected(&self) -> Unexpected<'static> {
        match self.kind() {
            Kind::Seq(_) => Unexpected::Seq,
            Kind::Map(_) => Unexpected::Map,
            Kind::Scalar { style: Style::Text, .. } | Kind::Alias(_) => Unexpected::Str(""),
            Kind::Scalar { value, style: Style::Plain } => {
                if self.is_null() {
                    Unexpected::Unit
                } else if parse_bool(value).is_some() {
                    Unexpected::Bool(false)
                } else if parse_unsigned(value).is_some() || parse_signed(value).is_some() {
                    Unexpected::Unsigned(0)
                } else if parse_float(value).is_some() {
                    Unexpected::Float(0.0)
                } else {
                    Unexpected::Str("")
                }
            }
        }
    }

    fn invalid<T>(&self, expected: &dyn de::Expected) -> Result<T, Error> {
        let mut e: Error = de::Error::invalid_type(self.unexpected(), expected);
        if matches!(self.kind(), Kind::Scalar { value, .. } if has_reference(value)) {
            e.message.push_str(" (`${…}` is expanded in text values only)");
        }
        Err(e)
    }

    fn child(&self, id: NodeId, path: String, key: bool) -> NodeDe<'a> {
        NodeDe { cx: self.cx, id, path, key }
    }

    fn entries(&self, fields: Option<&'static [&'static str]>) -> Entries<'a> {
        let entries: &'a [(NodeId, NodeId)] = match self.kind() {
            Kind::Map(entries) => entries,
            _ => &[],
        };
        Entries { cx: self.cx, entries, parent: self.path.clone(), fields, value: None }
    }

    fn items(&self) -> Items<'a> {
        let items: &'a [NodeId] = match self.kind() {
            Kind::Seq(items) => items,
            _ => &[],
        };
        Items { cx: self.cx, items, parent: self.path.clone(), next: 0 }
    }
}

macro_rules! via {
    ($($method:ident => $target:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.$target(visitor)
        })*
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match (self.kind(), self.plain()) {
            (Kind::Seq(_), _) => visitor.visit_seq(self.items()),
            (Kind::Map(_), _) => visitor.visit_map(self.entries(None)),
            (_, Some(_)) if self.is_null() => visitor.visit_unit(),
            (_, Some(v)) if parse_bool(v).is_some() => visitor.visit_bool(parse_bool(v).unwrap_or_default()),
            (_, Some(v)) if parse_unsigned(v).is_some() => visitor.visit_u64(parse_unsigned(v).unwrap_or_default()),
            (_, Some(v)) if parse_signed(v).is_some() => visitor.visit_i64(parse_signed(v).unwrap_or_default()),
            (_, Some(v)) if parse_float(v).is_some() => visitor.visit_f64(parse_float(v).unwrap_or_default()),
            _ => visitor.visit_string(self.text().unwrap_or_default()),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match self.plain().and_then(parse_bool) {
            Some(b) => visitor.visit_bool(b),
            None => self.invalid(&visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match self.plain().and_then(parse_signed) {
            Some(n) => visitor.visit_i64(n),
            None => self.invalid(&visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match self.plain().and_then(parse_unsigned) {
            Some(n) => visitor.visit_u64(n),
            None => self.invalid(&visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let plain = self.plain();
        let number = plain.and_then(parse_float).or_else(|| plain.and_then(parse_signed).map(|n| n as f64));
        let result = match number {
            Some(n) => visitor.visit_f64(n),
            None => self.invalid(&visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    via! {
        deserialize_i8 => deserialize_i64,
        deserialize_i16 => deserialize_i64,
        deserialize_i32 => deserialize_i64,
        deserialize_u8 => deserialize_u64,
        deserialize_u16 => deserialize_u64,
        deserialize_u32 => deserialize_u64,
        deserialize_f32 => deserialize_f64,
        deserialize_char => deserialize_str,
        deserialize_string => deserialize_str,
        deserialize_identifier => deserialize_str,
        deserialize_bytes => deserialize_str,
        deserialize_byte_buf => deserialize_str,
        deserialize_unit => deserialize_null,
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match self.text() {
            Some(text) => visitor.visit_string(text),
            None => self.invalid(&visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            return visitor.visit_none().map_err(|e| self.locate(e));
        }
        let (mark, path) = (self.mark(), self.path.clone());
        visitor.visit_some(self).map_err(|mut e| {
            e.at.get_or_insert((mark, path));
            e
        })
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_null(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        let (mark, path) = (self.mark(), self.path.clone());
        visitor.visit_newtype_struct(self).map_err(|mut e| {
            e.at.get_or_insert((mark, path));
            e
        })
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match self.kind() {
            Kind::Seq(_) => visitor.visit_seq(self.items()),
            _ if self.plain().is_some_and(str::is_empty) => visitor.visit_seq(self.items()),
            _ => self.invalid(&visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match self.kind() {
            Kind::Map(_) => visitor.visit_map(self.entries(None)),
            _ if self.plain().is_some_and(str::is_empty) => visitor.visit_map(self.entries(None)),
            _ => self.invalid(&visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    /// The struct's field names are its schema: other keys are recorded as unknown and never reach it.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let result = match self.kind() {
            Kind::Map(_) => visitor.visit_map(self.entries(Some(fields))),
            _ if self.plain().is_some_and(str::is_empty) => visitor.visit_map(self.entries(Some(fields))),
            _ => self.invalid(&visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let result = match self.kind() {
            Kind::Scalar { .. } => {
                let text = self.text().unwrap_or_default();
                visitor.visit_enum(IntoDeserializer::<Error>::into_deserializer(text))
            }
            Kind::Map(entries) if entries.len() == 1 => {
                let (key, value) = entries[0];
                let path = join(&self.path, self.cx.doc.scalar(key).unwrap_or("?"));
                visitor.visit_enum(Variant {
                    key: self.child(key, path.clone(), true),
                    value: self.child(value, path, false),
                })
            }
            _ => self.invalid(&visitor),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

impl NodeDe<'_> {
    fn deserialize_null<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = if self.is_null() { visitor.visit_unit() } else { self.invalid(&visitor) };
        result.map_err(|e| self.locate(e))
    }
}

/// A mapping's entries; with `fields` (a struct), keys outside them are recorded and skipped.
struct Entries<'a> {
    cx: &'a Context<'a>,
    entries: &'a [(NodeId, NodeId)],
    parent: String,
    fields: Option<&'static [&'static str]>,
    value: Option<NodeDe<'a>>,
}

impl<'de, 'a> de::MapAccess<'de> for Entries<'a> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        while let Some((&(key, value), rest)) = self.entries.split_first() {
            self.entries = rest;
            let name = self.cx.doc.scalar(key).unwrap_or("?");
            let path = join(&self.parent, name);
            if let Some(fields) = self.fields.filter(|fields| !fields.contains(&name)) {
                let expected: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
                let message = format!("unknown key `{name}`, expected one of {}", expected.join(", "));
                self.cx.record(self.cx.doc.node(key).mark, path, message);
                continue;
            }
            self.value = Some(NodeDe { cx: self.cx, id: value, path: path.clone(), key: false });
            let key = NodeDe { cx: self.cx, id: key, path, key: true };
            return seed.deserialize(key).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let value = self.value.take().ok_or_else(|| de::Error::custom("a value without its key"))?;
        seed.deserialize(value)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Items<'a> {
    cx: &'a Context<'a>,
    items: &'a [NodeId],
    parent: String,
    next: usize,
}

impl<'de> de::SeqAccess<'de> for Items<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let Some((&id, rest)) = self.items.split_first() else { return Ok(None) };
        self.items = rest;
        let path = format!("{}[{}]", self.parent, self.next);
        self.next += 1;
        seed.deserialize(NodeDe { cx: self.cx, id, path, key: false }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// `{ variant: value }`.
struct Variant<'a> {
    key: NodeDe<'a>,
    value: NodeDe<'a>,
}

impl<'de, 'a> de::EnumAccess<'de> for Variant<'a> {
    type Error = Error;
    type Variant = NodeDe<'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, NodeDe<'a>), Error> {
        Ok((seed.deserialize(self.key)?, self.value))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

// YAML 1.2 core schema resolution of plain scalars, as serde_yaml 0.9 did it.

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Leading zeros followed by digits are text in YAML 1.2 (`0123`).
fn digits_but_not_number(v: &str) -> bool {
    let v = v.strip_prefix(['-', '+']).unwrap_or(v);
    v.len() > 1 && v.starts_with('0') && v[1..].bytes().all(|b| b.is_ascii_digit())
}

/// `0x`, `0o` and `0b` integers: None without such a prefix, Some(None) when the digits are not valid.
fn parse_radix(v: &str) -> Option<Option<u64>> {
    let (digits, radix) = if let Some(d) = v.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = v.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = v.strip_prefix("0b") {
        (d, 2)
    } else {
        return None;
    };
    Some(if digits.starts_with(['+', '-']) { None } else { u64::from_str_radix(digits, radix).ok() })
}

fn parse_unsigned(v: &str) -> Option<u64> {
    let unsigned = v.strip_prefix('+').unwrap_or(v);
    if unsigned.starts_with(['+', '-']) || digits_but_not_number(v) {
        return None;
    }
    match parse_radix(unsigned) {
        Some(n) => n,
        None => unsigned.parse().ok(),
    }
}

fn parse_signed(v: &str) -> Option<i64> {
    if let Some(n) = parse_unsigned(v) {
        return i64::try_from(n).ok();
    }
    let magnitude = v.strip_prefix('-')?;
    if magnitude.starts_with(['+', '-']) || digits_but_not_number(v) {
        return None;
    }
    let n = match parse_radix(magnitude) {
        Some(n) => n?,
        None => magnitude.parse::<u64>().ok()?,
    };
    0i64.checked_sub_unsigned(n)
}

fn parse_float(v: &str) -> Option<f64> {
    if digits_but_not_number(v) {
        return None;
    }
    let unsigned = v.strip_prefix('+').unwrap_or(v);
    if unsigned.starts_with(['+', '-']) && v.starts_with('+') {
        return None;
    }
    match unsigned {
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // Rust also reads `inf`, `nan` and `infinity`, which YAML does not.
    if unsigned.bytes().any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E')) {
        return None;
    }
    unsigned.parse::<f64>().ok().filter(|f| f.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::{BTreeMap, HashMap};

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        name: String,
        #[serde(default)]
        count: Option<u32>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        items: Vec<Inner>,
        #[serde(default)]
        map: BTreeMap<String, String>,
        flag: Option<bool>,
    }

    fn read<T: DeserializeOwned>(text: &str) -> (Result<T, Problem>, Vec<Problem>) {
        let doc = Document::parse(text).unwrap();
        let env = HashMap::from([("SET".to_owned(), "value".to_owned())]);
        let cx = Context::new(&doc, &env);
        let result = cx.deserialize::<T>();
        (result, cx.into_problems())
    }

    #[test]
    fn every_unknown_key_is_recorded_and_skipped() {
        let text = "items:\n  - {name: a, cont: 1}\n  - {name: b, nmae: c}\nmap: {x: y}\nflg: true\n";
        let (result, problems) = read::<Outer>(text);
        let outer = result.unwrap();
        assert_eq!(outer.items[1], Inner { name: "b".into(), count: None });
        let found: Vec<_> = problems.iter().map(|p| (p.mark.unwrap().line, p.path.as_str())).collect();
        assert_eq!(found, vec![(2, "items[0].cont"), (3, "items[1].nmae"), (5, "flg")]);
        assert!(problems[0].message.starts_with("unknown key `cont`, expected one of `name`, `count`"));
    }

    #[test]
    fn type_errors_name_the_path_and_never_the_value() {
        let (result, _) = read::<Outer>("items:\n  - {name: a, count: hunter2}\n");
        let e = result.unwrap_err();
        assert_eq!((e.mark.unwrap().line, e.path.as_str()), (2, "items[0].count"));
        assert_eq!(e.message, "invalid type: string, expected u32");
        let (result, _) = read::<Outer>("items: 12345678901234567\n");
        assert_eq!(result.unwrap_err().message, "invalid type: integer, expected a sequence");
        let (result, _) = read::<Outer>("items:\n  - {name: a, count: 99999999999}\n");
        assert_eq!(result.unwrap_err().message, "invalid value: integer, expected u32");
        let (result, _) = read::<Outer>("map: {}\n");
        let e = result.unwrap_err();
        assert_eq!((e.path.as_str(), e.message.as_str()), ("", "missing field `items`"));
    }

    #[test]
    fn values_are_interpolated_and_keys_are_not() {
        let (result, problems) = read::<Outer>("items: [{name: \"${SET}-${UNSET:-d}\"}]\nmap: {\"${SET}\": x}\n");
        assert_eq!(result.unwrap().items[0].name, "value-d");
        assert_eq!(problems.len(), 1);
        assert_eq!(
            (problems[0].path.as_str(), problems[0].message.as_str()),
            ("map.${SET}", "`${…}` is not expanded in keys")
        );
        let (result, problems) = read::<Outer>("items: [{name: \"${UNSET}\"}]\n");
        assert_eq!(result.unwrap().items[0].name, "");
        assert_eq!(problems[0].message, "environment variable UNSET is not set");
        assert_eq!(problems[0].path, "items[0].name");
    }

    #[test]
    fn scalars_resolve_as_yaml_1_2() {
        let (r, _) = read::<Vec<u64>>("[1, +2, 0x10, 0o10, 0b10]");
        assert_eq!(r.unwrap(), vec![1, 2, 16, 8, 2]);
        let (r, _) = read::<Vec<i64>>("[-1, -0x10]");
        assert_eq!(r.unwrap(), vec![-1, -16]);
        let (r, _) = read::<Vec<String>>("[1, true, ~, 0123, 'q', 1.5]");
        assert_eq!(r.unwrap(), vec!["1", "true", "~", "0123", "q", "1.5"]);
        let (r, _) = read::<Vec<Option<bool>>>("[true, False, ~, null, ]");
        assert_eq!(r.unwrap(), vec![Some(true), Some(false), None, None]);
        let (r, _) = read::<Vec<u64>>("['1']");
        assert_eq!(r.unwrap_err().message, "invalid type: string, expected u64");
        let (r, _) = read::<Vec<f64>>("[1.5, .inf, 2]");
        assert_eq!(r.unwrap()[..1], [1.5]);
        for (text, float) in [("1e3", true), ("inf", false), ("0123", false), ("-1.5", true), ("+-1", false)] {
            assert_eq!(parse_float(text).is_some(), float, "{text}");
        }
        // An empty value is an empty list or mapping where one is expected.
        let (r, _) = read::<BTreeMap<String, Vec<String>>>("a:\nb: []\n");
        assert_eq!(r.unwrap()["a"], Vec::<String>::new());
    }

    #[test]
    fn aliases_read_their_anchor() {
        let (r, problems) = read::<BTreeMap<String, Vec<String>>>("a: &x [p, q]\nb: *x\n");
        assert_eq!(r.unwrap()["b"], vec!["p", "q"]);
        assert!(problems.is_empty());
    }
}
