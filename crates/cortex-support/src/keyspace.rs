//! Who owns which Redis keys.
//!
//! Several components share one Redis: a cache clears its namespace with
//! `SCAN MATCH <prefix>*`, a durable queue trims its streams and deletes its task
//! records. They must never reach each other's keys, so every component owns a prefix
//! that ends in the separator `:`, and every prefix a component is configured with is
//! checked here before it is used:
//!
//! - it ends in `:`, so `app:` cannot match `app2:…`;
//! - it holds no whitespace or control character (Redis accepts them, but they make
//!   keys unreadable in `redis-cli` and logs);
//! - where it meets the Cortex root `cortex:`, it lies inside its owner's reserved
//!   prefix ([`Component::reserved_prefix`]): a cache may be `cortex:cache:users:` or
//!   `myapp:`, never `cortex:` (a prefix of the durable queue's `cortex:tasks:…`) or
//!   `cortex:tasks:x:`.
//!
//! The whole `cortex:` tree is reserved for Cortex components, so one added later gets
//! its own `cortex:<name>:` without breaking anyone's configuration.
//!
//! ```
//! use cortex_support::keyspace::{Component, check_prefix};
//!
//! assert!(check_prefix(Component::Cache, "cortex:cache:").is_ok());
//! assert!(check_prefix(Component::Cache, "sessions:").is_ok());
//! // Would clear the durable queue's keys:
//! assert!(check_prefix(Component::Cache, "cortex:").is_err());
//! // Would also clear `app2:*`:
//! assert!(check_prefix(Component::Cache, "app").is_err());
//! ```

use std::fmt;

/// The root every Cortex component's reserved prefix lies under.
pub const ROOT: &str = "cortex:";

/// The separator every prefix ends with.
pub const SEPARATOR: char = ':';

/// A Cortex component that keeps keys in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Component {
    /// `cortex-cache`: Redis and two-tier caches, and their invalidation channels.
    Cache,
    /// `cortex-tasks`: durable queues (streams, task records, dead letters, stats).
    Tasks,
}

impl Component {
    /// Every component, for checks that must hold against all of them.
    pub const ALL: [Component; 2] = [Component::Cache, Component::Tasks];

    /// The prefix this component owns under [`ROOT`]; its default keys live here.
    pub const fn reserved_prefix(self) -> &'static str {
        match self {
            Component::Cache => "cortex:cache:",
            Component::Tasks => "cortex:tasks:",
        }
    }

    /// The component's short name, as used in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Component::Cache => "cache",
            Component::Tasks => "tasks",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a prefix was refused by [`check_prefix`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyspaceError {
    /// The prefix is empty or does not end in [`SEPARATOR`].
    NoSeparator {
        /// The prefix as given.
        prefix: String,
    },
    /// The prefix holds whitespace or a control character.
    BadCharacter {
        /// The prefix as given.
        prefix: String,
    },
    /// The prefix overlaps keys reserved for another component (or for Cortex).
    Overlaps {
        /// The prefix as given.
        prefix: String,
        /// The component that asked.
        owner: Component,
        /// The reserved prefix it would reach into.
        reserved: &'static str,
    },
}

impl fmt::Display for KeyspaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyspaceError::NoSeparator { prefix } => write!(
                f,
                "key prefix {prefix:?} must end in '{SEPARATOR}', or it would also match keys \
                 of other prefixes that start with it"
            ),
            KeyspaceError::BadCharacter { prefix } => {
                write!(
                    f,
                    "key prefix {prefix:?} holds whitespace or a control character"
                )
            }
            KeyspaceError::Overlaps {
                prefix,
                owner,
                reserved,
            } => write!(
                f,
                "key prefix {prefix:?} of the {owner} component overlaps {reserved:?}, which is \
                 reserved for {}; use a prefix under {:?} or outside {ROOT:?}",
                reserved_owner(reserved),
                owner.reserved_prefix()
            ),
        }
    }
}

impl std::error::Error for KeyspaceError {}

fn reserved_owner(reserved: &str) -> &'static str {
    Component::ALL
        .into_iter()
        .find(|c| c.reserved_prefix() == reserved)
        .map_or("Cortex components", Component::as_str)
}

/// Checks that `prefix` may be used by `owner` (see the [module docs](self)).
///
/// # Errors
/// [`KeyspaceError`] saying which rule the prefix breaks.
pub fn check_prefix(owner: Component, prefix: &str) -> Result<(), KeyspaceError> {
    if !prefix.ends_with(SEPARATOR) {
        return Err(KeyspaceError::NoSeparator {
            prefix: prefix.to_owned(),
        });
    }
    if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KeyspaceError::BadCharacter {
            prefix: prefix.to_owned(),
        });
    }
    let own = owner.reserved_prefix();
    if prefix.starts_with(own) {
        return Ok(());
    }
    // Anything else that meets the Cortex root reaches into keys it does not own: a
    // shorter prefix (`cortex:`) covers every component, a sibling (`cortex:tasks:…`,
    // `cortex:other:`) is another component's or kept for one.
    if prefix.starts_with(ROOT) || ROOT.starts_with(prefix) {
        let reserved = Component::ALL
            .into_iter()
            .map(Component::reserved_prefix)
            .find(|r| *r != own && (prefix.starts_with(r) || r.starts_with(prefix)))
            .unwrap_or(ROOT);
        return Err(KeyspaceError::Overlaps {
            prefix: prefix.to_owned(),
            owner,
            reserved,
        });
    }
    Ok(())
}

