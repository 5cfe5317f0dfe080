//! Hiding secrets in URLs and connection strings before they reach a log, an error or a
//! `Debug` print.
//!
//! ```
//! use cortex_support::redact::redact_url;
//!
//! assert_eq!(redact_url("redis://:pw@cache:6379/0"), "redis://:***@cache:6379/0");
//! assert_eq!(
//!     redact_url("postgres://db/app?sslpassword=k&sslmode=require"),
//!     "postgres://db/app?sslpassword=***&sslmode=require",
//! );
//! ```

/// The URL with every password hidden, for logs and errors: `scheme://user:***@host/...`.
///
/// Two rules, and whatever either one covers is replaced by `***`:
///
/// - **Userinfo**: everything from the first `:` after `scheme://` (or after the start,
///   without a scheme) to the **last** `@`. A password holding an unescaped `@`, `/`, `?`,
///   `#` or `:` makes the authority ambiguous; ending the userinfo at the last `@` errs on
///   the side of hiding (an `@` later in the path or query hides the host and path too).
///   `redis://:pw@host` (no user) is covered.
/// - **Secret parameters**: the value of a `key=value` pair that starts the text or
///   follows `?`, `&` or white space, whose key ends in `password`, `passwd`, `pass`,
///   `pwd`, `token` or `secret` (any case: `password=`, `sslpassword=`, `access_token=`),
///   up to the next `&`. When the userinfo starts inside such a value (the value holds
///   its `:`), the value runs on to the first `&` after the userinfo's `@` (or to the
///   end): the two spans touch, and ending at the `&` within the userinfo would leave
///   that `@` shown after the merged `***`, where a second pass, finding no `:` before
///   it, would hide it and what follows as part of the value.
///
/// A redacted text is a fixed point: `redact_url(&redact_url(x)) == redact_url(x)` for
/// every `x`, so redacting a message twice (a URL logged inside an error that is logged
/// again) changes nothing. The `***` of a span never takes part in a new span in a
/// second pass: a span starts after a `:` or `=` and ends before an `@`, an `&` or the
/// end, and the rule above makes every hidden span that starts with a value end at an
/// `&` or the end.
///
/// Any input is accepted (it never panics); `scripts/services.sh redact URL` applies the
/// same rule, and the pool tests check the two agree.
pub fn redact_url(url: &str) -> String {
    let mut hide: Vec<(usize, usize)> = Vec::new();
    let begin = match url.find("://") {
        Some(i) if is_scheme(&url[..i]) => i + 3,
        _ => 0,
    };
    let rest = &url[begin..];
    // The userinfo's `:` and last `@`, when it has both in that order.
    let userinfo = match (rest.find(':'), rest.rfind('@')) {
        (Some(colon), Some(at)) if colon < at => Some((begin + colon, begin + at)),
        _ => None,
    };
    if let Some((colon, at)) = userinfo {
        hide.push((colon + 1, at));
    }
    let next_amp = |from: usize| url[from..].find('&').map_or(url.len(), |e| from + e);
    let mut i = 0;
    let mut param_start = true;
    while let Some(c) = url[i..].chars().next() {
        if param_start {
            let key_len = url[i..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                .count();
            if url.as_bytes().get(i + key_len) == Some(&b'=') && is_secret_key(&url[i..i + key_len])
            {
                let value = i + key_len + 1;
                let mut end = next_amp(value);
                // The userinfo starts inside this value: hide on to the `&` after its
                // `@`, so one pass already gives what a second would (see above).
                if let Some((colon, at)) = userinfo
                    && (value..end).contains(&colon)
                {
                    end = next_amp(at);
                }
                hide.push((value, end));
                i = end;
                param_start = false;
                continue;
            }
        }
        param_start = matches!(c, '?' | '&' | ' ' | '\t' | '\n' | '\r');
        i += c.len_utf8();
    }
    hide.retain(|(s, e)| s < e);
    hide.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(hide.len());
    for (s, e) in hide {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut out = String::with_capacity(url.len());
    let mut pos = 0;
    for (s, e) in merged {
        out.push_str(&url[pos..s]);
        out.push_str("***");
        pos = e;
    }
    out.push_str(&url[pos..]);
    out
}

/// `[A-Za-z][A-Za-z0-9+.-]*`, as RFC 3986 spells a scheme.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
}

/// A query parameter (or conninfo keyword) that holds a secret.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "pass", "pwd", "token", "secret"]
        .iter()
        .any(|s| key.ends_with(s))
}

