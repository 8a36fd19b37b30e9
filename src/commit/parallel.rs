//! Writing a directory into the repo with content objects hashed and
//! compressed on several threads.
//!
//! libostree's own commit walk is single-threaded and zlib dominates it.
//! libostree allows several threads to write objects on one `OstreeRepo`
//! inside one transaction; the Rust `Repo` is `Send` but not `Sync`, so each
//! worker gets a clone of the same `Repo` (a second `Repo` opened on the
//! path would not share the transaction). `FileInfo`, streams and
//! `MutableTree` are not `Send`: workers build their own and send back only
//! checksums; the tree is filled on the calling thread. Dirtrees sort their
//! names, so the order threads finish in cannot change any checksum: the
//! result is the checksum `ostree commit --tree=dir=` gives.

use fs_err as fs;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use anyhow::{Context, Result, anyhow, bail};
use ostree::gio;
use ostree::glib;

/// A non-directory entry to write as a content object.
struct Job {
    idx: usize,
    path: PathBuf,
}

/// What the walk records for every entry, in walk order.
enum Node {
    Dir {
        rel: Vec<String>,
        meta: std::fs::Metadata,
        path: PathBuf,
    },
    /// A content object to write (`job` indexes the job list), or a
    /// hardlink to one written earlier.
    File { rel: Vec<String>, job: usize },
}

/// Walk `root`, writing content objects on `threads` workers and dirmeta on
/// this thread; returns the filled mutable tree.
pub fn write_tree(repo: &ostree::Repo, root: &Path, threads: usize) -> Result<ostree::MutableTree> {
    let mut nodes = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    let mut inodes: HashMap<(u64, u64), usize> = HashMap::new();
    walk(root, &mut Vec::new(), &mut nodes, &mut jobs, &mut inodes)?;

    let checksums = write_contents(repo, jobs, threads.max(1))?;

    let mtree = ostree::MutableTree::new();
    for node in &nodes {
        match node {
            Node::Dir { rel, meta, path } => {
                let info = file_info(meta, None);
                let xattrs = xattrs_of(path)?;
                let v = ostree::create_directory_metadata(&info, Some(&xattrs));
                let csum = repo
                    .write_metadata(
                        ostree::ObjectType::DirMeta,
                        None,
                        &v,
                        gio::Cancellable::NONE,
                    )
                    .with_context(|| format!("{}: writing directory metadata", path.display()))?;
                let dir = subtree(&mtree, rel)?;
                dir.set_metadata_checksum(&csum.to_hex());
            }
            Node::File { rel, job } => {
                let (parent, name) = rel.split_at(rel.len() - 1);
                subtree(&mtree, parent)?
                    .replace_file(&name[0], &checksums[*job])
                    .with_context(|| format!("adding {} to the tree", rel.join("/")))?;
            }
        }
    }
    Ok(mtree)
}

fn subtree(mtree: &ostree::MutableTree, rel: &[String]) -> Result<ostree::MutableTree> {
    let mut t = mtree.clone();
    for part in rel {
        t = t
            .ensure_dir(part)
            .with_context(|| format!("tree directory {}", rel.join("/")))?;
    }
    Ok(t)
}

fn walk(
    dir: &Path,
    rel: &mut Vec<String>,
    nodes: &mut Vec<Node>,
    jobs: &mut Vec<Job>,
    inodes: &mut HashMap<(u64, u64), usize>,
) -> Result<()> {
    let meta =
        fs::symlink_metadata(dir).with_context(|| format!("{}: cannot stat", dir.display()))?;
    nodes.push(Node::Dir {
        rel: rel.clone(),
        meta,
        path: dir.to_path_buf(),
    });
    for name in crate::util::fsutil::sorted_names(dir)? {
        let path = dir.join(&name);
        let name = name
            .into_string()
            .map_err(|n| anyhow!("{}: file name is not UTF-8 ({n:?})", dir.display()))?;
        let m = fs::symlink_metadata(&path)
            .with_context(|| format!("{}: cannot stat", path.display()))?;
        rel.push(name);
        let ft = m.file_type();
        if ft.is_dir() {
            walk(&path, rel, nodes, jobs, inodes)?;
        } else if ft.is_file() || ft.is_symlink() {
            // Hardlinked files are one object: hash them once.
            let key = (m.dev(), m.ino());
            let job = match (m.nlink() > 1 && ft.is_file())
                .then(|| inodes.get(&key))
                .flatten()
            {
                Some(&j) => j,
                None => {
                    let j = jobs.len();
                    jobs.push(Job {
                        idx: j,
                        path: path.clone(),
                    });
                    if m.nlink() > 1 {
                        inodes.insert(key, j);
                    }
                    j
                }
            };
            nodes.push(Node::File {
                rel: rel.clone(),
                job,
            });
        } else {
            bail!(
                "{}: device nodes, sockets and fifos cannot be committed",
                path.display()
            );
        }
        rel.pop();
    }
    Ok(())
}

