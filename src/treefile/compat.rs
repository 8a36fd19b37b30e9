//! rpm-ostree fields beyond the core set, as pure functions:
//! `conditional-include` expressions, the per-file checks of the newer
//! fields, `install-langs` as dpkg filters, `repovars` substitution, and
//! what a deb compose refuses ([`backend_errors`]).

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::{self, Support};
use super::fragment::{CheckPasswd, Fragment, IdEntry, IncludeTarget, VarValue};

/// `<var> <op> <value>` from a `conditional-include` `if`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub var: String,
    pub op: Op,
    pub value: VarValue,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Parse a condition as rpm-ostree does: a variable name, an operator, and
/// `true`/`false`, a number or a double-quoted string.
pub fn parse_condition(s: &str) -> Result<Condition, String> {
    let t = s.trim();
    let name_end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(t.len());
    let (var, rest) = t.split_at(name_end);
    if var.is_empty() {
        return Err(format!("{s:?}: expected `<variable> <op> <value>`"));
    }
    let rest = rest.trim_start();
    let (op, rest) = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ]
    .iter()
    .find_map(|(tok, op)| rest.strip_prefix(tok).map(|r| (*op, r)))
    .ok_or_else(|| format!("{s:?}: expected one of ==, !=, <, <=, >, >= after `{var}`"))?;
    let v = rest.trim();
    let value = match v {
        "true" => VarValue::Bool(true),
        "false" => VarValue::Bool(false),
        _ if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => {
            VarValue::Str(v[1..v.len() - 1].to_string())
        }
        _ => VarValue::Int(v.parse().map_err(|_| {
            format!("{s:?}: the value {v:?} is not true, false, a number or a \"quoted string\"")
        })?),
    };
    Ok(Condition {
        var: var.to_string(),
        op,
        value,
    })
}

fn type_name(v: &VarValue) -> &'static str {
    match v {
        VarValue::Str(_) => "a string",
        VarValue::Int(_) => "a number",
        VarValue::Bool(_) => "a boolean",
    }
}

/// Evaluate against the variables defined so far. An undefined variable,
/// a type mismatch or an ordering of non-numbers is an error, as in
/// rpm-ostree.
pub fn evaluate(c: &Condition, vars: &BTreeMap<String, VarValue>) -> Result<bool, String> {
    let Some(val) = vars.get(&c.var) else {
        return Err(format!("undefined variable `{}`", c.var));
    };
    if std::mem::discriminant(val) != std::mem::discriminant(&c.value) {
        return Err(format!(
            "`{}` is {} ({}), compared with {}",
            c.var,
            type_name(val),
            val.render(),
            type_name(&c.value)
        ));
    }
    Ok(match (c.op, val, &c.value) {
        (Op::Eq, a, b) => a == b,
        (Op::Ne, a, b) => a != b,
        (op, VarValue::Int(a), VarValue::Int(b)) => match op {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            _ => a >= b,
        },
        _ => return Err(format!("`{}`: <, <=, >, >= compare numbers only", c.var)),
    })
}

/// Per-file checks of the fields this module owns.
pub fn validate(file: &str, f: &Fragment, e: &mut Vec<String>) {
    for (i, ci) in f.conditional_include.iter().enumerate() {
        for (j, c) in ci.condition.clone().into_vec().iter().enumerate() {
            if let Err(m) = parse_condition(c) {
                e.push(format!("{file}: conditional-include[{i}].if[{j}]: {m}"));
            }
        }
        if let IncludeTarget::Files(files) = &ci.include
            && files.clone().into_vec().iter().any(String::is_empty)
        {
            e.push(format!(
                "{file}: conditional-include[{i}].include: empty path"
            ));
        }
    }
    if let Some(CheckPasswd::Data { entries }) = &f.check_groups {
        for (name, id) in entries {
            if let IdEntry::Pair(..) = id {
                e.push(format!(
                    "{file}: check-groups.entries.{name}: a group has one id, not [uid, gid]"
                ));
            }
        }
    }
    for (field, c) in [
        ("check-passwd", &f.check_passwd),
        ("check-groups", &f.check_groups),
    ] {
        if let Some(CheckPasswd::File { filename }) = c
            && filename.is_empty()
        {
            e.push(format!("{file}: {field}.filename: path is empty"));
        }
    }
    if let Some(s) = &f.automatic_version_suffix
        && !(s.len() == 1 && s.is_ascii())
    {
        e.push(format!(
            "{file}: automatic-version-suffix: {s:?} must be a single ASCII character"
        ));
    }
    for k in f.repovars.keys() {
        if k == "releasever" || k == "basearch" {
            e.push(format!(
                "{file}: repovars.{k}: reserved (set `{k}` itself, not a repo variable)"
            ));
        }
    }
    for (i, l) in f.install_langs.iter().enumerate() {
        if !valid_lang(l) {
            e.push(format!(
                "{file}: install-langs[{i}]: {l:?} is not a locale name like en_US or fr"
            ));
        }
    }
    for (field, refs) in [
        ("ostree-layers", &f.ostree_layers),
        ("ostree-override-layers", &f.ostree_override_layers),
    ] {
        for (i, r) in refs.iter().enumerate() {
            if r.is_empty() || r.contains(char::is_whitespace) {
                e.push(format!("{file}: {field}[{i}]: {r:?} is not an ostree ref"));
            }
        }
    }
    if let Some(a) = &f.basearch
        && fields::arch_name(a).is_none()
    {
        e.push(format!(
            "{file}: basearch: unknown architecture {a:?} (known: {})",
            fields::known_arches()
        ));
    }
}

