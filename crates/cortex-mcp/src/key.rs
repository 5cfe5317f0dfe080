//! Cache keys of cacheable calls: the method, the name and the arguments as canonical
//! JSON (object keys sorted at every depth), so `{"a":1,"b":2}` and `{"b":2,"a":1}`
//! share an entry whatever order the caller built them in.

use serde_json::{Map, Value};

/// The key of a tool call.
pub(crate) fn tool_key(tool: &str, args: &Map<String, Value>) -> String {
    let mut key = String::with_capacity(8 + tool.len() + 16 * args.len());
    key.push_str("tool\0");
    key.push_str(tool);
    key.push('\0');
    cortex_support::json::write_object(args, &mut key);
    key
}

/// The key of a resource read.
pub(crate) fn resource_key(uri: &str) -> String {
    let mut key = String::with_capacity(9 + uri.len());
    key.push_str("resource\0");
    key.push_str(uri);
    key
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
