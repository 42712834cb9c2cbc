//! Connection-URL helpers shared by every engine. The rule they exist for: a password never reaches
//! a log line, an error message, a plan or a JSON summary.

use crate::error::{Error, Result};

/// Splits `scheme://rest`; a URL without `://` is an error naming the expected shape.
pub fn split_scheme(url: &str) -> Result<(&str, &str)> {
    match url.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') => {
            Ok((scheme, rest))
        }
        _ => Err(Error::InvalidUrl {
            url: redact(url),
            reason: "expected `scheme://…`, e.g. sqlite://path/to.db or postgres://user@host/db".into(),
        }),
    }
}

/// The URL with the password part of `user:password@` replaced by `***`.
pub fn redact(url: &str) -> String {
    // Without `scheme://` the input is malformed, but it may still carry `user:password@`.
    let (prefix, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    // A password written unencoded may hold '/', '?', '#' and '@': the userinfo ends at the last
    // '@' (one later in the query only hides more than it must, never less).
    match rest.rfind('@') {
        Some(at) => {
            let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
            match userinfo.split_once(':') {
                Some((user, _password)) => format!("{prefix}{user}:***@{}", redact_query_password(host)),
                None => format!("{prefix}{userinfo}@{}", redact_query_password(host)),
            }
        }
        None => format!("{prefix}{}", redact_query_password(rest)),
    }
}

/// `url` with the query parameter `key` set to `value` (replacing an earlier one of that name).
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> =
        query.split('&').filter(|p| !p.is_empty() && p.split_once('=').map_or(*p, |(k, _)| k) != key).collect();
    let pair = format!("{key}={value}");
    params.push(&pair);
    format!("{base}?{}", params.join("&"))
}

fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{path}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_everywhere_they_can_hide() {
        assert_eq!(redact("postgres://bob:s3cret@db:5432/app"), "postgres://bob:***@db:5432/app");
        assert_eq!(redact("mysql://bob:p@ss@db/app"), "mysql://bob:***@db/app");
        assert_eq!(redact("postgres://db/app?user=x&password=hunter2"), "postgres://db/app?user=x&password=***");
        assert_eq!(redact("sqlite://data/a.db"), "sqlite://data/a.db");
        assert_eq!(redact("postgres://bob@db/app"), "postgres://bob@db/app");
    }

    #[test]
    fn passwords_written_unencoded_never_show() {
        for password in ["se#cr/et?x", "p@ss#w/rd", "a:b%c?d#e@f", "pässwörd/✓", "/?#@:%"] {
            for url in [
                format!("postgres://bob:{password}@127.0.0.1:5432/app?sslmode=disable"),
                format!("mysql://root:{password}@127.0.0.1:3306/db"),
                format!("bob:{password}@host/db"),
            ] {
                let shown = redact(&url);
                assert!(!shown.contains(password), "{url} → {shown}");
                assert!(shown.contains("***"), "{url} → {shown}");
            }
        }
        assert_eq!(redact("postgres://bob:se#cr/et?x@db:5432/app"), "postgres://bob:***@db:5432/app");
        // No password: nothing hidden, a '@' in the query notwithstanding.
        assert_eq!(redact("postgres://bob@db/app?application_name=a@b"), "postgres://bob@db/app?application_name=a@b");
    }

    #[test]
    fn a_parameter_is_added_or_replaced() {
        assert_eq!(with_param("mysql://u@h/db", "zero_dates", "error"), "mysql://u@h/db?zero_dates=error");
        assert_eq!(
            with_param("mysql://u@h/db?local_infile=false&zero_dates=null", "zero_dates", "error"),
            "mysql://u@h/db?local_infile=false&zero_dates=error"
        );
    }

    #[test]
    fn scheme_is_required() {
        assert_eq!(split_scheme("sqlite://a.db").unwrap(), ("sqlite", "a.db"));
        let err = split_scheme("user:secret@host/db").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
