//! A commit from an archive repo into the image's bare staging repo, on
//! every CPU.
//!
//! `ostree pull-local` does this on one thread with GLib's zlib stream
//! (1.8 s for the default tree here, the largest pass of `keelson image`).
//! Here each worker reads a `.filez` object whole, parses its header,
//! inflates the body in one call with libdeflate (the size is in the
//! header) and hands libostree the uncompressed content stream: libostree
//! still writes every object (ownership, mode, xattrs, timestamps, the
//! transaction), so the staging repo is what a pull makes. Trusted, as
//! `pull-local` is by default: the source is the caller's own repo.
//!
//! The archive object format (ostree-core.c, `_ostree_zlib_file_header_new`):
//! a big-endian u32 header length, 4 bytes of padding, the header GVariant
//! `(tuuuusa(ayay))` = (size, uid, gid, mode, rdev, symlink target, xattrs)
//! with the integers stored big-endian, then the content as raw deflate.

use fs_err as fs;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ostree::{gio, glib};

/// The archive file header's GVariant type.
const HEADER_TYPE: &str = "(tuuuusa(ayay))";

/// What an archive object's header says about its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub symlink: String,
}

impl Header {
    pub fn is_symlink(&self) -> bool {
        const S_IFMT: u32 = 0o170000;
        const S_IFLNK: u32 = 0o120000;
        self.mode & S_IFMT == S_IFLNK
    }
}

/// Pure: the header of an archive object `data` (what the file holds from
/// its first byte), its xattrs and where the deflated content starts.
pub fn parse_header(data: &[u8]) -> Result<(Header, glib::Variant, usize)> {
    if data.len() < 8 {
        bail!("{} bytes: too short for an archive object", data.len());
    }
    let len = u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize;
    let end = 8usize
        .checked_add(len)
        .filter(|&e| e <= data.len())
        .with_context(|| {
            format!(
                "header length {len} beyond the object's {} bytes",
                data.len()
            )
        })?;
    let ty = glib::VariantTy::new(HEADER_TYPE).expect("static type");
    // Owned: the returned xattrs variant points into this buffer, and
    // glib-rs would accept a borrow that does not live as long.
    #[allow(clippy::unnecessary_to_owned)]
    let v = glib::Variant::from_data_with_type(data[8..end].to_vec(), ty);
    if !v.is_normal_form() {
        bail!("archive header is not a normal-form {HEADER_TYPE} variant");
    }
    let be32 = |i: usize| u32::from_be(v.child_value(i).get::<u32>().expect("typed"));
    let header = Header {
        size: u64::from_be(v.child_value(0).get::<u64>().expect("typed")),
        uid: be32(1),
        gid: be32(2),
        mode: be32(3),
        symlink: v.child_value(5).get::<String>().expect("typed"),
    };
    Ok((header, v.child_value(6), end))
}

/// Where an archive repo keeps a file object.
fn object_path(repo: &Path, checksum: &str) -> PathBuf {
    repo.join("objects")
        .join(&checksum[..2])
        .join(format!("{}.filez", &checksum[2..]))
}

/// Whether the importer can read `repo`'s objects: an archive repo that
/// holds all of them itself (no parent repo to look further in).
pub fn can_import(repo: &Path) -> Result<bool> {
    let r = crate::commit::open_required(repo)?;
    Ok(r.mode() == ostree::RepoMode::Archive && r.parent().is_none())
}

/// The bytes of file content in `commit` of the archive repo `repo`, from
/// the objects' headers alone (each object once).
pub fn content_size(repo: &Path, commit: &str) -> Result<u64> {
    use std::io::Read;
    let mut total = 0u64;
    for c in file_objects(repo, commit)? {
        let p = object_path(repo, &c);
        let mut f = fs::File::open(&p)?;
        let mut head = [0u8; 8];
        f.read_exact(&mut head)
            .with_context(|| format!("{}: too short for an archive object", p.display()))?;
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let mut buf = vec![0u8; 8 + len];
        buf[..8].copy_from_slice(&head);
        f.read_exact(&mut buf[8..])
            .with_context(|| format!("{}: truncated header", p.display()))?;
        let (h, _, _) =
            parse_header(&buf).with_context(|| format!("{}: reading the header", p.display()))?;
        total += h.size;
    }
    Ok(total)
}

fn reachable(repo: &Path, commit: &str) -> Result<(ostree::Repo, HashSet<ostree::ObjectName>)> {
    let r = crate::commit::open_required(repo)?;
    let objects = r
        .traverse_commit(commit, 0, gio::Cancellable::NONE)
        .with_context(|| format!("{}: reading commit {commit}", repo.display()))?;
    Ok((r, objects))
}

