//! Just enough QQL for the filters clients send (docs/qualys-api.md §2.3): `key:value` terms
//! joined by whitespace or `and`, values bare, `"quoted"` (with `\` escapes), `'quoted'` or a
//! `[range]`.

/// The `(key, value)` terms of `filter`, or why it is not understood.
pub(crate) fn parse(filter: &str) -> Result<Vec<(String, String)>, String> {
    let chars: Vec<char> = filter.chars().collect();
    let mut i = 0;
    let mut terms = Vec::new();
    loop {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        if i >= chars.len() {
            return Ok(terms);
        }
        let rest: String = chars[i..]
            .iter()
            .take(4)
            .collect::<String>()
            .to_ascii_lowercase();
        if !terms.is_empty()
            && rest.starts_with("and")
            && rest.chars().nth(3).is_some_and(char::is_whitespace)
        {
            i += 3;
            continue;
        }
        let start = i;
        while chars.get(i).is_some_and(|c| *c != ':') {
            i += 1;
        }
        if i >= chars.len() {
            return Err(format!(
                "no `:` in filter term `{}`",
                chars[start..].iter().collect::<String>()
            ));
        }
        let key: String = chars[start..i]
            .iter()
            .collect::<String>()
            .trim()
            .to_string();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("invalid filter field `{key}`"));
        }
        i += 1;
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        let value = match chars.get(i) {
            Some(&q @ ('"' | '\'')) => {
                i += 1;
                let mut v = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated quote in filter `{filter}`")),
                        Some('\\') if chars.get(i + 1).is_some() => {
                            v.push(chars[i + 1]);
                            i += 2;
                        }
                        Some(c) if *c == q => {
                            i += 1;
                            break v;
                        }
                        Some(c) => {
                            v.push(*c);
                            i += 1;
                        }
                    }
                }
            }
            Some('[') => {
                let s = i;
                while chars.get(i).is_some_and(|c| *c != ']') {
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(format!("unterminated range in filter `{filter}`"));
                }
                i += 1;
                chars[s..i].iter().collect()
            }
            _ => {
                let s = i;
                while chars.get(i).is_some_and(|c| !c.is_whitespace()) {
                    i += 1;
                }
                chars[s..i].iter().collect()
            }
        };
        terms.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn filters() {
        assert_eq!(
            parse(r#"registryUri:"https://a.b/c""#).unwrap(),
            vec![t("registryUri", "https://a.b/c")]
        );
        assert_eq!(
            parse(r#"repo.repository: "my \"app\"""#).unwrap(),
            vec![t("repo.repository", r#"my "app""#)]
        );
        assert_eq!(
            parse("sha:abc and updated:[123 ..]").unwrap(),
            vec![t("sha", "abc"), t("updated", "[123 ..]")]
        );
        assert_eq!(
            parse("a:'x y' AND b:2").unwrap(),
            vec![t("a", "x y"), t("b", "2")]
        );
        assert_eq!(
            parse("registryName:android").unwrap(),
            vec![t("registryName", "android")]
        );
        assert!(parse("nocolon").is_err());
        assert!(parse(r#"a:"open"#).is_err());
        assert!(parse("").unwrap().is_empty());
    }
}
