//! Reading settings from the environment: one convention for every Cortex crate.
//!
//! A variable that is unset (or empty) yields `None`, so the documented default applies.
//! A variable that is set but does not parse is an [`Error::InvalidConfig`] naming the
//! variable and the value; it is never silently ignored.
//!
//! Configs read through an [`EnvSource`], so tests and embedders can feed them a map
//! instead of mutating the process environment (which is `unsafe` in edition 2024).
//!
//! ```
//! use std::collections::HashMap;
//! use cortex_metrics::env::EnvSource;
//!
//! let vars = HashMap::from([("METRICS_RESET_INTERVAL", "soon")]);
//! let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
//! let env = EnvSource::from_fn(&lookup);
//! let err = env.secs("METRICS_RESET_INTERVAL").unwrap_err();
//! assert!(err.to_string().contains("METRICS_RESET_INTERVAL"));
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::{Error, Result};

/// A lookup of one variable by name.
type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where settings come from: the process environment, or any lookup function.
#[derive(Clone, Copy)]
pub struct EnvSource<'a> {
    lookup: Option<Lookup<'a>>,
}

impl fmt::Debug for EnvSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.lookup.is_some() {
            "custom"
        } else {
            "process"
        };
        f.debug_struct("EnvSource").field("source", &kind).finish()
    }
}

impl Default for EnvSource<'_> {
    fn default() -> Self {
        Self::process()
    }
}

impl<'a> EnvSource<'a> {
    /// The process environment.
    pub fn process() -> Self {
        Self { lookup: None }
    }

    /// Any lookup, e.g. a `HashMap` in a test.
    pub fn from_fn(lookup: Lookup<'a>) -> Self {
        Self {
            lookup: Some(lookup),
        }
    }

    /// The raw value of `key`, or `None` when unset or empty.
    pub fn var(&self, key: &str) -> Option<String> {
        let v = match self.lookup {
            Some(f) => f(key),
            None => std::env::var(key).ok(),
        };
        v.filter(|v| !v.trim().is_empty())
    }

    /// The first of `keys` that is set, with its name: the documented name first, then
    /// its aliases.
    pub fn var_any(&self, keys: &[&'static str]) -> Option<(&'static str, String)> {
        keys.iter().find_map(|k| self.var(k).map(|v| (*k, v)))
    }

    /// Parse `key` with [`FromStr`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the variable is set and does not parse.
    pub fn parse<T>(&self, key: &'static str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.var(key)
            .map(|v| {
                v.trim()
                    .parse::<T>()
                    .map_err(|e| invalid(key, &v, e.to_string()))
            })
            .transpose()
    }

    /// Parse a boolean: `1/0`, `true/false`, `yes/no`, `on/off` (any case).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for any other value.
    pub fn bool(&self, key: &'static str) -> Result<Option<bool>> {
        self.var(key)
            .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(invalid(
                    key,
                    &v,
                    "expected true/false, 1/0, yes/no or on/off",
                )),
            })
            .transpose()
    }

    /// Parse a duration given in seconds, fractions allowed (`"0.1"`, `"30"`), as the
    /// original Cortex variables are.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the value is not a finite, non-negative number.
    pub fn secs(&self, key: &'static str) -> Result<Option<Duration>> {
        self.var(key)
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| invalid(key, &v, "expected a non-negative number of seconds"))
            })
            .transpose()
    }
}

fn invalid(key: &'static str, value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        key,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Serde helpers for durations written as (fractional) seconds, the unit of every
/// Cortex environment variable: `#[serde(with = "cortex_metrics::env::secs")]`.
pub mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Write `d` as seconds.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Read seconds; negative or non-finite values are rejected.
    ///
    /// # Errors
    /// The deserializer's, or a custom error for a value that is not a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// As [`secs`], for `Option<Duration>` (`null` for none):
/// `#[serde(with = "cortex_metrics::env::opt_secs")]`.
pub mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Write `d` as seconds, or `null`.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    /// Read seconds or `null`.
    ///
    /// # Errors
    /// As [`secs::deserialize`](super::secs::deserialize).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn values_parse_and_bad_values_name_the_variable() {
        let vars = HashMap::from([
            ("SECS", "0.25"),
            ("BAD_SECS", "ten"),
            ("NEG", "-1"),
            ("FLAG", "Yes"),
            ("BAD_FLAG", "maybe"),
            ("N", " 42 "),
            ("EMPTY", "  "),
        ]);
        let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
        let env = EnvSource::from_fn(&lookup);
        assert_eq!(env.secs("SECS").unwrap(), Some(Duration::from_millis(250)));
        let err = env.secs("BAD_SECS").unwrap_err().to_string();
        assert!(err.contains("BAD_SECS") && err.contains("ten"), "{err}");
        assert!(env.secs("NEG").is_err());
        assert_eq!(env.bool("FLAG").unwrap(), Some(true));
        assert!(env.bool("BAD_FLAG").is_err());
        assert_eq!(env.parse::<u32>("N").unwrap(), Some(42));
        assert_eq!(env.parse::<u32>("EMPTY").unwrap(), None);
        assert_eq!(env.parse::<u32>("UNSET").unwrap(), None);
        assert_eq!(env.var_any(&["UNSET", "N"]).map(|(k, _)| k), Some("N"));
    }

    #[test]
    fn durations_round_trip_as_seconds() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct C {
            #[serde(with = "super::secs")]
            d: Duration,
            #[serde(with = "super::opt_secs")]
            o: Option<Duration>,
        }
        let c = C {
            d: Duration::from_millis(1500),
            o: None,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"d":1.5,"o":null}"#);
        assert_eq!(serde_json::from_str::<C>(&json).unwrap(), c);
        assert!(serde_json::from_str::<C>(r#"{"d":-1,"o":2}"#).is_err());
    }
}
