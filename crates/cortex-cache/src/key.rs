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