fn file_objects(repo: &Path, commit: &str) -> Result<Vec<String>> {
    let (_, objects) = reachable(repo, commit)?;
    Ok(objects
        .iter()
        .filter(|o| o.object_type() == ostree::ObjectType::File)
        .map(|o| o.checksum().to_string())
        .collect())
}

/// Import `commit` (its detached metadata too) from the archive repo `src`
/// into the repo `dest`, on `threads` workers; one transaction.
pub fn import(src: &Path, dest: &Path, commit: &str, threads: usize) -> Result<()> {
    let (src_repo, objects) = reachable(src, commit)?;
    let dest_repo = crate::commit::open_required(dest)?;
    // Content first, the commit last: a commit object is never written
    // before what it points to.
    let mut jobs: Vec<(ostree::ObjectType, String)> = objects
        .iter()
        .map(|o| (o.object_type(), o.checksum().to_string()))
        .collect();
    jobs.sort_by_key(|(t, _)| match t {
        ostree::ObjectType::File => 0,
        ostree::ObjectType::Commit => 2,
        _ => 1,
    });
    // No fsync per object: the staging sysroot is synced as a whole by
    // `ostree admin deploy` (and is on tmpfs when memory allows). With
    // fsync off libostree also writes straight into objects/, without a
    // staging directory renamed into place at the end.
    dest_repo.set_disable_fsync(true);
    dest_repo
        .prepare_transaction(gio::Cancellable::NONE)
        .with_context(|| format!("{}: starting a transaction", dest.display()))?;
    let files = jobs
        .iter()
        .take_while(|(t, _)| *t == ostree::ObjectType::File)
        .count();
    let (content, meta) = jobs.split_at(files);
    let r = write_files(src, &dest_repo, content, threads.max(1)).and_then(|()| {
        for (t, c) in meta {
            copy_metadata(&src_repo, &dest_repo, *t, c)?;
        }
        copy_detached(&src_repo, &dest_repo, commit)
    });
    if let Err(e) = r {
        let _ = dest_repo.abort_transaction(gio::Cancellable::NONE);
        return Err(e.context(format!(
            "importing {commit} from {} into {}",
            src.display(),
            dest.display()
        )));
    }
    dest_repo
        .commit_transaction(gio::Cancellable::NONE)
        .with_context(|| format!("{}: committing the import of {commit}", dest.display()))?;
    Ok(())
}

fn copy_metadata(
    src: &ostree::Repo,
    dest: &ostree::Repo,
    t: ostree::ObjectType,
    c: &str,
) -> Result<()> {
    let v = src
        .load_variant(t, c)
        .with_context(|| format!("reading {t:?} object {c}"))?;
    dest.write_metadata(t, Some(c), &v, gio::Cancellable::NONE)
        .with_context(|| format!("writing {t:?} object {c}"))?;
    Ok(())
}

fn copy_detached(src: &ostree::Repo, dest: &ostree::Repo, commit: &str) -> Result<()> {
    let meta = src
        .read_commit_detached_metadata(commit, gio::Cancellable::NONE)
        .with_context(|| format!("reading {commit}'s detached metadata"))?;
    if let Some(m) = meta {
        dest.write_commit_detached_metadata(commit, Some(&m), gio::Cancellable::NONE)
            .with_context(|| format!("writing {commit}'s detached metadata"))?;
    }
    Ok(())
}

/// The file objects on `threads` workers; the first error stops them all.
fn write_files(
    src: &Path,
    dest: &ostree::Repo,
    jobs: &[(ostree::ObjectType, String)],
    threads: usize,
) -> Result<()> {
    let states = (0..threads)
        .map(|_| (dest.clone(), libdeflater::Decompressor::new()))
        .collect();
    crate::util::try_for_each(jobs, states, |(dest, inflater), (_, c)| {
        write_file(src, dest, c, inflater)
    })
}

/// Pure: the inflated content of an object whose header promised `size`
/// bytes; an error if the stream does not give exactly that.
pub fn inflate(
    inflater: &mut libdeflater::Decompressor,
    deflated: &[u8],
    size: u64,
) -> Result<Vec<u8>> {
    let size = usize::try_from(size).context("object size does not fit in memory")?;
    let mut out = vec![0u8; size];
    if size == 0 && deflated.is_empty() {
        return Ok(out);
    }
    let n = inflater
        .deflate_decompress(deflated, &mut out)
        .map_err(|e| anyhow::anyhow!("inflating the content: {e}"))?;
    if n != size {
        bail!("content is {n} bytes, the header says {size}");
    }
    Ok(out)
}

