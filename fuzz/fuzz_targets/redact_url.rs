//! `cortex_support::redact::redact_url` on arbitrary text.
//!
//! Properties, beyond "no panic":
//! - idempotent: redacting a redacted URL changes nothing;
//! - a URL `scheme://user:SECRET@host...` built from fuzz parts never shows SECRET
//!   (of 4 bytes or more, not occurring elsewhere in the text) after redaction;
//! - the same for a secret query parameter (`password=SECRET`, `sslpassword=`,
//!   `token=`, ...) that starts the text or follows `?`, `&` or white space;
//! - text without `@` and without `=` comes back unchanged (nothing to hide).
#![no_main]

use cortex_support::redact::redact_url;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Free text, redacted as is.
    free: String,
    scheme: String,
    user: String,
    secret: String,
    host: String,
    /// Which secret parameter key, and the text around the parameter.
    param: u8,
    before: String,
    after: String,
}

const KEYS: &[&str] = &[
    "password",
    "sslpassword",
    "PASS",
    "pwd",
    "access_token",
    "client_secret",
    "passwd",
];

fn idempotent(text: &str) -> String {
    let once = redact_url(text);
    assert_eq!(redact_url(&once), once, "not idempotent for {text:?}");
    once
}

/// `secret` must not survive redaction of `text`, when it is a clear case: 4 bytes or
/// more, occurring once in the text, and not formed again by the `***` put in its place
/// and its neighbours (`u:**` in `u:***@h`).
fn hidden(text: &str, secret: &str) {
    if secret.len() < 4
        || text.matches(secret).count() != 1
        || text.replacen(secret, "***", 1).contains(secret)
    {
        return;
    }
    let out = idempotent(text);
    assert!(
        !out.contains(secret),
        "{secret:?} survives in {out:?} (from {text:?})"
    );
}

fuzz_target!(|input: Input| {
    let out = idempotent(&input.free);
    if !input.free.contains('@') && !input.free.contains('=') {
        assert_eq!(out, input.free, "changed text with nothing to hide");
    }

    // scheme://user:SECRET@host: a valid scheme, a user without `:` `@` `/` (an RFC 3986
    // userinfo escapes those), a secret without `@` (escaped too), any host part.
    let scheme: String = input
        .scheme
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let scheme = if scheme.starts_with(|c: char| c.is_ascii_alphabetic()) {
        scheme
    } else {
        format!("s{scheme}")
    };
    let user: String = input
        .user
        .chars()
        .filter(|c| !matches!(c, ':' | '@' | '/'))
        .collect();
    // No `*` either: the `***` of a hidden parameter in the user part could spell it.
    let secret: String = input
        .secret
        .chars()
        .filter(|c| !matches!(c, '@' | '*'))
        .collect();
    let url = format!("{scheme}://{user}:{secret}@{}", input.host);
    hidden(&url, &secret);

    // A secret parameter at the start or after `?`, `&` or a space; the value ends at `&`.
    let key = KEYS[usize::from(input.param) % KEYS.len()];
    let value: String = secret.chars().filter(|c| *c != '&').collect();
    let sep = ["", "?", "&", " "][usize::from(input.param / 16) % 4];
    let before = if sep.is_empty() {
        String::new()
    } else {
        input.before.clone()
    };
    let text = format!("{before}{sep}{key}={value}&{}", input.after);
    hidden(&text, &value);
});
