//! Canonical JSON: object keys sorted at every depth, so equal values give equal text
//! whatever order their fields or map entries came in (also with serde_json's
//! `preserve_order` feature on, which some crate in a build may turn on).
//!
//! ```
//! use serde_json::json;
//! use cortex_support::json::canonical;
//!
//! assert_eq!(canonical(&json!({"b": [2, {"d": 1, "c": 0}], "a": "x"})),
//!            r#"{"a":"x","b":[2,{"c":0,"d":1}]}"#);
//! ```

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// The canonical JSON text of `value`.
pub fn canonical(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_canonical(value, &mut out);
    out
}

/// Append the canonical JSON text of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => write_object(map, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_str(s, out),
        // Numbers, booleans and null print canonically already.
        other => {
            // Writing to a String cannot fail.
            let _ = write!(out, "{other}");
        }
    }
}

/// Append the canonical JSON text of an object to `out`.
pub fn write_object(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(k, out);
        out.push(':');
        write_canonical(v, out);
    }
    out.push('}');
}

fn write_str(s: &str, out: &mut String) {
    if s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        // Rare: let serde_json write the escapes.
        let _ = write!(out, "{}", Value::from(s));
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_does_not_matter_and_escapes_match_serde_json() {
        let a = json!({"a": 1, "b": {"y": [1, "x\"\n"], "x": null}});
        let b = json!({"b": {"x": null, "y": [1, "x\"\n"]}, "a": 1});
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), a.to_string());
        assert_ne!(canonical(&json!({"a": "1"})), canonical(&json!({"a": 1})));
    }
}
