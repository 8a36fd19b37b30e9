//! The one-way flow: the node side (src/node/, src/reserve.rs) never names
//! a build-side module. A node runs what it was built with, and nothing of
//! the compose pipeline may leak into it.

use std::path::{Path, PathBuf};

const BUILD_SIDE: &[&str] = &[
    "treefile",
    "backend",
    "postprocess",
    "compose",
    "commit",
    "image",
    "build",
    "provision",
    "inputhash",
    "vm",
    "cli",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::NAME` and `keelson::NAME` for every build-side module.
fn offences(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for m in BUILD_SIDE {
        for prefix in ["crate::", "keelson::", "super::super::"] {
            let needle = format!("{prefix}{m}");
            for (i, line) in text.lines().enumerate() {
                let hit = line.match_indices(&needle).any(|(at, _)| {
                    let rest = &line[at + needle.len()..];
                    !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if hit {
                    found.push(format!("line {}: {}", i + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn node_side_names_no_build_side_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("reserve.rs")];
    rust_files(&src.join("node"), &mut files);
    assert!(files.len() > 5, "{files:?}");
    let mut bad = Vec::new();
    for f in &files {
        for o in offences(&std::fs::read_to_string(f).unwrap()) {
            bad.push(format!("{}: {o}", f.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "node side imports build side:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_rule_catches_what_it_should() {
    assert_eq!(offences("use crate::image::definition::Firmware;").len(), 1);
    assert_eq!(offences("let x = crate::commit::previous(r);").len(), 1);
    assert!(offences("use crate::util::cmd::Cmd; // imagery").is_empty());
    assert!(offences("crate::reserve::Profile").is_empty());
}
