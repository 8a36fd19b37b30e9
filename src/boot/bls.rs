//! ostree's Boot Loader Specification entries (`/boot/loader.N/entries`),
//! parsed purely from text.

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    pub title: String,
    /// ostree numbers entries so that the default deployment is highest.
    pub version: u64,
    pub linux: String,
    pub initrd: Option<String>,
    pub options: String,
}

/// Parse one entry; `name` is used in errors.
pub fn parse(name: &str, text: &str) -> Result<Entry> {
    let mut title = None;
    let mut version = None;
    let mut linux = None;
    let mut initrd = None;
    let mut options = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim().to_string();
        match key {
            "title" => title = Some(value),
            "version" => {
                version =
                    Some(value.parse::<u64>().map_err(|_| {
                        anyhow::anyhow!("{name}: version {value:?} is not a number")
                    })?)
            }
            "linux" => linux = Some(value),
            "initrd" => initrd = Some(value),
            "options" => options = value,
            _ => {}
        }
    }
    let Some(linux) = linux else {
        bail!("{name}: no `linux` line")
    };
    let Some(version) = version else {
        bail!("{name}: no `version` line")
    };
    Ok(Entry {
        title: title.unwrap_or_else(|| name.to_string()),
        version,
        linux,
        initrd,
        options,
    })
}

/// Entries in menu order: the default deployment (highest version) first.
pub fn sort_for_menu(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by_key(|e| std::cmp::Reverse(e.version));
    entries
}

/// Read every `*.conf` in `dir`.
pub fn read_dir(dir: &std::path::Path) -> Result<Vec<Entry>> {
    use anyhow::Context;
    let mut out = Vec::new();
    let rd = fs_err::read_dir(dir)
        .with_context(|| format!("{}: cannot read boot loader entries", dir.display()))?;
    for e in rd {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "conf") {
            let text = fs_err::read_to_string(&p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
            out.push(parse(&p.display().to_string(), &text)?);
        }
    }
    Ok(sort_for_menu(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ostree_entry() {
        let text = "title Debian GNU/Linux 12 (bookworm) (ostree:0)\nversion 2\n\
                    options root=UUID=abc rw ostree=/ostree/boot.1/keelson/e4/0\n\
                    linux /ostree/keelson-e4/vmlinuz-6.1.0\n\
                    initrd /ostree/keelson-e4/initramfs-6.1.0.img\n";
        let e = parse("ostree-2-keelson.conf", text).unwrap();
        assert_eq!(e.version, 2);
        assert_eq!(e.title, "Debian GNU/Linux 12 (bookworm) (ostree:0)");
        assert_eq!(
            e.options,
            "root=UUID=abc rw ostree=/ostree/boot.1/keelson/e4/0"
        );
        assert_eq!(
            e.initrd.as_deref(),
            Some("/ostree/keelson-e4/initramfs-6.1.0.img")
        );
    }

    #[test]
    fn errors_and_order() {
        assert!(
            parse("x.conf", "version 1\n")
                .unwrap_err()
                .to_string()
                .contains("x.conf: no `linux` line")
        );
        assert!(
            parse("x.conf", "linux /k\nversion two\n")
                .unwrap_err()
                .to_string()
                .contains("not a number")
        );
        let a = parse("a", "version 1\nlinux /a\n").unwrap();
        let b = parse("b", "version 2\nlinux /b\n").unwrap();
        let sorted = sort_for_menu(vec![a, b]);
        assert_eq!(sorted[0].linux, "/b");
    }
}
