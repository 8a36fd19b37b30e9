//! The compose inputhash: SHA-256 over everything that decides the tree.
//!
//! Covered: the canonical flattened treefile, the bytes of every file it
//! references, the resolved package set, and keelson's own embedded parts
//! (the agent binary and dracut module land in the tree, so a new keelson
//! must give a new commit). Each part is length-prefixed and labelled so
//! that moving bytes between parts changes the hash.

use sha2::{Digest, Sha256};

use crate::backend::Package;

/// One labelled input blob (a referenced file, the agent binary, ...).
pub struct Blob<'a> {
    pub label: &'a str,
    pub bytes: &'a [u8],
}

pub fn inputhash(treefile_json: &str, blobs: &[Blob<'_>], packages: &[Package]) -> String {
    let mut h = LabelledHash::default();
    h.part("treefile", treefile_json.as_bytes());
    for b in blobs {
        h.part(&format!("file:{}", b.label), b.bytes);
    }
    h.packages(packages);
    h.finish()
}

/// SHA-256 over labelled, length-prefixed parts (so that moving bytes
/// between parts changes the hash).
#[derive(Default)]
pub struct LabelledHash(Sha256);

impl LabelledHash {
    pub fn part(&mut self, label: &str, bytes: &[u8]) {
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// A package set, in any order.
    pub fn packages(&mut self, packages: &[Package]) {
        let mut pkgs: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
        pkgs.sort();
        self.part("packages", pkgs.join("\n").as_bytes());
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backend::test_pkg as pkg;

    #[test]
    fn every_input_changes_the_hash() {
        let base = inputhash(
            "{}",
            &[Blob {
                label: "a",
                bytes: b"x",
            }],
            &[pkg("p", "1")],
        );
        assert_eq!(base.len(), 64);
        let variants = [
            inputhash(
                "{ }",
                &[Blob {
                    label: "a",
                    bytes: b"x",
                }],
                &[pkg("p", "1")],
            ),
            inputhash(
                "{}",
                &[Blob {
                    label: "a",
                    bytes: b"y",
                }],
                &[pkg("p", "1")],
            ),
            inputhash(
                "{}",
                &[Blob {
                    label: "b",
                    bytes: b"x",
                }],
                &[pkg("p", "1")],
            ),
            inputhash(
                "{}",
                &[Blob {
                    label: "a",
                    bytes: b"x",
                }],
                &[pkg("p", "2")],
            ),
            inputhash("{}", &[], &[pkg("p", "1")]),
            // bytes moved from the label into the content
            inputhash(
                "{}",
                &[Blob {
                    label: "",
                    bytes: b"ax",
                }],
                &[pkg("p", "1")],
            ),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(&base, v, "variant {i}");
        }
    }

    #[test]
    fn package_order_does_not_matter() {
        let a = inputhash("{}", &[], &[pkg("a", "1"), pkg("b", "1")]);
        let b = inputhash("{}", &[], &[pkg("b", "1"), pkg("a", "1")]);
        assert_eq!(a, b);
    }
}
