//! `${name}` substitution in treefile strings (pure).

use std::collections::BTreeMap;

/// Replace every `${name}` in `s` with its value; an unknown name or an
/// unterminated `${` is an error naming it.
pub fn substitute(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated \"${{\" in {s:?}"));
        };
        let name = &after[..end];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(format!("unknown variable ${{{name}}} in {s:?}")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let vars: BTreeMap<String, String> = [("basearch", "x86_64"), ("releasever", "12")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ok = [
            (
                "keelson/${releasever}/${basearch}/node",
                "keelson/12/x86_64/node",
            ),
            ("plain", "plain"),
            ("${releasever}", "12"),
            ("a$b{c}", "a$b{c}"),
        ];
        for (input, want) in ok {
            assert_eq!(substitute(input, &vars).unwrap(), want, "{input}");
        }
        let bad = [
            ("x/${nope}", "unknown variable ${nope}"),
            ("x/${basearch", "unterminated"),
        ];
        for (input, want) in bad {
            let e = substitute(input, &vars).unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
        }
    }
}
