//! Test only: every key the parser accepts is documented in docs/configuration.md, and every key that page
//! documents is one the parser accepts. The keys come from the raw serde types themselves: a probing
//! deserializer walks `RawConfig::deserialize`, answering every struct with all its fields, every sequence
//! with one element and every map with one entry, and records each field's path
//! (`tenants.<name>.limits[].per`). A key added to `raw.rs` is therefore found without a list to keep.

use super::raw::RawConfig;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug)]
struct ProbeError(String);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ProbeError(msg.to_string())
    }
}

type Keys = RefCell<BTreeSet<String>>;

/// How the docs name a map's entry, by the map's key.
fn placeholder(map: &str) -> &'static str {
    match map.rsplit('.').next().unwrap_or_default() {
        "tenants" => "<name>",
        "countries" => "<country>",
        "test_numbers" => "<number>",
        _ => "<key>",
    }
}

struct Probe<'a> {
    path: String,
    keys: &'a Keys,
}

impl<'a> Probe<'a> {
    fn at(&self, path: String) -> Probe<'a> {
        Probe { path, keys: self.keys }
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = ProbeError;

    /// Untyped values (`Scalar`, a limit's `key`) get a word both read: `phone`.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_str("phone")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_bool(false)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_u64(1)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_u64(1)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_u64(1)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_u64(1)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_f64(0.5)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_some(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        let path = format!("{}[]", self.path);
        visitor.visit_seq(OneElement(Some(self.at(path))))
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        let name = placeholder(&self.path);
        let path = format!("{}.{name}", self.path);
        visitor.visit_map(Fields { fields: vec![name], value: self.at(path), prefix_fields: false })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_map(Fields { fields: fields.to_vec(), value: self, prefix_fields: true })
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u128 f32 char str string bytes byte_buf unit unit_struct newtype_struct tuple
        tuple_struct enum identifier ignored_any
    }
}

struct OneElement<'a>(Option<Probe<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = ProbeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, ProbeError> {
        self.0.take().map(|probe| seed.deserialize(probe)).transpose()
    }
}

/// A struct's fields (each recorded as `path.field`) or a map's one placeholder entry (`path.<name>`).
struct Fields<'a> {
    fields: Vec<&'static str>,
    value: Probe<'a>,
    prefix_fields: bool,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = ProbeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, ProbeError> {
        let Some(field) = self.fields.first() else { return Ok(None) };
        seed.deserialize(IntoDeserializer::<ProbeError>::into_deserializer(*field)).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ProbeError> {
        let field = self.fields.remove(0);
        let probe = if self.prefix_fields {
            let path =
                if self.value.path.is_empty() { field.to_owned() } else { format!("{}.{field}", self.value.path) };
            self.value.keys.borrow_mut().insert(path.clone());
            self.value.at(path)
        } else {
            self.value.at(self.value.path.clone())
        };
        seed.deserialize(probe)
    }
}

/// Every key path the parser accepts, `server.listen` to `tenants.<name>.limits[].per`.
pub(crate) fn accepted_keys() -> BTreeSet<String> {
    let keys = Keys::default();
    RawConfig::deserialize(Probe { path: String::new(), keys: &keys }).expect("the probe answers every type");
    keys.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documented() -> BTreeSet<String> {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
        // The reference table's rows: "| `key.path` | type | default | meaning |".
        page.lines()
            .filter_map(|line| line.strip_prefix("| `")?.split_once("` |").map(|(key, _)| key.to_owned()))
            .collect()
    }

    #[test]
    fn the_probe_finds_nested_keys() {
        let keys = accepted_keys();
        for key in [
            "server.listen",
            "limits_backend.sentinel.master",
            "tenants.<name>.tencent.templates[].usageType",
            "tenants.<name>.limits[].per",
            "tenants.<name>.spend_caps.countries.<country>.daily_fee",
            "tenants.<name>.test_numbers",
        ] {
            assert!(keys.contains(key), "{key} not among {keys:?}");
        }
    }

    #[test]
    fn every_accepted_key_has_a_row_in_docs_configuration() {
        let rows = documented();
        let missing: Vec<_> = accepted_keys().into_iter().filter(|key| !rows.contains(key)).collect();
        assert!(missing.is_empty(), "docs/configuration.md has no row for {missing:?}");
    }

    #[test]
    fn every_row_of_docs_configuration_is_an_accepted_key() {
        let rows = documented();
        let keys = accepted_keys();
        let unknown: Vec<_> = rows.iter().filter(|row| !keys.contains(*row)).collect();
        assert!(unknown.is_empty(), "docs/configuration.md documents keys the parser refuses: {unknown:?}");
    }
}
