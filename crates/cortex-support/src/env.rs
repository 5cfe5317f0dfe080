//! Reading settings from the environment: one convention for every Cortex crate.
//!
//! A variable that is unset (or empty) yields `None`, so the documented default applies.
//! A variable that is set but does not parse is a [`ConfigError`] naming the variable
//! and the value; it is never silently ignored. Every crate's error type has an
//! `InvalidConfig { key, value, reason }` variant made from it, so a bad setting reads
//! the same whichever crate rejected it.
//!
//! A config type implements [`FromEnv`]: its [`FromEnv::VARS`] list (name, default,
//! meaning) is the one source of the variable table in the crate's README, and a test
//! in each crate checks the README against it with [`readme_table`].
//!
//! Configs read through an [`EnvSource`], so tests and embedders can feed them a map
//! instead of mutating the process environment (which is `unsafe` in edition 2024).
//!
//! ```
//! use std::collections::HashMap;
//! use cortex_support::env::EnvSource;
//!
//! let vars = HashMap::from([("METRICS_RESET_INTERVAL", "soon")]);
//! let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
//! let env = EnvSource::from_fn(&lookup);
//! let err = env.duration("METRICS_RESET_INTERVAL").unwrap_err();
//! assert!(err.to_string().contains("METRICS_RESET_INTERVAL"));
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A setting that was set but could not be used: which one, the value as given, and why.
///
/// The value of a secret setting is redacted by whoever builds the error, never shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting or environment variable, e.g. `POOL_TIMEOUT`.
    pub key: &'static str,
    /// The value as given (redacted when it holds a secret).
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

impl ConfigError {
    /// Never: the same setting fails the same way until someone changes it. Here so
    /// that every Cortex error answers the question.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// The error for `key` set to `value`, rejected for `reason`.
    pub fn new(key: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid value {:?} for {}: {}",
            self.value, self.key, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// `Result` of reading a setting.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

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
    /// [`ConfigError`] when the variable is set and does not parse.
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
    /// [`ConfigError`] for any other value.
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

    /// Parse a duration in the one Cortex syntax: a bare number is seconds (`"30"`,
    /// `"0.5"`), or a number with a unit (`"500ms"`, `"30s"`, `"2m"`, `"1h"`); see
    /// [`parse_duration`](crate::duration::parse_duration).
    ///
    /// # Errors
    /// [`ConfigError`] when the value is not a finite, non-negative duration.
    pub fn duration(&self, key: &'static str) -> Result<Option<Duration>> {
        self.var(key)
            .map(|v| crate::duration::parse_duration(&v).map_err(|reason| invalid(key, &v, reason)))
            .transpose()
    }
}

fn invalid(key: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(key, value, reason)
}

/// One environment variable a config reads: the one source of its documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvVar {
    /// The variable's name, e.g. `POOL_TIMEOUT`.
    pub name: &'static str,
    /// The default when unset, as a user would write it (`"30s"`, `"unset"`).
    pub default: &'static str,
    /// What it sets, one line of Markdown.
    pub doc: &'static str,
}

/// A config read from the environment: one convention for every Cortex component.
///
/// `from_env()` reads the process environment, `from_env_source` any [`EnvSource`]
/// (a map in a test), and [`FromEnv::VARS`] lists every variable read, with its default,
/// so the README table is generated from it ([`readme_table`]) and checked by a test.
/// A variable that is set but bad is the crate's `InvalidConfig` error naming it; unset
/// ones keep the defaults of `Self::default()`. Config types also offer an inherent
/// `from_env()`, so callers need not import the trait.
///
/// ```
/// use std::collections::HashMap;
/// use std::time::Duration;
/// use cortex_support::{ConfigError, EnvSource, EnvVar, FromEnv};
///
/// #[derive(Debug, Default)]
/// struct Pool { timeout: Option<Duration> }
///
/// impl FromEnv for Pool {
///     type Error = ConfigError;
///     const VARS: &'static [EnvVar] = &[EnvVar {
///         name: "POOL_TIMEOUT", default: "unset", doc: "Longest wait for a connection.",
///     }];
///     fn from_env_source(env: &EnvSource<'_>) -> Result<Self, ConfigError> {
///         Ok(Pool { timeout: env.duration("POOL_TIMEOUT")? })
///     }
/// }
///
/// let vars = HashMap::from([("POOL_TIMEOUT", "2s")]);
/// let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
/// let pool = Pool::from_env_source(&EnvSource::from_fn(&lookup))?;
/// assert_eq!(pool.timeout, Some(Duration::from_secs(2)));
/// assert!(cortex_support::env::readme_table(Pool::VARS).contains("`POOL_TIMEOUT`"));
/// # Ok::<(), ConfigError>(())
/// ```
pub trait FromEnv: Sized {
    /// The error of a bad setting: the crate's own error type, made from a
    /// [`ConfigError`] (its `InvalidConfig { key, value, reason }` variant).
    type Error: From<ConfigError>;

    /// Every variable `from_env_source` reads, in the order the README lists them.
    const VARS: &'static [EnvVar];

