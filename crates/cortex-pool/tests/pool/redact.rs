//! `redact_url` and `scripts/services.sh redact`: one rule, checked on fixed cases and on
//! random passwords (any printable character, `@ / ? # :` included), and the shell
//! copy gives the same output as the Rust one.

use std::process::Command;

use cortex_support::redact::redact_url;
use proptest::prelude::*;

/// `scripts/services.sh` of this checkout.
fn services_sh() -> String {
    format!("{}/../../scripts/services.sh", env!("CARGO_MANIFEST_DIR"))
}

/// What `scripts/services.sh redact URL` prints.
fn shell_redact(url: &str) -> String {
    let out = Command::new("bash")
        .arg(services_sh())
        .arg("redact")
        .arg(url)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "services.sh redact failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// (input, expected) for both implementations.
const CASES: &[(&str, &str)] = &[
    ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
    (
        "postgresql://u:pw@h/db?sslmode=require",
        "postgresql://u:***@h/db?sslmode=require",
    ),
    ("redis://:pw@h", "redis://:***@h"),
    (
        "redis://:secret@127.0.0.1:6379/0",
        "redis://:***@127.0.0.1:6379/0",
    ),
    (
        "rediss://default:s3cr3t@cache:6380",
        "rediss://default:***@cache:6380",
    ),
    ("http://u:pw@h:1/mcp", "http://u:***@h:1/mcp"),
    (
        "https://app:p%40ss@api.example.com/mcp",
        "https://app:***@api.example.com/mcp",
    ),
    // Unescaped `@ / ? # :` in the password: everything up to the last `@` is hidden.
    ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
    ("postgres://u:pa/ss@h/db", "postgres://u:***@h/db"),
    ("postgres://u:pa?ss@h/db", "postgres://u:***@h/db"),
    ("postgres://u:pa#ss@h/db", "postgres://u:***@h/db"),
    ("postgres://u:pa:ss@h:5432/db", "postgres://u:***@h:5432/db"),
    ("redis://:a@b/c?d#e:f@h:6379", "redis://:***@h:6379"),
    // An empty password: nothing to hide.
    ("postgres://u:@h/db", "postgres://u:@h/db"),
    // Query parameters named like secrets.
    (
        "postgres://u@h/db?password=hunter2",
        "postgres://u@h/db?password=***",
    ),
    (
        "postgres://h/db?sslmode=require&sslpassword=k3y&application_name=x",
        "postgres://h/db?sslmode=require&sslpassword=***&application_name=x",
    ),
    (
        "redis://h?pass=x&pwd=y&TOKEN=z",
        "redis://h?pass=***&pwd=***&TOKEN=***",
    ),
    (
        "http://h/mcp?secret=s&user=me",
        "http://h/mcp?secret=***&user=me",
    ),
    (
        "http://h/mcp?access_token=abc",
        "http://h/mcp?access_token=***",
    ),
    ("postgres://u@h/db?password=", "postgres://u@h/db?password="),
    // Both rules at once: what either one hides is hidden (an `@` in a secret value
    // would otherwise leave the part after it shown; a secret parameter inside a
    // password swallows the rest, host included).
    (
        "postgres://u@h:5432/db?password=my@secretpart",
        "postgres://u@h:***",
    ),
    ("postgres://u:a?token=b@h/db", "postgres://u:***"),
    // The userinfo's `:` inside a secret value: the value runs on past the `@` to the
    // next `&`, so a second pass changes nothing (no `***@` left behind).
    ("password=:&x@", "password=***"),
    ("?token=a:&b@h", "?token=***"),
    ("?token=a:&b@h&db=1", "?token=***&db=1"),
    ("x://h/?pwd=a:b&c@d?e=f&g", "x://h/?pwd=***&g"),
    // Nothing to hide.
    ("postgres://u@h/db", "postgres://u@h/db"),
    ("postgres://h:5432/db", "postgres://h:5432/db"),
    ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
    (
        "redis+unix:///run/redis.sock",
        "redis+unix:///run/redis.sock",
    ),
    ("sqlite::memory:", "sqlite::memory:"),
    ("sqlite:data.db?mode=rwc", "sqlite:data.db?mode=rwc"),
    ("postgres://[::1]:5432/db", "postgres://[::1]:5432/db"),
    (
        "postgres://u:pw@[::1]:5432/db",
        "postgres://u:***@[::1]:5432/db",
    ),
    // Not URLs: still nothing secret shows.
    ("", ""),
    ("u:pw@h", "u:***@h"),
    ("host=db password=secret user=me", "host=db password=***"),
    ("garbage://", "garbage://"),
    ("1x://u:pw@h", "1x:***@h"),
];

#[test]
fn fixed_cases() {
    for (input, expected) in CASES {
        assert_eq!(&redact_url(input), expected, "redact_url({input:?})");
    }
}

#[test]
fn shell_redact_agrees_on_fixed_cases() {
    for (input, expected) in CASES {
        assert_eq!(
            &shell_redact(input),
            expected,
            "services.sh redact {input:?}"
        );
    }
}

#[test]
fn redacting_twice_changes_nothing_in_both() {
    for (_, expected) in CASES {
        assert_eq!(&redact_url(expected), expected, "redact_url({expected:?})");
        assert_eq!(
            &shell_redact(expected),
            expected,
            "services.sh redact {expected:?}"
        );
    }
}

#[test]
fn garbage_never_panics() {
    for s in [
        "://",
        ":@",
        "@:",
        "a://@",
        "a://:",
        "?password",
        "?password=",
        "&&&==",
        "é://ü:ß@€",
        "postgres://u:p\u{301}w@h",
        "x://\u{1F600}:\u{1F600}@\u{1F600}?token=\u{1F600}",
    ] {
        let _ = redact_url(s);
    }
}

/// A URL with a password in its userinfo, and what it must redact to.
#[derive(Debug, Clone)]
struct Userinfo {
    url: String,
    expected: String,
    password: String,
    host: String,
}

fn scheme() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "postgres://",
        "postgresql://",
        "redis://",
        "rediss://",
        "http://",
        "https://",
    ])
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![name_host(), Just("[::1]".to_string())]
}