/// `ll`, `ll_CC`, optionally `.charset` and `@modifier`.
fn valid_lang(l: &str) -> bool {
    !l.is_empty()
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'))
        && l.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

/// `install-langs` as dpkg filters: drop every locale's translations and
/// man pages except those of the listed locales (and their language:
/// `en_US` keeps `en`). dpkg applies the last matching rule, so the
/// includes follow the excludes.
pub fn install_langs_dpkg_opts(langs: &[String]) -> Vec<String> {
    if langs.is_empty() {
        return vec![];
    }
    let mut keep: Vec<String> = Vec::new();
    for l in langs {
        let lang = l
            .split(['_', '.', '@'])
            .next()
            .expect("split yields one part")
            .to_string();
        for k in [l.clone(), lang] {
            if !keep.contains(&k) {
                keep.push(k);
            }
        }
    }
    let mut out = vec![
        "path-exclude=/usr/share/locale/*/*".to_string(),
        "path-exclude=/usr/share/man/??/*".to_string(),
        "path-exclude=/usr/share/man/??_*/*".to_string(),
        "path-exclude=/usr/share/man/??.*/*".to_string(),
    ];
    for k in &keep {
        out.push(format!("path-include=/usr/share/locale/{k}/*"));
        out.push(format!("path-include=/usr/share/man/{k}/*"));
    }
    out
}

/// `$name` and `${name}` from `repovars` in an apt source field (yum's
/// syntax). A `$` not followed by a known name is left alone.
pub fn substitute_repovars(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    // Longest names first, so `$arch` does not cut `$architecture`.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        out = out.replace(&format!("${{{n}}}"), &vars[n]);
        out = out.replace(&format!("${n}"), &vars[n]);
    }
    out
}

/// What a compose on the deb backend cannot honour in the flattened
/// treefile, one line per field (`--print-only` does not ask).
pub fn backend_errors(shown: &str, f: &Fragment) -> Vec<String> {
    let mut e = Vec::new();
    for (key, v) in &f.extra {
        let Some(field) = fields::lookup(key) else {
            continue;
        };
        let refused = match field.support {
            Support::NeedsRpm(why) => Some(format!("{why} (keelson has only the deb backend)")),
            Support::Limited(why) if !limited_ok(key, v) => Some(why.to_string()),
            _ => None,
        };
        if let Some(why) = refused {
            e.push(format!("{shown}: {key}: {why}"));
        }
    }
    if f.selinux == Some(true) {
        e.push(format!(
            "{shown}: selinux: only `false`: keelson's Debian trees are not SELinux-labelled"
        ));
    }
    if let Some(a) = &f.basearch
        && fields::arch_name(a) != fields::arch_name(super::basearch())
    {
        e.push(format!(
            "{shown}: basearch: {a:?}, but keelson composes for the build machine's architecture ({})",
            super::basearch()
        ));
    }
    e
}