    /// Read the config from `env`; unset variables keep their defaults, and the result
    /// is validated.
    ///
    /// # Errors
    /// The crate's `InvalidConfig` naming the first variable that is set but bad.
    fn from_env_source(env: &EnvSource<'_>) -> Result<Self, Self::Error>;

    /// Read the config from the process environment.
    ///
    /// # Errors
    /// As [`FromEnv::from_env_source`].
    fn from_env() -> Result<Self, Self::Error> {
        Self::from_env_source(&EnvSource::process())
    }
}

/// The Markdown table of `vars` (variable, default, meaning), as each crate README
/// holds it between `<!-- env:begin -->` and `<!-- env:end -->`.
pub fn readme_table(vars: &[EnvVar]) -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for v in vars {
        out.push_str(&format!("| `{}` | `{}` | {} |\n", v.name, v.default, v.doc));
    }
    out
}

/// Checks that `readme` holds [`readme_table`] of `vars` between the markers
/// `<!-- env:begin -->` and `<!-- env:end -->`; the error says what to paste.
///
/// # Errors
/// A message with the expected table when the README's differs or lacks the markers.
pub fn check_readme(readme: &str, vars: &[EnvVar]) -> std::result::Result<(), String> {
    let want = readme_table(vars);
    let found = readme
        .split_once("<!-- env:begin -->\n")
        .and_then(|(_, rest)| rest.split_once("<!-- env:end -->"))
        .map(|(table, _)| table);
    match found {
        Some(table) if table == want => Ok(()),
        Some(_) => Err(format!(
            "the README's variable table is out of date; it should read:\n{want}"
        )),
        None => Err(format!(
            "the README lacks <!-- env:begin --> ... <!-- env:end -->; put this between them:\n{want}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Bounded CI time and no regression files written into the source tree.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A rejected value names the key and carries the value exactly as given.
    fn names_key_and_value<T: fmt::Debug>(
        r: Result<Option<T>>,
        key: &str,
        value: &str,
    ) -> std::result::Result<(), TestCaseError> {
        if value.trim().is_empty() {
            prop_assert!(matches!(r, Ok(None)), "blank {value:?} gave {r:?}");
        } else if let Err(e) = r {
            prop_assert_eq!(e.key, key);
            prop_assert_eq!(&e.value, value);
            prop_assert!(!e.reason.is_empty());
            let text = e.to_string();
            prop_assert!(
                text.contains(key) && text.contains(&format!("{value:?}")),
                "{text}"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_value_is_read_or_named_in_the_error(
            value in prop_oneof![any::<String>(), "[ +-]?[0-9a-zA-Z.]{0,24}[ ]?"],
        ) {
            let lookup = |_: &str| Some(value.clone());
            let env = EnvSource::from_fn(&lookup);
            names_key_and_value(env.parse::<u32>("SOME_COUNT"), "SOME_COUNT", &value)?;
            names_key_and_value(env.parse::<i64>("SOME_OFFSET"), "SOME_OFFSET", &value)?;
            names_key_and_value(env.parse::<f64>("SOME_RATIO"), "SOME_RATIO", &value)?;
            names_key_and_value(env.parse::<String>("SOME_NAME"), "SOME_NAME", &value)?;
            names_key_and_value(env.bool("SOME_FLAG"), "SOME_FLAG", &value)?;
            names_key_and_value(env.duration("SOME_WAIT"), "SOME_WAIT", &value)?;
        }

        #[test]
        fn integers_and_booleans_read_back(n in any::<i64>(), pad in "[ \t]{0,2}", flag in any::<bool>()) {
            let text = format!("{pad}{n}{pad}");
            let yes = if flag { "On" } else { "no" };
            let lookup = |k: &str| Some(if k == "F" { yes.to_owned() } else { text.clone() });
            let env = EnvSource::from_fn(&lookup);
            prop_assert_eq!(env.parse::<i64>("N"), Ok(Some(n)));
            prop_assert_eq!(env.bool("F"), Ok(Some(flag)));
        }
    }

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
        assert_eq!(
            env.duration("SECS").unwrap(),
            Some(Duration::from_millis(250))
        );
        let err = env.duration("BAD_SECS").unwrap_err().to_string();
        assert!(err.contains("BAD_SECS") && err.contains("ten"), "{err}");
        assert!(env.duration("NEG").is_err());
        assert_eq!(env.bool("FLAG").unwrap(), Some(true));
        assert!(env.bool("BAD_FLAG").is_err());
        assert_eq!(env.parse::<u32>("N").unwrap(), Some(42));
        assert_eq!(env.parse::<u32>("EMPTY").unwrap(), None);
        assert_eq!(env.parse::<u32>("UNSET").unwrap(), None);
        assert_eq!(env.var_any(&["UNSET", "N"]).map(|(k, _)| k), Some("N"));
    }

    #[test]
    fn readme_check_names_what_to_paste() {
        const VARS: &[EnvVar] = &[EnvVar {
            name: "A_B",
            default: "1s",
            doc: "Wait.",
        }];
        let good = format!(
            "x\n<!-- env:begin -->\n{}<!-- env:end -->\n",
            readme_table(VARS)
        );
        assert!(check_readme(&good, VARS).is_ok());
        let err = check_readme("no table", VARS).unwrap_err();
        assert!(err.contains("`A_B`"), "{err}");
        let stale = good.replace("1s", "2s");
        assert!(check_readme(&stale, VARS).is_err());
    }

    #[test]
    fn durations_round_trip_as_seconds() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct C {
            #[serde(with = "crate::duration::secs")]
            d: Duration,
            #[serde(with = "crate::duration::opt_secs")]
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
