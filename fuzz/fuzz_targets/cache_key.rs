//! The cache key builder `cortex_cache::key_for` on arbitrary prefixes and arguments.
//!
//! Properties, beyond "no panic":
//! - the key is `prefix:` then either the canonical JSON of the arguments (no control
//!   character below U+0020, at most `MAX_KEY_LEN` bytes in all) or `sha256:` and 64
//!   lowercase hex digits;
//! - the same arguments give the same key (deterministic);
//! - the key can be read back in one way only: for every `:` in the key, splitting
//!   there into (prefix', rest) where rest is itself a canonical JSON key body (or the
//!   `sha256:` form) must give back the input's prefix and JSON. A second reading would
//!   mean another (prefix, arguments) pair builds the same key: a collision;
//! - two different argument values under one prefix give different keys;
//! - two `f64` arguments give one key only when their bits are equal (`0.0` and `-0.0`
//!   give two); a non-finite one (`NaN`, `inf`, `-inf`) is refused with an error.
#![no_main]

use cortex_cache::{MAX_KEY_LEN, key_for};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};

/// A JSON value built from fuzz bytes, bounded in depth.
fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let pick = if depth == 0 {
        u.int_in_range(0..=5)?
    } else {
        u.int_in_range(0..=7)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(u.arbitrary()?),
        6 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array(
                (0..n)
                    .map(|_| value(u, depth - 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut m = Map::new();
            for _ in 0..n {
                m.insert(u.arbitrary()?, value(u, depth - 1)?);
            }
            Value::Object(m)
        }
    })
}

/// A float, the special values (non-finite, signed zeros) often.
fn float(u: &mut Unstructured<'_>) -> arbitrary::Result<f64> {
    Ok(match u.int_in_range(0..=7)? {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => 0.0,
        4 => -0.0,
        _ => u.arbitrary()?,
    })
}

#[derive(Debug)]
struct Input {
    prefix: String,
    a: Value,
    b: Value,
    x: f64,
    y: f64,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Input {
            prefix: u.arbitrary()?,
            a: value(u, 3)?,
            b: value(u, 3)?,
            x: float(u)?,
            y: float(u)?,
        })
    }
}

/// The readings of `key` as `prefix:body`: each (prefix, body) where body is a key body
/// `key_for` could have written.
fn readings(key: &str) -> Vec<(&str, &str)> {
    key.match_indices(':')
        .map(|(i, _)| (&key[..i], &key[i + 1..]))
        .filter(|(_, body)| is_body(body))
        .collect()
}

/// A body `key_for` writes: the canonical JSON of a value, or `sha256:<64 hex>`.
fn is_body(body: &str) -> bool {
    if let Some(hex) = body.strip_prefix("sha256:") {
        return hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    }
    serde_json::from_str::<Value>(body).is_ok_and(|v| cortex_support::json::canonical(&v) == body)
}

fn check(prefix: &str, args: &Value) -> String {
    let key = key_for(prefix, args).expect("a serde_json::Value always serializes");
    let body = key
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{key:?} does not start with {prefix:?}:"));
    let json = cortex_support::json::canonical(args);
    if let Some(hex) = body.strip_prefix("sha256:")
        && json != body
    {
        assert_eq!(hex.len(), 64, "{key:?}");
        assert!(
            hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{key:?}"
        );
        assert!(
            prefix.len() + 1 + json.len() > MAX_KEY_LEN,
            "hashed a short key {key:?}"
        );
    } else {
        assert_eq!(body, json, "{key:?}");
        assert!(key.len() <= MAX_KEY_LEN, "long key not hashed: {key:?}");
        assert!(
            !body.chars().any(|c| c < ' '),
            "raw control character in {key:?}"
        );
    }
    assert_eq!(
        key_for(prefix, args).ok().as_deref(),
        Some(key.as_str()),
        "not deterministic"
    );
    // One reading only: the one the key was built from.
    for (p, b) in readings(&key) {
        assert!(
            p == prefix && b == body,
            "collision: key {key:?} from ({prefix:?}, {json}) also reads as ({p:?}, {b})"
        );
    }
    key
}

/// Keys of two floats, as a cached `fn(f64)` would build them.
fn check_floats(prefix: &str, x: f64, y: f64) {
    // A non-finite float has no key of its own (JSON writes it as null): refused.
    let (kx, ky) = match (key_for(prefix, &x), key_for(prefix, &y)) {
        (Ok(kx), Ok(ky)) => (kx, ky),
        (rx, ry) => {
            assert_eq!(rx.is_err(), !x.is_finite(), "{x:?}: {rx:?}");
            assert_eq!(ry.is_err(), !y.is_finite(), "{y:?}: {ry:?}");
            return;
        }
    };
    let same = x.to_bits() == y.to_bits();
    if kx == ky {
        assert!(same, "{x:?} and {y:?} share the key {kx:?}");
    } else {
        assert!(!same, "{x:?} gave {kx:?} and {ky:?}");
    }
}

fuzz_target!(|input: Input| {
    check_floats(&input.prefix, input.x, input.y);
    let ka = check(&input.prefix, &input.a);
    let kb = check(&input.prefix, &input.b);
    let same_json =
        cortex_support::json::canonical(&input.a) == cortex_support::json::canonical(&input.b);
    assert_eq!(
        same_json,
        ka == kb,
        "{:?} and {:?} gave {ka:?} and {kb:?}",
        input.a,
        input.b
    );
});
