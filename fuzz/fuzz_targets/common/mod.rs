//! Helpers shared by the fuzz targets.

use serde_json::Value;

/// `a` and `b` are equal JSON, with floating-point numbers allowed to differ in the
/// last bit or two. serde_json (without its `float_roundtrip` feature, which the
/// workspace does not turn on) parses some decimal numbers one unit in the last place
/// away from the nearest `f64`, so printing a parsed number and parsing it again can
/// move it by that much: `1.6666666e37` comes back as `1.6666666000000001e37`.
pub fn json_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x == y {
                return true;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => f64_close(x, y),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_close(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

/// Within two units in the last place (same sign), or equal.
pub fn f64_close(x: f64, y: f64) -> bool {
    x == y
        || (x.is_sign_negative() == y.is_sign_negative()
            && (x.to_bits() as i64 - y.to_bits() as i64).unsigned_abs() <= 2)
}
