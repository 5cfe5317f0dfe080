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
    // Whole nanoseconds, added up exactly: through `f64`, `14168972890ms` came out as
    // 14168972.890000001s, and large whole numbers lost their last digits.
    let mut total: u128 = 0;
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
        let unit_nanos: u128 = match unit {
            "" | "s" | "sec" | "secs" => 1_000_000_000,
            "ns" => 1,
            "us" => 1_000,
            "ms" => 1_000_000,
            "m" | "min" | "mins" => 60_000_000_000,
            "h" | "hr" | "hrs" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => return Err(EXPECTED.to_owned()),
        };
        let part = decimal_nanos(num, unit_nanos)?;
        total = total.checked_add(part).ok_or_else(too_large)?;
        rest = &rest[num_len + unit_len..];
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_large())?;
    // The remainder is below 10^9, so it fits.
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| too_large())?;
    Ok(Duration::new(secs, nanos))
}

fn too_large() -> String {
    "duration too large".to_owned()
}

/// `num` (digits with at most one `.`) times `unit_nanos`, in whole nanoseconds rounded
/// to the nearest; fraction digits past the 24th are below a nanosecond for every unit
/// and are ignored, which keeps the arithmetic inside `u128`.
fn decimal_nanos(num: &str, unit_nanos: u128) -> Result<u128, String> {
    const EXPECTED_NUMBER: &str = "expected a number such as \"30\" or \"0.5\" before the unit";
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if frac.contains('.') || (int.is_empty() && frac.is_empty()) {
        return Err(EXPECTED_NUMBER.to_owned());
    }
    // Only digits are left, so a failed parse is an overflow.
    let whole: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| too_large())?
    };
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_large)?;
    let frac = &frac[..frac.len().min(24)];
    if !frac.is_empty() {
        let digits: u128 = frac.parse().map_err(|_| too_large())?;
        let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| too_large())?);
        // digits < 10^24 and unit_nanos < 10^14: the product fits in u128.
        let part = (digits * unit_nanos + scale / 2) / scale;
        nanos = nanos.checked_add(part).ok_or_else(too_large)?;
    }
    Ok(nanos)
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
    use proptest::prelude::*;

    /// Bounded CI time and no regression files written into the source tree.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    #[test]
    fn whole_numbers_parse_exactly() {
        // Through f64 this came out as 14168972.890000001s.
        assert_eq!(
            parse_duration("14168972890ms"),
            Ok(Duration::from_millis(14_168_972_890))
        );
        assert_eq!(
            parse_duration(&format!("{}s", u64::MAX)),
            Ok(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_duration("1.0000000005s"), Ok(Duration::new(1, 1)));
        assert_eq!(parse_duration(".5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration(&format!("{}s1s", u64::MAX)).is_err());
        assert!(parse_duration("99999999999999999999999999999999999999999d").is_err());
        assert!(parse_duration(".").is_err());
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_text_parses_or_says_what_was_expected(text in any::<String>()) {
            if let Err(e) = parse_duration(&text) {
                prop_assert!(!e.is_empty());
            }
        }

        #[test]
        fn duration_like_text_parses_or_says_what_was_expected(
            text in "[0-9.]{0,25}(ns|us|ms|s|m|h|d|x)?([0-9.]{0,25}(ns|us|ms|s|m|h|d)?){0,3}",
        ) {
            if let Err(e) = parse_duration(&text) {
                prop_assert!(!e.is_empty());
            }
        }

        #[test]
        fn whole_numbers_with_a_unit_round_trip(n in any::<u32>(), unit in 0..7usize) {
            let n = u64::from(n);
            let (suffix, want) = [
                ("ns", Duration::from_nanos(n)),
                ("us", Duration::from_micros(n)),
                ("ms", Duration::from_millis(n)),
                ("s", Duration::from_secs(n)),
                ("", Duration::from_secs(n)),
                ("m", Duration::from_secs(n * 60)),
                ("h", Duration::from_secs(n * 3600)),
            ][unit];
            prop_assert_eq!(parse_duration(&format!("{n}{suffix}")), Ok(want));
        }

        #[test]
        fn large_whole_numbers_round_trip(n in any::<u64>()) {
            prop_assert_eq!(parse_duration(&format!("{n}ns")), Ok(Duration::from_nanos(n)));
            prop_assert_eq!(parse_duration(&format!("{n}ms")), Ok(Duration::from_millis(n)));
            prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
        }

        #[test]
        fn parts_add_up(m in 0..100_000u64, s in 0..60u64, ms in 0..1000u64) {
            let want = Duration::from_millis(m * 60_000 + s * 1000 + ms);
            prop_assert_eq!(parse_duration(&format!("{m}m{s}s{ms}ms")), Ok(want));
        }
    }

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
