//! `automatic-version-prefix`: versions P, P.1, P.2, … (pure);
//! `automatic-version-suffix` replaces the `.`.

/// The next version for `prefix` given the previous commit's version.
/// Same rule as rpm-ostree: a previous `P` or `P.N` continues the series,
/// anything else (another prefix, no previous commit) starts it at `P`.
pub fn next_version(prefix: &str, suffix: &str, previous: Option<&str>) -> String {
    let Some(prev) = previous else {
        return prefix.to_string();
    };
    if prev == prefix {
        return format!("{prefix}{suffix}1");
    }
    if let Some(n) = prev
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix(suffix))
        && let Ok(n) = n.parse::<u64>()
    {
        return format!("{prefix}{suffix}{}", n + 1);
    }
    prefix.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let t = [
            ("12", None, "12"),
            ("12", Some("12"), "12.1"),
            ("12", Some("12.1"), "12.2"),
            ("12", Some("12.9"), "12.10"),
            ("12", Some("11.4"), "12"),
            ("12", Some("12.x"), "12"),
            ("12", Some("123"), "12"),
            ("1.0", Some("1.0.41"), "1.0.42"),
        ];
        assert_eq!(next_version("22", "-", Some("22-4")), "22-5");
        assert_eq!(next_version("22", "-", Some("22")), "22-1");
        assert_eq!(next_version("22", "-", Some("22.4")), "22");
        for (prefix, prev, want) in t {
            assert_eq!(
                next_version(prefix, ".", prev),
                want,
                "{prefix} after {prev:?}"
            );
        }
    }
}
