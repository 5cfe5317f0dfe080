use std::fmt::Write as _;

use serde::Serialize;
use serde::ser::{self, Serializer};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Keys longer than this many bytes are hashed.
pub const MAX_KEY_LEN: usize = 100;

/// A cache key for a call: `prefix:` followed by the canonical JSON of `args`, or
/// `prefix:sha256:<hex>`, the SHA-256 of that JSON, when the whole key would be longer
/// than [`MAX_KEY_LEN`] bytes (bytes, not characters: Redis and memory cost count
/// bytes).
///
/// Canonical means object keys sorted at every depth, whatever order the value's fields
/// or map entries come in (serde_json's `preserve_order` feature, if some crate turns
/// it on, does not change the key), so equal arguments always give the same key.
///
/// ```
/// use std::collections::HashMap;
/// use cortex_cache::key_for;
///
/// let a = HashMap::from([("b", 2), ("a", 1)]);
/// assert_eq!(key_for("user", &(42, &a))?, r#"user:[42,{"a":1,"b":2}]"#);
/// assert!(key_for("user", &"x".repeat(200))?.starts_with("user:sha256:"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Floats must be finite: JSON has no NaN or infinity, and serde_json writes them as
/// `null`, so `NaN`, `inf`, `-inf`, `None` and `()` would all share one key and a cached
/// `fn(f64)` would answer a call with `-inf` from the entry stored for `inf`. A
/// non-finite `f64` or `f32` anywhere in `args` (a field, an element, a map key or
/// value, at any depth) is refused instead; finite floats keep their keys.
///
/// ```
/// use cortex_cache::{Error, key_for};
///
/// assert_eq!(key_for("area", &2.5)?, "area:2.5");
/// let err = key_for("area", &(1, f64::NEG_INFINITY)).unwrap_err();
/// assert!(matches!(&err, Error::Serde { key, .. } if key == "area"));
/// assert!(std::error::Error::source(&err).unwrap().to_string().contains("-inf"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Serde`] (with the prefix as key) when `args` does not serialize to JSON,
/// e.g. a map with non-string keys, or holds a non-finite float (its source names the
/// value: `NaN`, `inf` or `-inf`).
pub fn key_for(prefix: &str, args: &impl Serialize) -> Result<String> {
    let serde_error = |source| Error::Serde {
        key: prefix.to_owned(),
        source,
    };
    // A walk that builds nothing: serde_json's own serializer has already turned a
    // non-finite float into `null` by the time the `Value` could be looked at.
    args.serialize(FiniteFloats).map_err(serde_error)?;
    let value = serde_json::to_value(args).map_err(serde_error)?;
    let mut key = String::with_capacity(prefix.len() + 64);
    key.push_str(prefix);
    key.push(':');
    cortex_support::json::write_canonical(&value, &mut key);
    if key.len() <= MAX_KEY_LEN {
        return Ok(key);
    }
    let digest = Sha256::digest(&key.as_bytes()[prefix.len() + 1..]);
    let mut hashed = String::with_capacity(prefix.len() + 8 + 64);
    hashed.push_str(prefix);
    hashed.push_str(":sha256:");
    for b in digest.iter() {
        // Writing to a String cannot fail.
        let _ = write!(hashed, "{b:02x}");
    }
    Ok(hashed)
}

/// A serializer that only walks a value and fails on the first non-finite float.
struct FiniteFloats;

/// What every step of [`FiniteFloats`] returns.
type Walk = std::result::Result<(), serde_json::Error>;

/// The error for a non-finite float, naming it (`NaN`, `inf`, `-inf`).
fn non_finite(v: f64) -> serde_json::Error {
    ser::Error::custom(format_args!(
        "the float {v} has no JSON form (it would be written as null, the key of None); \
         cache keys take finite floats only"
    ))
}

/// Scalars other than floats pass: serde_json judges them when it builds the value.
macro_rules! pass {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Walk { Ok(()) })*
    };
}

impl Serializer for FiniteFloats {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    pass!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_f32(self, v: f32) -> Walk {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Walk {
        if v.is_finite() {
            Ok(())
        } else {
            Err(non_finite(v))
        }
    }

