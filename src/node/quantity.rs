//! Kubernetes resource quantities as keelson's configuration accepts them
//! (pure): CPU as cores or millicores ("1.5", "500m"), sizes with binary or
//! decimal suffixes ("2Gi", "500Mi", "1G", "1024Ki", plain bytes).

use anyhow::{Result, bail};

/// CPU → millicores.
pub fn cpu_millis(s: &str) -> Result<u64> {
    let t = s.trim();
    if t.starts_with('-') {
        bail!("{s:?}: a CPU amount cannot be negative");
    }
    if let Some(m) = t.strip_suffix('m') {
        return m
            .parse::<u64>()
            .map_err(|_| anyhow::anyhow!("{s:?}: not a CPU amount (e.g. \"500m\" or \"1.5\")"));
    }
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || frac.len() > 3
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        bail!("{s:?}: not a CPU amount (e.g. \"500m\" or \"1.5\")");
    }
    let whole: u64 = if int.is_empty() { 0 } else { int.parse()? };
    let frac_millis: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<3}").parse()?
    };
    Ok(whole * 1000 + frac_millis)
}

/// Size → KiB (rounded down).
pub fn size_kib(s: &str) -> Result<u64> {
    let t = s.trim();
    if t.starts_with('-') {
        bail!("{s:?}: a size cannot be negative");
    }
    const UNITS: [(&str, u128); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (num, mult) = UNITS
        .iter()
        .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|n| (n, *m)))
        .unwrap_or((t, 1));
    let n: u128 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("{s:?}: not a size (e.g. \"2Gi\", \"500Mi\", \"1G\")"))?;
    Ok((n * mult / 1024) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_table() {
        for (s, want) in [
            ("500m", 500),
            ("1", 1000),
            ("1.5", 1500),
            ("0.25", 250),
            ("16", 16000),
            (".5", 500),
        ] {
            assert_eq!(cpu_millis(s).unwrap(), want, "{s}");
        }
        for (s, err) in [
            ("-1", "negative"),
            ("abc", "not a CPU amount"),
            ("1.2345", "not a CPU"),
            ("m", "not a CPU"),
            ("", "not a CPU"),
        ] {
            assert!(cpu_millis(s).unwrap_err().to_string().contains(err), "{s}");
        }
    }

    #[test]
    fn size_table() {
        for (s, want) in [
            ("2Gi", 2 * 1024 * 1024),
            ("500Mi", 500 * 1024),
            ("1024Ki", 1024),
            ("1G", 976_562),
            ("4096", 4),
        ] {
            assert_eq!(size_kib(s).unwrap(), want, "{s}");
        }
        for (s, err) in [
            ("-1Gi", "negative"),
            ("lots", "not a size"),
            ("1.5Gi", "not a size"),
            ("Gi", "not a size"),
        ] {
            assert!(size_kib(s).unwrap_err().to_string().contains(err), "{s}");
        }
    }
}