/// Write every job's content object; returns checksums indexed by job.
fn write_contents(repo: &ostree::Repo, jobs: Vec<Job>, threads: usize) -> Result<Vec<String>> {
    let n = jobs.len();
    let queue = Arc::new(Mutex::new(jobs.into_iter()));
    let (tx, rx) = mpsc::channel::<Result<(usize, String)>>();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let queue = Arc::clone(&queue);
            let tx = tx.clone();
            let repo = repo.clone();
            s.spawn(move || {
                loop {
                    let job = queue.lock().expect("queue lock").next();
                    let Some(job) = job else { break };
                    let r = write_content(&repo, &job.path)
                        .map(|c| (job.idx, c))
                        .with_context(|| format!("{}: writing content object", job.path.display()));
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut out = vec![String::new(); n];
        for r in rx {
            let (i, c) = r?;
            out[i] = c;
        }
        if out.iter().any(String::is_empty) {
            bail!("content writers stopped before writing every object");
        }
        Ok(out)
    })
}

fn file_info(m: &std::fs::Metadata, symlink_target: Option<&str>) -> gio::FileInfo {
    let info = gio::FileInfo::new();
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        gio::FileType::Directory
    } else if ft.is_symlink() {
        gio::FileType::SymbolicLink
    } else {
        gio::FileType::Regular
    };
    info.set_file_type(kind);
    info.set_attribute_uint32("unix::uid", m.uid());
    info.set_attribute_uint32("unix::gid", m.gid());
    info.set_attribute_uint32("unix::mode", m.mode());
    if ft.is_file() {
        info.set_size(m.size() as i64);
    }
    if let Some(t) = symlink_target {
        info.set_symlink_target(t);
    }
    info
}

/// Extended attributes exactly as libostree reads them (same order).
fn xattrs_of(path: &Path) -> Result<glib::Variant> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = match path.file_name() {
        Some(n) => n.to_string_lossy().into_owned(),
        None => ".".to_string(),
    };
    let dir =
        fs::File::open(parent).with_context(|| format!("{}: cannot open", parent.display()))?;
    ostree::fs_get_all_xattrs_at(dir.as_raw_fd(), &name, gio::Cancellable::NONE)
        .with_context(|| format!("{}: cannot read extended attributes", path.display()))
}

fn write_content(repo: &ostree::Repo, path: &Path) -> Result<String> {
    let m = fs::symlink_metadata(path)?;
    let xattrs = xattrs_of(path)?;
    let (bytes, info) = if m.file_type().is_symlink() {
        let target = fs::read_link(path)?;
        let target = target
            .to_str()
            .ok_or_else(|| anyhow!("symlink target is not UTF-8"))?;
        (glib::Bytes::from_static(b""), file_info(&m, Some(target)))
    } else {
        (
            glib::Bytes::from_owned(fs::read(path)?),
            file_info(&m, None),
        )
    };
    let input = || gio::MemoryInputStream::from_bytes(&bytes);
    // Hash first (cheap) and skip objects the repo has: a recompose
    // compresses only what changed, not the whole tree again.
    let csum = ostree::checksum_file_from_input(
        &info,
        Some(&xattrs),
        Some(&input()),
        ostree::ObjectType::File,
        gio::Cancellable::NONE,
    )
    .map_err(|e| anyhow!("{e}"))?
    .to_hex();
    if repo.has_object(ostree::ObjectType::File, &csum, gio::Cancellable::NONE)? {
        return Ok(csum);
    }
    let (stream, len) =
        ostree::raw_file_to_content_stream(&input(), &info, Some(&xattrs), gio::Cancellable::NONE)?;
    let written = repo.write_content(Some(&csum), &stream, len, gio::Cancellable::NONE)?;
    Ok(written.to_hex())
}