/// True when a key starting with `a` could also start with `b` (one is a prefix of the
/// other): the two prefixes share keys.
pub fn overlaps(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag
/// (the part inside the first `{...}`, when that is not empty), modulo [`SLOTS`]. Keys
/// of one multi-key command or script must share a slot on a cluster, which a common
/// hash tag guarantees.
///
/// ```
/// use cortex_support::keyspace::hash_slot;
///
/// // Values `CLUSTER KEYSLOT` answers.
/// assert_eq!(hash_slot(b"foo"), 12182);
/// assert_eq!(hash_slot(b"{user:7}:profile"), hash_slot(b"user:7"));
/// ```
pub fn hash_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bounded CI time and no regression files written into the source tree.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Prefixes near the reserved ones, where the interesting cases are, and any text.
    fn prefix() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "(cortex|cortex:|cortex:cache|cortex:cache:|cortex:tasks|cortex:tasks:|c|app)[a-z: \t]{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn an_accepted_prefix_never_nests_with_another_component(p in prefix()) {
            for owner in Component::ALL {
                match check_prefix(owner, &p) {
                    Ok(()) => {
                        prop_assert!(p.ends_with(SEPARATOR));
                        prop_assert!(!p.chars().any(|c| c.is_whitespace() || c.is_control()));
                        for other in Component::ALL {
                            if other != owner {
                                prop_assert!(
                                    !overlaps(&p, other.reserved_prefix()),
                                    "{owner} accepted {p:?}, which nests with {other}'s keys"
                                );
                            }
                        }
                        if overlaps(&p, ROOT) {
                            prop_assert!(p.starts_with(owner.reserved_prefix()), "{p:?}");
                        }
                    }
                    Err(e) => {
                        prop_assert!(e.to_string().contains(&format!("{p:?}")), "{e}");
                    }
                }
            }
        }

        #[test]
        fn any_key_has_a_slot_and_a_tag_decides_it(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            tag in "[^{}]{1,16}",
            before in "[^{]{0,8}",
            after in ".{0,16}",
        ) {
            prop_assert!(hash_slot(&key) < SLOTS);
            let tagged = format!("{before}{{{tag}}}{after}");
            prop_assert_eq!(hash_slot(tagged.as_bytes()), hash_slot(tag.as_bytes()));
        }
    }

    #[test]
    fn defaults_are_accepted_and_apart() {
        for c in Component::ALL {
            check_prefix(c, c.reserved_prefix()).unwrap();
            for other in Component::ALL {
                if other != c {
                    assert!(!overlaps(c.reserved_prefix(), other.reserved_prefix()));
                    assert!(check_prefix(c, other.reserved_prefix()).is_err());
                }
            }
        }
    }

    #[test]
    fn refuses_what_would_reach_another_component() {
        let bad = [
            "cortex:",
            "cortex",
            "",
            "c",
            "cortex:tasks:",
            "cortex:tasks:q:",
            "cortex:other:",
            "app",
            "a b:",
        ];
        for p in bad {
            let err = check_prefix(Component::Cache, p).unwrap_err();
            assert!(err.to_string().contains(&format!("{p:?}")), "{err}");
        }
        for p in [
            "cortex:cache:",
            "cortex:cache:users:",
            "myapp:",
            "a:b:",
            "app2:",
        ] {
            check_prefix(Component::Cache, p).unwrap();
        }
        assert!(matches!(
            check_prefix(Component::Cache, "cortex:tasks:x:"),
            Err(KeyspaceError::Overlaps {
                reserved: "cortex:tasks:",
                ..
            })
        ));
    }

    #[test]
    fn hash_slots_match_the_servers() {
        // Values of `CLUSTER KEYSLOT`.
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"bar"), 5061);
        assert_eq!(hash_slot(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"somekey"), 11058);
        assert_eq!(hash_slot(b"foo{hash_tag}"), 2515);
        assert_eq!(hash_slot(b"{user:7}:profile"), 2780);
        // Only the first tag counts; an empty or unclosed one is no tag.
        assert_eq!(hash_slot(b"foo{bar}{zap}"), 5061);
        assert_eq!(hash_slot(b"{}x"), 10595);
        assert_eq!(hash_slot(b"a{b"), 13340);
    }
}
