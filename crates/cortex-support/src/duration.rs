//! One duration syntax for every Cortex setting, variable and command-line flag.
//!
//! A bare number is seconds, fractions allowed (`"30"`, `"0.25"`), so existing
//! second-valued variables keep their meaning; a number with a unit says so itself:
//! `ns`, `us`, `ms`, `s`, `m`, `h`, `d` (`"500ms"`, `"1.5s"`, `"2m"`). Several parts
//! add up (`"1m30s"`). Negative, non-finite and overflowing values are refused.
//!
//! ```
//! use std::time::Duration;
//! use cortex_support::duration::parse_duration;
//!
//! assert_eq!(parse_duration("30")?, Duration::from_secs(30));
//! assert_eq!(parse_duration("500ms")?, Duration::from_millis(500));
//! assert_eq!(parse_duration("1m30s")?, Duration::from_secs(90));
//! assert!(parse_duration("-1s").is_err());
//! # Ok::<(), String>(())
//! ```

use std::time::Duration;

/// Parse `text` as a duration (see the [module docs](self)).
///
/// # Errors
/// A message saying what was expected, for the caller to put in its error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected seconds (\"30\", \"0.5\") or a number with a unit ns/us/ms/s/m/h/d (\"500ms\", \"2m\")";
    let text = text.trim();
    if text.is_empty() {
        return Err(EXPECTED.to_owned());
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let unit_len = rest[num_len..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let (num, unit) = (&rest[..num_len], &rest[num_len..num_len + unit_len]);
        // A bare number is allowed only as the whole text.
        if num.is_empty() || (unit.is_empty() && num_len != text.len()) {
            return Err(EXPECTED.to_owned());
        }
        let value: f64 = num.parse().map_err(|_| EXPECTED.to_owned())?;
        let scale = match unit {
            "" | "s" | "sec" | "secs" => 1.0,
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(EXPECTED.to_owned()),
        };
        let part = Duration::try_from_secs_f64(value * scale).map_err(|e| e.to_string())?;
        total = total
            .checked_add(part)
            .ok_or_else(|| "duration too large".to_owned())?;
        rest = &rest[num_len + unit_len..];
    }
    Ok(total)
}

/// Serde helpers for a `Duration` written as (fractional) seconds and read from seconds
/// or from the [duration syntax](self): `#[serde(with = "cortex_support::duration::secs")]`.
pub mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// A number of seconds or a duration text, as config files write them.
    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(super) enum Repr {
        Secs(f64),
        Text(String),
    }

    impl Repr {
        pub(super) fn into_duration<E: serde::de::Error>(self) -> Result<Duration, E> {
            match self {
                Repr::Secs(s) => Duration::try_from_secs_f64(s).map_err(E::custom),
                Repr::Text(t) => super::parse_duration(&t).map_err(E::custom),
            }
        }
    }

    /// Write `d` as seconds.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Read seconds or a duration text; negative or non-finite values are rejected.
    ///
    /// # Errors
    /// The deserializer's, or a custom error for a value that is not a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Repr::deserialize(d)?.into_duration()
    }
}

/// As [`secs`], for `Option<Duration>` (`null` for none):
/// `#[serde(with = "cortex_support::duration::opt_secs")]`.
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

    /// Read seconds, a duration text, or `null`.
    ///
    /// # Errors
    /// As [`secs::deserialize`](super::secs::deserialize).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<super::secs::Repr>::deserialize(d)?
            .map(super::secs::Repr::into_duration)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_bad_ones_say_what_was_expected() {
        let ok = [
            ("30", 30_000),
            (" 0.25 ", 250),
            ("500ms", 500),
            ("30s", 30_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1m30s", 90_000),
            ("1.5s", 1500),
            ("0", 0),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        for bad in [
            "",
            "-1",
            "-1s",
            "ten",
            "5 parsecs",
            "1.2.3s",
            "s",
            "30 s",
            "1e999",
            "30s5",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