/// Serialize a URL through [`redact_url`], for `#[serde(serialize_with = "cortex_support::redact::serialize_redacted")]`
/// on a config field that holds a URL.
///
/// # Errors
/// The serializer's.
pub fn serialize_redacted<S: serde::Serializer>(
    url: &str,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
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

    /// Percent-encode everything outside RFC 3986's unreserved set, as a user building
    /// a URL by hand (or a URL library) writes a password.
    fn percent_encode(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// The URL pieces around the password; the query key ends in `x`, so it is never a
    /// secret parameter itself.
    fn url_parts() -> impl Strategy<Value = (String, String, String, u16, String, String, String)> {
        (
            "[a-z][a-z0-9+.-]{0,8}",
            "[a-zA-Z0-9_.-]{0,8}",
            "[a-z0-9][a-z0-9.-]{0,12}",
            any::<u16>(),
            "[a-zA-Z0-9_]{0,8}",
            "[a-z]{0,6}x",
            "[a-zA-Z0-9]{0,8}",
        )
    }

    /// The output starts with `scheme://user:***` and what follows is a tail of the
    /// part after the password: nothing of the password is left.
    fn assert_hidden(out: &str, head: &str, tail: &str) {
        let rest = out
            .strip_prefix(head)
            .and_then(|r| r.strip_prefix("***"))
            .unwrap_or_else(|| panic!("{out:?} does not start with {head:?}***"));
        assert!(
            tail.ends_with(rest),
            "{out:?}: {rest:?} is not a tail of {tail:?}"
        );
    }

    /// A secret value holding the `:` where the userinfo starts, and a later `@`: the
    /// two hidden spans touch, and one pass must already give what a second gives.
    #[test]
    fn a_value_holding_the_userinfo_colon_is_redacted_to_the_fixed_point_at_once() {
        for (input, expected) in [
            ("password=:&x@", "password=***"),
            ("?token=a:&b@h", "?token=***"),
            ("?token=a:&b@h&db=1", "?token=***&db=1"),
            ("x://h/?pwd=a:b&c@d?e=f&g", "x://h/?pwd=***&g"),
        ] {
            let once = redact_url(input);
            assert_eq!(once, expected, "redact_url({input:?})");
            assert_eq!(redact_url(&once), once, "redact_url({once:?})");
        }
    }

    /// Text made of the pieces the two rules look at (`:`, `@`, `&`, `?`, space,
    /// `://`, secret and other keys), so the rules meet far more often than in
    /// arbitrary text.
    fn url_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            6 => prop::sample::select(vec![
                ":", "@", "&", "?", " ", "://", "=", "password=", "?token=", "&PASS=", " pwd=",
                "x=", "***",
            ])
            .prop_map(str::to_owned),
            1 => "[a-z]{1,2}",
            1 => "[a-zA-Z0-9@:/?#&= *%é]",
        ];
        let start = prop::sample::select(vec!["", "x://", "x://u", "?", "h/?", "1x://"]);
        // A parameter followed by text rich in `:`, `&` and `@`: the shape in which a
        // secret value and the userinfo meet.
        let parameter = (
            prop::sample::select(vec!["", "x://h/?", "x://u:p@h?", "h ", "?a=b&"]),
            prop::sample::select(vec!["password", "token", "PASS", "x"]),
            "[a:@&]{0,7}[?= ]?",
        )
            .prop_map(|(head, key, rest)| format!("{head}{key}={rest}"));
        prop_oneof![
            4 => parameter,
            2 => (start, proptest::collection::vec(piece, 0..10))
                .prop_map(|(s, p)| format!("{s}{}", p.concat())),
            1 => any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn redacting_again_changes_nothing(text in url_like()) {
            let once = redact_url(&text);
            prop_assert_eq!(redact_url(&once), once.clone(), "{:?} -> {:?}", text, once);
        }

        #[test]
        fn any_text_comes_back_unchanged_or_redacted(text in any::<String>()) {
            let out = redact_url(&text);
            prop_assert!(out == text || out.contains("***"), "{text:?} -> {out:?}");
        }

        #[test]
        fn an_encoded_password_never_shows(
            (scheme, user, host, port, db, k, v) in url_parts(),
            secret in "[a-zA-Z0-9@:/%?#&= ]{1,24}",
        ) {
            let head = format!("{scheme}://{user}:");
            let tail = format!("@{host}:{port}/{db}?{k}={v}");
            let url = format!("{head}{}{tail}", percent_encode(&secret));
            assert_hidden(&redact_url(&url), &head, &tail);
        }

        #[test]
        fn a_raw_password_never_shows(
            (scheme, user, host, port, db, k, v) in url_parts(),
            secret in any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
        ) {
            // Unescaped `@ : / ? #` make the authority ambiguous; the password must
            // still be hidden (more may be hidden with it).
            let head = format!("{scheme}://{user}:");
            let tail = format!("@{host}:{port}/{db}?{k}={v}");
            let url = format!("{head}{secret}{tail}");
            assert_hidden(&redact_url(&url), &head, &tail);
        }

        #[test]
        fn a_password_parameter_never_shows(
            key in "(ssl)?(password|passwd|pass|pwd|token|secret|PASSWORD|Token)",
            secret in "[^&]{1,24}",
            host in "[a-z]{1,8}",
        ) {
            let url = format!("host={host} {key}={secret}");
            prop_assert_eq!(redact_url(&url), format!("host={host} {key}=***"));
            let url = format!("redis://{host}/0?{key}={secret}&db=1");
            prop_assert_eq!(redact_url(&url), format!("redis://{host}/0?{key}=***&db=1"));
        }
    }
}
