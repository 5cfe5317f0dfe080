use std::fmt::Write as _;

use serde::Serialize;
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
/// # Errors
/// [`Error::Serde`] (with the prefix as key) when `args` does not serialize to JSON,
/// e.g. a map with non-string keys.
pub fn key_for(prefix: &str, args: &impl Serialize) -> Result<String> {
    let value = serde_json::to_value(args).map_err(|source| Error::Serde {
        key: prefix.to_owned(),
        source,
    })?;
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
        fn map_order_does_not_change_the_key(
            m in proptest::collection::hash_map(".{0,6}", any::<i32>(), 0..8),
        ) {
            let sorted: BTreeMap<_, _> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let reversed: HashMap<_, _> = m.into_iter().collect();
            prop_assert_eq!(key_for("p", &sorted).ok(), key_for("p", &reversed).ok());
        }
    }
}