fn write_file(
    src: &Path,
    dest: &ostree::Repo,
    checksum: &str,
    inflater: &mut libdeflater::Decompressor,
) -> Result<()> {
    let p = object_path(src, checksum);
    let data = fs::read(&p)?;
    let (h, xattrs, start) =
        parse_header(&data).with_context(|| format!("{}: reading the header", p.display()))?;
    let info = gio::FileInfo::new();
    info.set_attribute_uint32("unix::uid", h.uid);
    info.set_attribute_uint32("unix::gid", h.gid);
    info.set_attribute_uint32("unix::mode", h.mode);
    let content = if h.is_symlink() {
        info.set_file_type(gio::FileType::SymbolicLink);
        info.set_symlink_target(&h.symlink);
        Vec::new()
    } else {
        info.set_file_type(gio::FileType::Regular);
        info.set_size(h.size as i64);
        inflate(inflater, &data[start..], h.size).with_context(|| p.display().to_string())?
    };
    drop(data);
    let input = gio::MemoryInputStream::from_bytes(&glib::Bytes::from_owned(content));
    let (stream, len) =
        ostree::raw_file_to_content_stream(&input, &info, Some(&xattrs), gio::Cancellable::NONE)
            .with_context(|| format!("{checksum}: building the content stream"))?;
    dest.write_content_trusted(checksum, &stream, len, gio::Cancellable::NONE)
        .with_context(|| format!("writing file object {checksum}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use glib::prelude::*;

    /// An archive object as libostree writes it: length, padding, header
    /// (integers big-endian), raw deflate of `content`.
    fn object(mode: u32, target: &str, xattrs: &[(&[u8], &[u8])], content: &[u8]) -> Vec<u8> {
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattrs
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let h = (
            (content.len() as u64).to_be(),
            0u32.to_be(),
            5u32.to_be(),
            mode.to_be(),
            0u32,
            target.to_string(),
            xattrs,
        )
            .to_variant();
        assert_eq!(h.type_().as_str(), HEADER_TYPE);
        let hb = h.data_as_bytes();
        let mut out = (hb.len() as u32).to_be_bytes().to_vec();
        out.extend([0u8; 4]);
        out.extend_from_slice(&hb);
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        let mut z = vec![0u8; c.deflate_compress_bound(content.len())];
        let n = c.deflate_compress(content, &mut z).unwrap();
        out.extend_from_slice(&z[..n]);
        out
    }

    #[test]
    fn header_and_content_round_trip() {
        let text = b"#!/bin/sh\necho hello\n".repeat(100);
        for (mode, target, xattrs, content) in [
            (0o100755, "", &[][..], &text[..]),
            (
                0o104755,
                "",
                &[(&b"security.capability\0"[..], &b"\x01\x02"[..])][..],
                b"x",
            ),
            (0o100644, "", &[][..], b""),
            (0o120777, "../lib/x", &[][..], b""),
        ] {
            let data = object(mode, target, xattrs, content);
            let (h, x, start) = parse_header(&data).unwrap();
            assert_eq!(
                h,
                Header {
                    size: content.len() as u64,
                    uid: 0,
                    gid: 5,
                    mode,
                    symlink: target.into()
                }
            );
            assert_eq!(h.is_symlink(), !target.is_empty(), "{mode:o}");
            assert_eq!(x.n_children(), xattrs.len());
            let mut d = libdeflater::Decompressor::new();
            assert_eq!(inflate(&mut d, &data[start..], h.size).unwrap(), content);
        }
    }

    #[test]
    fn damaged_objects_are_errors() {
        let good = object(0o100644, "", &[], b"some content, long enough to deflate");
        let mut d = libdeflater::Decompressor::new();
        let short = parse_header(&good[..5]).unwrap_err().to_string();
        assert!(short.contains("too short"), "{short}");
        let hlen = u32::from_be_bytes(good[..4].try_into().unwrap()) as usize;
        let cut = parse_header(&good[..8 + hlen - 1]).unwrap_err().to_string();
        assert!(cut.contains("beyond the object"), "{cut}");
        let (h, _, start) = parse_header(&good).unwrap();
        let truncated = inflate(&mut d, &good[start..good.len() - 4], h.size);
        assert!(truncated.is_err());
        let wrong = inflate(&mut d, &good[start..], h.size + 1)
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("the header says"), "{wrong}");
    }
}
