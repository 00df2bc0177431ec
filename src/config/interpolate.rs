//! `${ENV}`, `${ENV:-default}` and `${file:/path}` in configuration strings.

use super::diagnostics::Diagnostic;
use super::yaml::{Node, Value};

/// Where interpolation looks things up. The daemon uses the process environment and the file
/// system; tests pass their own.
pub struct Lookup<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub file: &'a dyn Fn(&str) -> std::io::Result<String>,
}

impl Lookup<'static> {
    /// The process environment and the real file system.
    pub fn system() -> Lookup<'static> {
        Lookup {
            var: &|name| std::env::var(name).ok(),
            file: &|path| read_bounded(std::path::Path::new(path)),
        }
    }
}

/// The largest file `${file:...}` reads: secrets and certificates are far smaller, and
/// `${file:/dev/zero}` must not fill the memory.
pub const MAX_FILE: u64 = 1024 * 1024;

/// How deep `${...}` may nest inside `${...}`: one level is all the examples use, and a
/// recursion bounded by the text's length could still run out of stack.
const MAX_NESTING: usize = 8;

/// Reads a file of at most [`MAX_FILE`] bytes as text.
fn read_bounded(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE} bytes, the most `${{file:...}}` reads"
        )));
    }
    Ok(text)
}

/// Why a string could not be interpolated: the message and a hint.
pub type Failure = (String, String);

/// A scalar node's text, `${...}` interpolated; a number or boolean is taken as its text.
/// The error (at the node, with a hint where there is one) when it is no scalar or its
/// interpolation fails. `what` names the value in that error.
pub fn scalar_text(node: &Node, what: &str, lookup: &Lookup) -> Result<String, Diagnostic> {
    let raw = match &node.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        other => {
            return Err(Diagnostic {
                pos: node.pos,
                message: format!("expected a string for {what}, found {}", other.kind()),
                hint: None,
            });
        }
    };
    interpolate(&raw, lookup).map_err(|(message, hint)| Diagnostic {
        pos: node.pos,
        message,
        hint: Some(hint),
    })
}

/// Replaces every `${...}` in `raw`. `$$` stands for a literal `$`.
pub fn interpolate(raw: &str, lookup: &Lookup) -> Result<String, Failure> {
    interpolate_nested(raw, lookup, 0)
}

fn interpolate_nested(raw: &str, lookup: &Lookup, depth: usize) -> Result<String, Failure> {
    if !raw.contains('$') {
        return Ok(raw.to_string());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = closing_brace(body) else {
                return Err((
                    "unterminated `${` in a value".into(),
                    "close it with `}`, or write `$$` for a literal `$`".into(),
                ));
            };
            if depth >= MAX_NESTING {
                return Err((
                    format!("`${{` nested more than {MAX_NESTING} deep in a value"),
                    "one reference inside another is enough, e.g. `${file:${DIR}/x}`".into(),
                ));
            }
            // `${file:${CREDENTIALS_DIRECTORY}/x}`: references inside are expanded first.
            let inner = interpolate_nested(&body[..end], lookup, depth + 1)?;
            out.push_str(&expand(&inner, lookup)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` that closes a `${` whose body starts `body`.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn expand(expr: &str, lookup: &Lookup) -> Result<String, Failure> {
    if let Some(path) = expr.strip_prefix("file:") {
        return match (lookup.file)(path) {
            // Secret files usually end with a newline that is not part of the secret.
            Ok(content) => Ok(content.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => Err((
                format!("cannot read `{path}` named by `${{file:{path}}}`: {e}"),
                "check the path and that ferry's user may read it".into(),
            )),
        };
    }
    let (name, default) = match expr.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (expr, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err((
            format!("`${{{expr}}}` is not a valid reference"),
            "write ${NAME}, ${NAME:-default} or ${file:/path}".into(),
        ));
    }
    match ((lookup.var)(name), default) {
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err((
            format!("environment variable `{name}` is not set"),
            format!("set it, or give a default: ${{{name}:-value}}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_defaults_and_files() {
        let lookup = Lookup {
            var: &|n| (n == "HOST").then(|| "broker".to_string()),
            file: &|p| {
                if p == "/s" {
                    Ok("hunter2\n".into())
                } else {
                    Err(std::io::Error::other("nope"))
                }
            },
        };
        assert_eq!(
            interpolate("mqtt://${HOST}:1", &lookup).unwrap(),
            "mqtt://broker:1"
        );
        assert_eq!(interpolate("${PORT:-1883}", &lookup).unwrap(), "1883");
        assert_eq!(interpolate("${file:/s}", &lookup).unwrap(), "hunter2");
        assert_eq!(interpolate("a$$b $x", &lookup).unwrap(), "a$b $x");
        assert!(
            interpolate("${MISSING}", &lookup)
                .unwrap_err()
                .0
                .contains("MISSING")
        );
        assert!(interpolate("${file:/x}", &lookup).is_err());
        assert!(interpolate("${OPEN", &lookup).is_err());
        assert_eq!(
            interpolate("${file:${DIR:-}/s}", &lookup).unwrap(),
            "hunter2"
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let lookup = Lookup::system();
        let deep = "${".repeat(100_000) + &"}".repeat(100_000);
        let (message, _) = interpolate(&deep, &lookup).unwrap_err();
        assert!(message.contains("nested"), "{message}");
    }

    #[test]
    fn files_larger_than_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_FILE as usize + 1]).unwrap();
        let lookup = Lookup::system();
        let (message, _) =
            interpolate(&format!("${{file:{}}}", big.display()), &lookup).unwrap_err();
        assert!(message.contains("larger than"), "{message}");
        let (message, _) = interpolate("${file:/dev/zero}", &lookup).unwrap_err();
        assert!(message.contains("larger than"), "{message}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Any text, with `$`, `{`, `}`, `:-` and `file:` made frequent: Ok or Err, no panic;
        /// text without `$` comes back as it is.
        #[test]
        fn any_text_interpolates_or_errs_without_panic(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::Just("$".to_string()),
                    proptest::prelude::Just("${".to_string()),
                    proptest::prelude::Just("}".to_string()),
                    proptest::prelude::Just(":-".to_string()),
                    proptest::prelude::Just("file:".to_string()),
                    proptest::prelude::Just("HOST".to_string()),
                    ".{0,4}",
                ],
                0..24,
            )
        ) {
            let raw = parts.concat();
            let lookup = Lookup {
                var: &|n| (n == "HOST").then(|| "h${x}é".to_string()),
                file: &|p| if p.is_empty() { Err(std::io::Error::other("no")) } else { Ok(format!("{p}\n")) },
            };
            let result = interpolate(&raw, &lookup);
            if !raw.contains('$') {
                proptest::prop_assert_eq!(result.unwrap(), raw);
            }
        }
    }
}
