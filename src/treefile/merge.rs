//! The include merge rules (reference/treefile.md), as a pure function.
//!
//! scalars: the includer wins; lists: the included file's items first;
//! maps: union with the includer winning; `packages`: a set (deduplicated
//! when the treefile is finalised, order kept for readability).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fragment::Fragment;

/// Merge an included file's value (`self`) with the includer's.
pub trait Merge {
    fn merge(self, includer: Self) -> Self;
}

/// Scalars: the includer wins, the included file fills gaps.
impl<T> Merge for Option<T> {
    fn merge(self, includer: Self) -> Self {
        includer.or(self)
    }
}

impl<const D: bool> Merge for super::fragment::Flag<D> {
    fn merge(self, includer: Self) -> Self {
        Self(includer.0.or(self.0))
    }
}

/// Lists: the included file's items first.
impl<T> Merge for Vec<T> {
    fn merge(mut self, includer: Self) -> Self {
        self.extend(includer);
        self
    }
}

/// Maps: union; a key in both merges its values (lists concatenate,
/// scalars: the includer wins).
impl<K: Ord, V: Merge> Merge for BTreeMap<K, V> {
    fn merge(mut self, includer: Self) -> Self {
        for (k, v) in includer {
            let merged = match self.remove(&k) {
                Some(old) => old.merge(v),
                None => v,
            };
            self.insert(k, merged);
        }
        self
    }
}

/// `add-commit-metadata`: union, the includer's value wins.
impl Merge for Map<String, Value> {
    fn merge(mut self, includer: Self) -> Self {
        self.extend(includer);
        self
    }
}

/// A map's string value (`repovars`): the includer wins.
impl Merge for String {
    fn merge(self, includer: Self) -> Self {
        includer
    }
}

/// A field kept as JSON (`Fragment::extra`): rpm-ostree's rule for its
/// shape: lists concatenate (the included items first), maps union with
/// the includer winning, scalars: the includer wins.
impl Merge for Value {
    fn merge(self, includer: Self) -> Self {
        match (self, includer) {
            (Value::Array(a), Value::Array(b)) => Value::Array(a.merge(b)),
            (Value::Object(a), Value::Object(b)) => Value::Object(a.merge(b)),
            (_, b) => b,
        }
    }
}

impl Merge for super::fragment::VarValue {
    fn merge(self, includer: Self) -> Self {
        includer
    }
}

/// Declare a struct whose [`Merge`] merges it field by field, each field
/// by its type's rule: the field list is written once.
#[macro_export]
macro_rules! mergeable {
    (
        $(#[$m:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fm:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$m])*
        $vis struct $name {
            $( $(#[$fm])* $fvis $field : $ty ),*
        }

        impl $crate::treefile::merge::Merge for $name {
            fn merge(self, includer: Self) -> Self {
                $name {
                    $( $field: $crate::treefile::merge::Merge::merge(self.$field, includer.$field) ),*
                }
            }
        }
    };
}

/// Merge `included` into `includer` (the file that named it).
/// `include`/`arch-include` are consumed by the loader and dropped here.
pub fn merge(included: Fragment, includer: Fragment) -> Fragment {
    let mut f = included.merge(includer);
    f.include = None;
    f.arch_include = None;
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::treefile::parse::parse;

    fn m(included: &str, includer: &str) -> Fragment {
        merge(
            parse("a.json", included).unwrap(),
            parse("b.json", includer).unwrap(),
        )
    }

    #[test]
    fn merge_table() {
        // (included, includer, check)
        type Check = fn(&Fragment) -> bool;
        let table: &[(&str, &str, Check)] = &[
            // scalars: includer wins, included fills gaps
            (r#"{"ref":"a"}"#, r#"{"ref":"b"}"#, |f| {
                f.ref_.as_deref() == Some("b")
            }),
            (r#"{"ref":"a"}"#, r#"{}"#, |f| {
                f.ref_.as_deref() == Some("a")
            }),
            (r#"{"recommends":false}"#, r#"{"recommends":true}"#, |f| {
                f.recommends.get()
            }),
            // lists: included items first
            (r#"{"packages":["a","b"]}"#, r#"{"packages":["c"]}"#, |f| {
                f.packages == ["a", "b", "c"]
            }),
            (
                r#"{"postprocess":["one"]}"#,
                r#"{"postprocess":["two"]}"#,
                |f| f.postprocess == ["one", "two"],
            ),
            (r#"{"units":["x"]}"#, r#"{}"#, |f| f.units == ["x"]),
            // maps: union, includer wins on a clash
            (
                r#"{"variables":{"a":"1","b":"1"}}"#,
                r#"{"variables":{"b":"2"}}"#,
                |f| {
                    let v = &f.variables;
                    v["a"].render() == "1" && v["b"].render() == "2"
                },
            ),
            (
                r#"{"add-commit-metadata":{"k":"old","x":1}}"#,
                r#"{"add-commit-metadata":{"k":"new"}}"#,
                |f| {
                    let v = &f.add_commit_metadata;
                    v["k"] == "new" && v["x"] == 1
                },
            ),
            // arch lists concatenate per arch
            (
                r#"{"packages-x86_64":["a"]}"#,
                r#"{"packages-x86_64":["b"]}"#,
                |f| f.arch_packages["x86_64"] == vec!["a".to_string(), "b".to_string()],
            ),
            // the deb source merges field by field
            (
                r#"{"deb":{"suite":"bookworm","components":["main"]}}"#,
                r#"{"deb":{"suite":"trixie"}}"#,
                |f| {
                    let d = &f.deb;
                    d.suite.as_deref() == Some("trixie")
                        && d.components == Some(vec!["main".to_string()])
                },
            ),
        ];
        for (i, (a, b, check)) in table.iter().enumerate() {
            assert!(check(&m(a, b)), "row {i}: {a} + {b}");
        }
    }
}
