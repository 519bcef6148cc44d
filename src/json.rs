//! JSON request bodies: decoding into a serde shape with an error that names the field at fault and never
//! echoes a value, shared by every door that reads JSON.

use crate::error::GatewayError;
use serde::de::DeserializeOwned;

/// Field names quoted in an error are cut to this many characters.
const MAX_SHORT_FIELD: usize = 64;

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest(message.into())
}

/// Deserializes with a message that names the field at fault and never echoes a value.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    // serde would read a JSON array positionally into a struct; only objects are accepted.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            return Err(invalid("body must be a JSON object"))
        }
        _ => return Err(invalid("body is not valid JSON")),
    }
    // The common case pays for no path tracking; a body that fails is read again for the message.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => invalid("body is not valid JSON"),
            serde_json::error::Category::Io => invalid("body could not be read"),
            serde_json::error::Category::Data => {
                let text = inner.to_string();
                if let Some(field) = text.strip_prefix("missing field `").and_then(|t| t.split('`').next()) {
                    let full = if path == "." { field.to_owned() } else { format!("{path}.{field}") };
                    invalid(format!("missing field `{full}`"))
                } else if text.starts_with("unknown field") {
                    invalid(format!("unknown field `{}`", truncate(&path, MAX_SHORT_FIELD)))
                } else if path == "." {
                    invalid("body must be a JSON object")
                } else {
                    invalid(format!("field `{path}` has the wrong type"))
                }
            }
        }
    })?;
    de.end().map_err(|_| invalid("body is not valid JSON"))?;
    Ok(value)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((cut, _)) => &s[..cut],
        None => s,
    }
}
