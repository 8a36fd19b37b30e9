//! One file's text into a [`Fragment`]: JSON or YAML (by the file name),
//! every key checked on its own so that one run reports every error.
//!
//! Keys are classified by `fields.rs`: known fields are deserialised one at
//! a time (a bad one does not hide the next), comment keys and retired keys
//! are dropped with a warning, `packages-<arch>` is collected per
//! architecture, and anything else is an error naming the closest key.

use serde_json::{Map, Value};

use super::fields::{self, Key, Store};
use super::fragment::{self, Fragment};
use super::merge::Merge;

/// The outcome of reading one file: a best-effort fragment, and every
/// error and warning as one line each (`file: field: message`).
#[derive(Debug, Default)]
pub struct Parsed {
    pub frag: Fragment,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// The text could not be read as JSON/YAML at all.
    pub unreadable: bool,
}

/// The file's format, from its name: `.yaml`/`.yml` are YAML, anything
/// else JSON (as rpm-ostree decides).
pub fn is_yaml(file: &str) -> bool {
    file.ends_with(".yaml") || file.ends_with(".yml")
}

/// Read `text` (the contents of `file`) into a JSON value.
pub fn read_value(file: &str, text: &str) -> Result<Value, String> {
    if is_yaml(file) {
        return serde_saphyr::from_str::<Value>(text).map_err(|e| {
            // "error: line L column C: MESSAGE --> <input>:L:C | snippet":
            // the snippet would be folded into the one line; drop it.
            let full = one_line(&e.to_string());
            let msg = full.split(" --> ").next().unwrap_or(&full);
            let msg = msg.strip_prefix("error: ").unwrap_or(msg);
            format!("{file}: invalid YAML: {msg}")
        });
    }
    serde_json::from_str(text).map_err(|e| {
        let hint = if looks_like_yaml(text) {
            " (this looks like YAML: name the file .yaml or .yml)"
        } else {
            ""
        };
        format!("{file}: invalid JSON: {e}{hint}")
    })
}

/// Text whose first meaningful line is not JSON but reads as YAML
/// (`key: value`, `- item`, `---`, a `#` comment).
fn looks_like_yaml(text: &str) -> bool {
    let Some(first) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return false;
    };
    if first.starts_with('{') || first.starts_with('[') {
        return false;
    }
    first.starts_with('#')
        || first.starts_with("---")
        || first.starts_with("- ")
        || first
            .split_once(':')
            .is_some_and(|(k, _)| !k.is_empty() && !k.contains(' ') && !k.starts_with('"'))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parse one file. `file` is how it is named in messages.
pub fn parse_file(file: &str, text: &str) -> Parsed {
    match read_value(file, text) {
        Ok(v) => parse_value(file, v),
        Err(e) => Parsed {
            errors: vec![e],
            unreadable: true,
            ..Parsed::default()
        },
    }
}

/// Parse an already-read value (a file, or a treefile written inline in a
/// `conditional-include`, then `file` names where it is).
pub fn parse_value(file: &str, value: Value) -> Parsed {
    let mut out = Parsed::default();
    let Value::Object(map) = value else {
        out.errors.push(format!(
            "{file}: a treefile must be a mapping of fields (a JSON object)"
        ));
        return out;
    };
    for (key, v) in map {
        parse_key(file, key, v, &mut out);
    }
    if !out.frag.bootstrap_packages.is_empty() {
        out.warnings.push(format!(
            "{file}: bootstrap_packages: deprecated; its packages are added to `packages`"
        ));
    }
    match out.frag.boot_location.as_deref() {
        None | Some("modules") => {}
        Some("new") => out.warnings.push(format!(
            "{file}: boot-location: `new` is deprecated; keelson puts the kernel in /usr/lib/modules only"
        )),
        Some(other) => out.errors.push(format!(
            "{file}: boot-location: {other:?} is not `new` or `modules`"
        )),
    }
    out.errors.extend(fragment::validate(file, &out.frag));
    out
}

fn parse_key(file: &str, key: String, v: Value, out: &mut Parsed) {
    if v.is_null() {
        // `packages:` with nothing under it: unset, as in rpm-ostree (every
        // field there is optional).
        return;
    }
    match fields::classify(&key) {
        Key::Field(f) => match f.store {
            Store::Typed => {
                let mut one = Map::new();
                one.insert(key, v);
                match serde_path_to_error::deserialize::<_, Fragment>(Value::Object(one)) {
                    Ok(frag) => {
                        let prev = std::mem::take(&mut out.frag);
                        out.frag = prev.merge(frag);
                    }
                    Err(e) => out.errors.push(format!("{file}: {}", describe(&e))),
                }
            }
            Store::Generic(shape) => {
                if shape.matches(&v) {
                    out.frag.extra.insert(key, v);
                } else {
                    out.errors.push(format!(
                        "{file}: {key}: invalid type: expected {}",
                        shape.name()
                    ));
                }
            }
        },
        Key::ArchPackages(arch) => match serde_path_to_error::deserialize::<_, Vec<String>>(v) {
            Ok(list) => out
                .frag
                .arch_packages
                .entry(arch.to_string())
                .or_default()
                .extend(list),
            Err(e) => out.errors.push(format!("{file}: {key}{}", describe(&e))),
        },
        Key::Comment => out
            .warnings
            .push(format!("{file}: {key}: comment key, ignored")),
        Key::Retired => out
            .warnings
            .push(format!("{file}: {key}: retired rpm-ostree field, ignored")),
        Key::Unknown => out
            .errors
            .push(format!("{file}: {key}: {}", fields::unknown_message(&key))),
    }
}

/// `field[3].sub: message` for an error under a single-key object, or
/// `[0]: message` for one in a value already under a named key.
fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    format!("{path}: {}", simplify(e.inner()))
}

/// serde_json appends " at line 1 column 0" for values deserialised from a
/// `Value`, which is noise here; and it lists every accepted key after an
/// unknown one, which would swamp the message.
fn simplify(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    if let Some(i) = s.find(" at line ") {
        s.truncate(i);
    }
    if s.starts_with("unknown field")
        && let Some(i) = s.find(", expected")
    {
        s.truncate(i);
    }
    s
}

/// One file's fragment, or all its errors as one error (one line each).
pub fn parse(file: &str, text: &str) -> anyhow::Result<Fragment> {
    let p = parse_file(file, text);
    if p.errors.is_empty() {
        Ok(p.frag)
    } else {
        Err(anyhow::anyhow!(p.errors.join("\n")))
    }
}

#[cfg(test)]
mod tests;
