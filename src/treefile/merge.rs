//! The include merge rules (reference/treefile.md), as a pure function.
//!
//! scalars: the includer wins; lists: the included file's items first;
//! maps: union with the includer winning; `packages`: a set (deduplicated
//! when the treefile is finalised, order kept for readability).

use std::collections::BTreeMap;

use super::fragment::Fragment;

fn scalar<T>(includer: Option<T>, included: Option<T>) -> Option<T> {
    includer.or(included)
}

fn list<T>(included: Option<Vec<T>>, includer: Option<Vec<T>>) -> Option<Vec<T>> {
    match (included, includer) {
        (None, None) => None,
        (a, b) => {
            let mut out = a.unwrap_or_default();
            out.extend(b.unwrap_or_default());
            Some(out)
        }
    }
}

fn map<K: Ord, V>(
    included: Option<BTreeMap<K, V>>,
    includer: Option<BTreeMap<K, V>>,
) -> Option<BTreeMap<K, V>> {
    match (included, includer) {
        (None, None) => None,
        (a, b) => {
            let mut out = a.unwrap_or_default();
            out.extend(b.unwrap_or_default());
            Some(out)
        }
    }
}

/// Merge `included` into `includer` (the file that named it).
/// `include`/`arch-include` are consumed by the loader and dropped here.
pub fn merge(included: Fragment, includer: Fragment) -> Fragment {
    let mut arch_packages = included.arch_packages;
    for (arch, pkgs) in includer.arch_packages {
        arch_packages.entry(arch).or_default().extend(pkgs);
    }
    let deb = match (included.deb, includer.deb) {
        (Some(a), Some(b)) => Some(super::fragment::DebSource {
            suite: scalar(b.suite, a.suite),
            mirror: scalar(b.mirror, a.mirror),
            components: scalar(b.components, a.components),
            variant: scalar(b.variant, a.variant),
            extra_sources: list(a.extra_sources, b.extra_sources),
        }),
        (a, b) => scalar(b, a),
    };
    let metadata = match (included.add_commit_metadata, includer.add_commit_metadata) {
        (None, None) => None,
        (a, b) => {
            let mut out = a.unwrap_or_default();
            for (k, v) in b.unwrap_or_default() {
                out.insert(k, v);
            }
            Some(out)
        }
    };
    Fragment {
        ref_: scalar(includer.ref_, included.ref_),
        include: None,
        arch_include: None,
        variables: map(included.variables, includer.variables),
        releasever: scalar(includer.releasever, included.releasever),
        backend: scalar(includer.backend, included.backend),
        deb,
        repos: list(included.repos, includer.repos),
        packages: list(included.packages, includer.packages),
        exclude_packages: list(included.exclude_packages, includer.exclude_packages),
        recommends: scalar(includer.recommends, included.recommends),
        documentation: scalar(includer.documentation, included.documentation),
        add_files: list(included.add_files, includer.add_files),
        remove_files: list(included.remove_files, includer.remove_files),
        remove_from_packages: list(included.remove_from_packages, includer.remove_from_packages),
        postprocess: list(included.postprocess, includer.postprocess),
        postprocess_script: scalar(includer.postprocess_script, included.postprocess_script),
        units: list(included.units, includer.units),
        default_target: scalar(includer.default_target, included.default_target),
        initramfs_args: list(included.initramfs_args, includer.initramfs_args),
        preserve_passwd: scalar(includer.preserve_passwd, included.preserve_passwd),
        check_passwd: scalar(includer.check_passwd, included.check_passwd),
        check_groups: scalar(includer.check_groups, included.check_groups),
        ignore_removed_users: list(included.ignore_removed_users, includer.ignore_removed_users),
        ignore_removed_groups: list(
            included.ignore_removed_groups,
            includer.ignore_removed_groups,
        ),
        machineid_compat: scalar(includer.machineid_compat, included.machineid_compat),
        readonly_executables: scalar(includer.readonly_executables, included.readonly_executables),
        tmp_is_dir: scalar(includer.tmp_is_dir, included.tmp_is_dir),
        automatic_version_prefix: scalar(
            includer.automatic_version_prefix,
            included.automatic_version_prefix,
        ),
        mutate_os_release: scalar(includer.mutate_os_release, included.mutate_os_release),
        add_commit_metadata: metadata,
        selinux: scalar(includer.selinux, included.selinux),
        osname: scalar(includer.osname, included.osname),
        boot_location: scalar(includer.boot_location, included.boot_location),
        arch_packages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::treefile::fragment::parse;

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
                f.recommends == Some(true)
            }),
            // lists: included items first
            (r#"{"packages":["a","b"]}"#, r#"{"packages":["c"]}"#, |f| {
                f.packages == Some(vec!["a".into(), "b".into(), "c".into()])
            }),
            (
                r#"{"postprocess":["one"]}"#,
                r#"{"postprocess":["two"]}"#,
                |f| f.postprocess == Some(vec!["one".into(), "two".into()]),
            ),
            (r#"{"units":["x"]}"#, r#"{}"#, |f| {
                f.units == Some(vec!["x".into()])
            }),
            // maps: union, includer wins on a clash
            (
                r#"{"variables":{"a":"1","b":"1"}}"#,
                r#"{"variables":{"b":"2"}}"#,
                |f| {
                    let v = f.variables.as_ref().unwrap();
                    v["a"].render() == "1" && v["b"].render() == "2"
                },
            ),
            (
                r#"{"add-commit-metadata":{"k":"old","x":1}}"#,
                r#"{"add-commit-metadata":{"k":"new"}}"#,
                |f| {
                    let v = f.add_commit_metadata.as_ref().unwrap();
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
                    let d = f.deb.as_ref().unwrap();
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
