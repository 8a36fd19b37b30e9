//! Package backends: turn a treefile's package set into a root filesystem.

pub mod deb;
pub mod install_cache;
pub mod sources;

use std::fmt;

/// An installed (or to-be-installed) package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

impl fmt::Display for Package {
    /// apt's own syntax: `name:arch=version`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}={}", self.name, self.arch, self.version)
    }
}

/// An amd64 package, for tests.
#[cfg(test)]
pub fn test_pkg(name: &str, version: &str) -> Package {
    Package {
        name: name.into(),
        version: version.into(),
        arch: "amd64".into(),
    }
}
