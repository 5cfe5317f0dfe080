//! Cache keys of cacheable calls: the method, the name and the arguments as canonical
//! JSON (object keys sorted at every depth), so `{"a":1,"b":2}` and `{"b":2,"a":1}`
//! share an entry whatever order the caller built them in.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// The key of a tool call.
pub(crate) fn tool_key(tool: &str, args: &Map<String, Value>) -> String {
    let mut key = String::with_capacity(8 + tool.len() + 16 * args.len());
    key.push_str("tool\0");
    key.push_str(tool);
    key.push('\0');
    write_object(&mut key, args);
    key
}

/// The key of a resource read.
pub(crate) fn resource_key(uri: &str) -> String {
    let mut key = String::with_capacity(9 + uri.len());
    key.push_str("resource\0");
    key.push_str(uri);
    key
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Object(map) => write_object(out, map),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::String(s) => write_str(out, s),
        // Numbers, booleans and null print canonically already.
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    // A no-op for serde_json's default sorted map; needed when `preserve_order` is on.
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, k);
        out.push(':');
        write_value(out, v);
    }
    out.push('}');
}

fn write_str(out: &mut String, s: &str) {
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

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn keys_ignore_argument_order_and_tell_values_apart() {
        let a = tool_key("t", &obj(json!({"a": 1, "b": {"y": [1, "x"], "x": null}})));
        let b = tool_key("t", &obj(json!({"b": {"x": null, "y": [1, "x"]}, "a": 1})));
        assert_eq!(a, b);
        assert_eq!(a, "tool\0t\0{\"a\":1,\"b\":{\"x\":null,\"y\":[1,\"x\"]}}");
        assert_ne!(
            a,
            tool_key(
                "t",
                &obj(json!({"a": "1", "b": {"x": null, "y": [1, "x"]}}))
            )
        );
        assert_ne!(
            a,
            tool_key("u", &obj(json!({"a": 1, "b": {"x": null, "y": [1, "x"]}})))
        );
        // A quote inside a string cannot forge another key.
        assert_ne!(
            tool_key("t", &obj(json!({"a": "1\",\"b\":\"2"}))),
            tool_key("t", &obj(json!({"a": "1", "b": "2"})))
        );
        assert_ne!(resource_key("x"), tool_key("x", &Map::new()));
    }
}
