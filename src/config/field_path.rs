//! Where a value sits in the plugin configuration, so that every error
//! names the field in full (`routes[2].scopes.write: ...`).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Where a section sits: "" at the top level, "routes[2]." in a rule.
#[derive(Clone, Copy)]
pub struct FieldPath<'a>(pub &'a str);

impl FieldPath<'_> {
    pub fn err(&self, name: &str, why: &str) -> String {
        format!("{}{name}: {why}", self.0)
    }

    /// A section's JSON read into its form; a missing section takes every
    /// default. (One JSON value type for every section keeps the module
    /// small: each typed form is read from it, not from the text.)
    pub fn read<T: DeserializeOwned>(&self, name: &str, v: Option<&Value>) -> Result<T, String> {
        let v = v.cloned().unwrap_or_else(|| Value::Object(Map::new()));
        serde_json::from_value(v).map_err(|e| self.err(name, &e.to_string()))
    }
}

pub fn absolute_path(at: FieldPath, field: &str, v: &str) -> Result<(), String> {
    if !v.starts_with('/') || v.contains(['?', '#']) || v.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(at.err(
            field,
            "must be an absolute path without query, spaces or control characters",
        ));
    }
    Ok(())
}