/// A host name or IPv4 address (no `:` of its own).
fn name_host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,12}(\\.[a-z][a-z0-9-]{0,8}){0,2}",
        "127\\.0\\.0\\.[0-9]{1,2}",
    ]
}

/// Printable characters, the URL delimiters over-represented.
fn password() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::char::range(' ', '~'),
            2 => prop::sample::select(vec!['@', '/', '?', '#', ':', '%', '&', '=']),
            1 => prop::sample::select(vec!['é', 'ß', '€', '中', '\u{1F600}']),
        ],
        1..24,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn userinfo_url() -> impl Strategy<Value = Userinfo> {
    (
        scheme(),
        prop_oneof!["[a-z][a-z0-9_]{0,10}", Just(String::new())],
        password(),
        host(),
        prop::option::of(1u16..),
        prop_oneof![Just(""), Just("/db"), Just("/0"), Just("/mcp/v1")],
        prop_oneof![
            Just(""),
            Just("?sslmode=require"),
            Just("?application_name=app&connect_timeout=5"),
        ],
    )
        .prop_map(|(scheme, user, password, host, port, path, query)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let tail = format!("{host}{port}{path}{query}");
            Userinfo {
                url: format!("{scheme}{user}:{password}@{tail}"),
                expected: format!("{scheme}{user}:***@{tail}"),
                password,
                host,
            }
        })
}

/// A URL with a secret query parameter, the secret and the host. No IPv6 host: with
/// an `@` in the secret, the hidden span starts at the first `:` after `//`, inside
/// `[::1]`.
fn query_url() -> impl Strategy<Value = (String, String, String)> {
    (
        scheme(),
        prop_oneof![Just(""), Just("app@")],
        name_host(),
        prop::option::of(1u16..),
        prop::sample::select(vec![
            "password",
            "pass",
            "pwd",
            "sslpassword",
            "token",
            "secret",
            "PASSWORD",
            "Token",
        ]),
        // As written: raw (anything but the `&` that ends it) or percent-encoded.
        prop_oneof![
            password().prop_map(|p| p.replace('&', "")),
            password().prop_map(|p| percent_encode(&p)),
        ],
        prop_oneof![Just(""), Just("sslmode=require&")],
        prop_oneof![Just(""), Just("&connect_timeout=5")],
    )
        .prop_map(|(scheme, user, host, port, key, secret, before, after)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let url = format!("{scheme}{user}{host}{port}/db?{before}{key}={secret}{after}");
            (url, secret, host)
        })
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether `s` holds a query parameter named like a secret (`token=`, ...): in a
/// password it hides the rest of the URL up to the next `&`, host included.
fn holds_secret_parameter(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    ["password=", "passwd=", "pass=", "pwd=", "token=", "secret="]
        .iter()
        .any(|k| s.contains(k))
}

/// The password shows nowhere, unless the URL shows it anyway (a password `db` is
/// also the path), and passwords of 3 characters or fewer are too short to tell.
fn hidden(redacted: &str, secret: &str, rest_of_url: &str) -> bool {
    secret.chars().count() <= 3 || rest_of_url.contains(secret) || !redacted.contains(secret)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn userinfo_password_is_hidden_and_the_host_kept(u in userinfo_url()) {
        let out = redact_url(&u.url);
        prop_assert!(hidden(&out, &u.password, &u.expected), "{} -> {}", u.url, out);
        if !holds_secret_parameter(&u.password) {
            prop_assert_eq!(&out, &u.expected);
            prop_assert!(out.contains(&u.host), "{} -> {}", u.url, out);
        }
    }

    #[test]
    fn query_secret_is_hidden_and_the_host_kept((url, secret, host) in query_url()) {
        let out = redact_url(&url);
        let rest = url.replacen(&secret, "", 1);
        prop_assert!(hidden(&out, &secret, &rest), "{} -> {}", url, out);
        prop_assert!(out.contains(&host), "{} -> {}", url, out);
    }

    #[test]
    fn any_text_is_redacted_without_panic(s in any::<String>()) {
        let _ = redact_url(&s);
    }
}

proptest! {
    // Each case starts bash: fewer of them.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn shell_redact_agrees_on_userinfo(u in userinfo_url()) {
        prop_assert_eq!(shell_redact(&u.url), redact_url(&u.url));
    }

    #[test]
    fn shell_redact_agrees_on_query_secrets((url, _, _) in query_url()) {
        prop_assert_eq!(shell_redact(&url), redact_url(&url));
    }
}