    fn serialize_none(self) -> Walk {
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Walk {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Walk {
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Walk {
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Walk {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Walk {
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> std::result::Result<Self, serde_json::Error> {
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> std::result::Result<Self, serde_json::Error> {
        Ok(self)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self, serde_json::Error> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self, serde_json::Error> {
        Ok(self)
    }

    fn serialize_map(self, _: Option<usize>) -> std::result::Result<Self, serde_json::Error> {
        Ok(self)
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self, serde_json::Error> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self, serde_json::Error> {
        Ok(self)
    }
}

/// The compound parts: every element, key and value is walked in turn.
macro_rules! walk_compound {
    ($($trait:ident :: $method:ident),* $(,)?) => {
        $(impl ser::$trait for FiniteFloats {
            type Ok = ();
            type Error = serde_json::Error;

            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Walk {
                value.serialize(FiniteFloats)
            }

            fn end(self) -> Walk {
                Ok(())
            }
        })*
    };
}

walk_compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl ser::SerializeMap for FiniteFloats {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Walk {
        key.serialize(FiniteFloats)
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Walk {
        value.serialize(FiniteFloats)
    }

    fn end(self) -> Walk {
        Ok(())
    }
}

/// Struct fields, plain and in a variant.
macro_rules! walk_fields {
    ($($trait:ident),* $(,)?) => {
        $(impl ser::$trait for FiniteFloats {
            type Ok = ();
            type Error = serde_json::Error;

            fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, value: &T) -> Walk {
                value.serialize(FiniteFloats)
            }

            fn end(self) -> Walk {
                Ok(())
            }
        })*
    };
}

walk_fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    /// Bounded CI time and no regression files written into the source tree.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Arguments as callers pass them: ids, names, optional filters, lists and maps.
    #[derive(Debug, Clone, PartialEq, serde::Serialize)]
    enum Args {
        Id(i64),
        Name(String),
        Pair(Option<u32>, String),
        List(Vec<String>),
        Map(BTreeMap<String, i32>),
    }

    fn args() -> impl Strategy<Value = Args> {
        prop_oneof![
            any::<i64>().prop_map(Args::Id),
            any::<String>().prop_map(Args::Name),
            (any::<Option<u32>>(), ".{0,8}").prop_map(|(a, b)| Args::Pair(a, b)),
            proptest::collection::vec(".{0,6}", 0..6).prop_map(Args::List),
            proptest::collection::btree_map(".{0,6}", any::<i32>(), 0..6).prop_map(Args::Map),
        ]
    }

    /// The key's shape: the prefix, then either the JSON in full (within the length
    /// limit) or its SHA-256 in hex.
    fn check_shape(prefix: &str, key: &str) -> std::result::Result<(), TestCaseError> {
        let rest = key
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(|| TestCaseError::fail(format!("{key:?} lacks {prefix:?}:")))?;
        if let Some(hex) = rest.strip_prefix("sha256:") {
            prop_assert_eq!(hex.len(), 64);
            prop_assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{key:?}");
        } else {
            prop_assert!(key.len() <= MAX_KEY_LEN, "{key:?}");
            // JSON escapes control characters below U+0020.
            prop_assert!(!rest.chars().any(|c| c < ' '), "{key:?}");
            serde_json::from_str::<serde_json::Value>(rest)
                .map_err(|e| TestCaseError::fail(format!("{rest:?}: {e}")))?;
        }
        Ok(())
    }

    /// serde_json writes NaN and both infinities as `null`, which would give them one
    /// key with `None` and `()`: a cached `fn(f64)` would answer `-inf` from the entry
    /// of `inf`. They are refused instead, by name, at any depth.
    #[test]
    fn non_finite_floats_are_refused_by_name() {
        for (x, name) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            for err in [
                key_for("p", &x),
                key_for("p", &(1, vec![Some(x)])),
                key_for("p", &BTreeMap::from([("k", x)])),
                key_for("p", &(x as f32)),
            ]
            .map(|r| r.expect_err("a non-finite float is refused"))
            {
                match &err {
                    Error::Serde { key, source } => {
                        assert_eq!(key, "p");
                        let text = source.to_string();
                        assert!(text.contains(name), "{text:?} does not name {name}");
                    }
                    other => panic!("{other:?} is not Error::Serde"),
                }
                assert!(!err.is_retryable());
            }
        }
        assert_eq!(key_for("p", &None::<u8>).unwrap(), "p:null");
        assert_eq!(key_for("p", &()).unwrap(), "p:null");
        // Finite floats keep their keys, -0.0 apart from 0.0.
        assert_eq!(key_for("p", &1.5f64).unwrap(), "p:1.5");
        assert_eq!(key_for("p", &-0.0f64).unwrap(), "p:-0.0");
        assert_eq!(key_for("p", &0.0f64).unwrap(), "p:0.0");
        assert_eq!(
            key_for("p", &f64::MAX).unwrap(),
            format!("p:{}", serde_json::json!(f64::MAX))
        );
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_arguments_build_a_well_formed_key(prefix in ".{0,40}", a in args()) {
            let key = key_for(&prefix, &a).map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_shape(&prefix, &key)?;
            // The same arguments give the same key, every time.
            prop_assert_eq!(key_for(&prefix, &a).ok(), Some(key));
        }

        #[test]
        fn distinct_arguments_build_distinct_keys(
            prefix in "[a-zA-Z0-9_.-]{0,20}",
            a in args(),
            b in args(),
        ) {
            let (ka, kb) = (key_for(&prefix, &a).ok(), key_for(&prefix, &b).ok());
            prop_assert!(ka.is_some() && kb.is_some());
            prop_assert_eq!(a == b, ka == kb, "{:?} and {:?} gave {:?} and {:?}", a, b, ka, kb);
        }

        #[test]
        fn distinct_prefixes_without_a_colon_build_distinct_keys(
            p in "[^:]{0,20}",
            q in "[^:]{0,20}",
            a in args(),
        ) {
            let (kp, kq) = (key_for(&p, &a).ok(), key_for(&q, &a).ok());
            prop_assert_eq!(p == q, kp == kq, "{:?} and {:?} gave {:?}", p, q, kp);
        }

        #[test]
        fn two_floats_share_a_key_only_when_equal(x in any::<f64>(), y in any::<f64>()) {
            let (kx, ky) = (key_for("f", &x), key_for("f", &y));
            prop_assert_eq!(kx.is_ok(), x.is_finite(), "{:?}: {:?}", x, kx);
            prop_assert_eq!(ky.is_ok(), y.is_finite(), "{:?}: {:?}", y, ky);
            if let (Ok(kx), Ok(ky)) = (kx, ky) {
                prop_assert_eq!(x.to_bits() == y.to_bits(), kx == ky, "{:?} {:?}", x, y);
            }
        }

        #[test]
        fn map_order_does_not_change_the_key(
            m in proptest::collection::hash_map(".{0,6}", any::<i32>(), 0..8),
        ) {
            let sorted: BTreeMap<_, _> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let reversed: HashMap<_, _> = m.into_iter().collect();
            prop_assert_eq!(key_for("p", &sorted).ok(), key_for("p", &reversed).ok());
        }
    }
}
