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
///   up to the next `&`.
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
    if let (Some(colon), Some(at)) = (rest.find(':'), rest.rfind('@'))
        && colon < at
    {
        hide.push((begin + colon + 1, begin + at));
    }
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
                let end = url[value..].find('&').map_or(url.len(), |e| value + e);
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
