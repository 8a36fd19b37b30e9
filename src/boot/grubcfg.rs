//! keelson's GRUB menu: ostree's BLS entries → plain `linux`/`initrd`
//! menu entries (bookworm's GRUB has no `blscfg`). The default deployment
//! is entry 0 and the rollback entry 1, nothing else is listed.
//!
//! Rendering is pure (a Tera template); [`mkconfig`] is the thin I/O
//! wrapper ostree runs as `grub-mkconfig -o …/loader.N/grub.cfg`.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::bls::{self, Entry};

const TEMPLATE: &str = include_str!("templates/grub.cfg.tera");

/// Seconds the menu waits on the serial console.
pub const TIMEOUT: u32 = 1;

pub fn render(entries: &[Entry], entries_dir: &str) -> Result<String> {
    let mut ctx = tera::Context::new();
    ctx.insert("entries", entries);
    ctx.insert("entries_dir", entries_dir);
    ctx.insert("timeout", &TIMEOUT);
    tera::Tera::one_off(TEMPLATE, &ctx, false).context("rendering grub.cfg")
}

/// What ostree's grub2 backend runs: `grub-mkconfig -o PATH`, where PATH is
/// `…/boot/loader.N/grub.cfg` and the entries are in `…/loader.N/entries`.
pub fn mkconfig(args: &[String]) -> Result<()> {
    let out = match args {
        [o, path] if o == "-o" || o == "--output" => Path::new(path),
        _ => bail!(
            "usage: grub-mkconfig -o …/boot/loader.N/grub.cfg (keelson's menu generator; got {args:?})"
        ),
    };
    let dir = out.parent().context("output path has no directory")?;
    let entries_dir = dir.join("entries");
    let entries = bls::read_dir(&entries_dir)?;
    if entries.is_empty() {
        bail!("{}: no boot loader entries", entries_dir.display());
    }
    let text = render(&entries, &entries_dir.display().to_string())?;
    crate::util::fsutil::write_atomic(out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let entries = vec![
            bls::parse("b", "title Debian 12.1 (ostree:0)\nversion 2\nlinux /ostree/k-b/vmlinuz\ninitrd /ostree/k-b/initramfs.img\noptions root=UUID=r rw ostree=/ostree/boot.1/keelson/b/0\n").unwrap(),
            bls::parse("a", "title Debian's 12 (ostree:1)\nversion 1\nlinux /ostree/k-a/vmlinuz\noptions root=UUID=r rw ostree=/ostree/boot.1/keelson/a/0\n").unwrap(),
        ];
        let got = render(&entries, "/boot/loader.1/entries").unwrap();
        // Regenerate after an intended change with KEELSON_UPDATE_GOLDEN=1.
        let golden = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/boot/testdata/grub.cfg.golden"
        );
        if std::env::var_os("KEELSON_UPDATE_GOLDEN").is_some() {
            fs_err::write(golden, &got).unwrap();
        }
        assert_eq!(got, fs_err::read_to_string(golden).unwrap());
    }

    #[test]
    fn mkconfig_writes_beside_entries() {
        let d = tempfile::tempdir().unwrap();
        let loader = d.path().join("loader.1");
        fs_err::create_dir_all(loader.join("entries")).unwrap();
        fs_err::write(
            loader.join("entries/ostree-1-k.conf"),
            "title T\nversion 1\nlinux /v\n",
        )
        .unwrap();
        let out = loader.join("grub.cfg");
        mkconfig(&["-o".into(), out.display().to_string()]).unwrap();
        assert!(fs_err::read_to_string(&out).unwrap().contains("linux /v\n"));
        let e = mkconfig(&["--bogus".into()]).unwrap_err().to_string();
        assert!(e.starts_with("usage: grub-mkconfig"), "{e}");
        fs_err::remove_file(loader.join("entries/ostree-1-k.conf")).unwrap();
        let e = mkconfig(&["-o".into(), out.display().to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no boot loader entries"), "{e}");
    }
}