/// The values a [`Support::Limited`] field may take on a keelson compose.
fn limited_ok(key: &str, v: &Value) -> bool {
    match key {
        "ignore-devices" => v == &Value::Bool(true),
        "container" | "no-initramfs" => v == &Value::Bool(false),
        "opt-usrlocal" => v == "var",
        "container-cmd" => v.as_array().is_some_and(Vec::is_empty),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, VarValue> {
        [
            ("releasever", VarValue::Int(35)),
            ("stream", VarValue::Str("development".into())),
            ("devpackages", VarValue::Bool(true)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn condition_table() {
        let ok: &[(&str, bool)] = &[
            ("devpackages == true", true),
            ("devpackages != true", false),
            ("devpackages==false", false),
            (r#"stream != "development""#, false),
            (r#"stream == "development""#, true),
            (r#"  stream=="prod"  "#, false),
            ("releasever >= 35", true),
            ("releasever > 35", false),
            ("releasever < 36", true),
            ("releasever <= 34", false),
            ("releasever == 35", true),
        ];
        for (c, want) in ok {
            let cond = parse_condition(c).unwrap_or_else(|e| panic!("{c}: {e}"));
            assert_eq!(evaluate(&cond, &vars()), Ok(*want), "{c}");
        }
        let bad_parse: &[(&str, &str)] = &[
            ("== 3", "expected `<variable> <op> <value>`"),
            ("x ~ 3", "expected one of ==, !="),
            ("x == maybe", "is not true, false, a number"),
            ("x == 'single'", "is not true, false, a number"),
        ];
        for (c, want) in bad_parse {
            let e = parse_condition(c).unwrap_err();
            assert!(e.contains(want), "{c}: {e}");
        }
        let bad_eval: &[(&str, &str)] = &[
            ("nope == 1", "undefined variable `nope`"),
            (
                r#"releasever == "35""#,
                "`releasever` is a number (35), compared with a string",
            ),
            ("stream == 3", "`stream` is a string"),
            (r#"stream > "a""#, "compare numbers only"),
        ];
        for (c, want) in bad_eval {
            let e = evaluate(&parse_condition(c).unwrap(), &vars()).unwrap_err();
            assert!(e.contains(want), "{c}: {e}");
        }
    }

    #[test]
    fn install_langs_table() {
        assert!(install_langs_dpkg_opts(&[]).is_empty());
        let o = install_langs_dpkg_opts(&["en_US".into(), "fr".into(), "de_DE.UTF-8".into()]);
        let includes: Vec<&str> = o
            .iter()
            .filter_map(|l| l.strip_prefix("path-include=/usr/share/locale/"))
            .collect();
        assert_eq!(
            includes,
            ["en_US/*", "en/*", "fr/*", "de_DE.UTF-8/*", "de/*"]
        );
        assert!(
            o[0].starts_with("path-exclude="),
            "excludes come first: {o:?}"
        );
        let last_exclude = o
            .iter()
            .rposition(|l| l.starts_with("path-exclude"))
            .unwrap();
        let first_include = o
            .iter()
            .position(|l| l.starts_with("path-include"))
            .unwrap();
        assert!(last_exclude < first_include);
        for (l, ok) in [
            ("en_US", true),
            ("sr@latin", true),
            ("C", false),
            ("", false),
            ("en US", false),
        ] {
            assert_eq!(valid_lang(l), ok, "{l}");
        }
    }

    /// Every field of the table, set, on a deb compose: needs-rpm fields are
    /// refused with their reason, limited ones only for values keelson
    /// cannot honour, the rest pass.
    #[test]
    fn compose_refusals_follow_the_table() {
        use crate::treefile::fields::{FIELDS, Shape, Store};
        for f in FIELDS {
            let Store::Generic(shape) = f.store else {
                continue; // typed fields: see the selinux/basearch rows below
            };
            let (bad, good): (Value, Option<Value>) = match shape {
                Shape::Bool => match f.key {
                    "ignore-devices" => (false.into(), Some(true.into())),
                    _ => (true.into(), Some(false.into())),
                },
                Shape::Str if f.key == "opt-usrlocal" => ("root".into(), Some("var".into())),
                Shape::Str => ("x".into(), None),
                Shape::Int => (1.into(), None),
                Shape::StrList => (serde_json::json!(["x"]), Some(serde_json::json!([]))),
                Shape::Map => (serde_json::json!({"x": 1}), None),
                Shape::List => (serde_json::json!([{"x": 1}]), None),
            };
            let with = |v: Value| {
                let mut frag = Fragment::default();
                frag.extra.insert(f.key.to_string(), v);
                backend_errors("t.yaml", &frag)
            };
            let e = with(bad);
            match f.support {
                Support::NeedsRpm(why) => {
                    assert_eq!(e.len(), 1, "{}: {e:?}", f.key);
                    assert_eq!(
                        e[0],
                        format!(
                            "t.yaml: {}: {why} (keelson has only the deb backend)",
                            f.key
                        )
                    );
                }
                Support::Limited(why) => {
                    assert_eq!(e, [format!("t.yaml: {}: {why}", f.key)]);
                    // (selinux-label-version has no value keelson can honour)
                    if let Some(good) = good {
                        assert!(
                            with(good).is_empty(),
                            "{}: the good value is refused",
                            f.key
                        );
                    }
                }
                other => panic!("{}: a generic field is {other:?}", f.key),
            }
        }
        let typed = [
            (r#"{"selinux":true}"#, Some("t.yaml: selinux: only `false`")),
            (r#"{"selinux":false}"#, None),
            (
                r#"{"basearch":"s390x"}"#,
                Some("t.yaml: basearch: \"s390x\", but keelson composes for"),
            ),
            (
                r#"{"install-langs":["en"],"ostree-layers":["a"],"edition":"2024"}"#,
                None,
            ),
        ];
        for (text, want) in typed {
            let frag: Fragment = serde_json::from_str(text).unwrap();
            let e = backend_errors("t.yaml", &frag);
            match want {
                None => assert!(e.is_empty(), "{text}: {e:?}"),
                Some(w) => assert!(e.len() == 1 && e[0].starts_with(w), "{text}: {e:?}"),
            }
        }
    }

    #[test]
    fn repovars_table() {
        let v: BTreeMap<String, String> = [("stream", "stable"), ("streamx", "X")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let t = [
            ("https://m/$stream/deb", "https://m/stable/deb"),
            ("https://m/${stream}/deb", "https://m/stable/deb"),
            ("https://m/$streamx/deb", "https://m/X/deb"),
            ("https://m/$other/deb", "https://m/$other/deb"),
        ];
        for (i, want) in t {
            assert_eq!(substitute_repovars(i, &v), want, "{i}");
        }
    }
}
