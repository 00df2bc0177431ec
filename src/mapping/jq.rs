//! jq programs (run by jaq) over payloads: `transform:` and `filter:`.
//!
//! Programs see the payload as `.` and the message around it as variables: `$subject`,
//! `$topic`, `$headers`, `$match` and `$meta` (see [`VARIABLES`]).

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;

use super::excerpt::excerpt;

type Filter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

/// The variables every program may use, in the order [`Program::run`] takes their values.
pub const VARIABLES: [&str; 5] = ["$subject", "$topic", "$headers", "$match", "$meta"];

/// The most values one run may yield: a program that yields more (`range(.n)` on a payload
/// that says a billion) fails instead of holding the route and its memory.
pub const MAX_OUTPUTS: usize = 10_000;

/// A compiled jq program.
pub struct Program {
    filter: Filter,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("jq::Program")
    }
}

/// A jq runtime error (e.g. `.a` on an array, or the program's own `error(...)`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunError(pub String);

impl Program {
    /// Compiles `code`; the error is jq's own message, with the offending part of the program.
    pub fn compile(code: &str) -> Result<Program, String> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errors| load_errors(code, errors))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .with_global_vars(VARIABLES)
            .compile(modules)
            .map_err(|errors| {
                let mut out = Vec::new();
                for (_, errs) in errors {
                    for (name, undefined) in errs {
                        out.push(format!("undefined {} `{name}`", undefined.as_str()));
                    }
                }
                out.join("; ")
            })?;
        Ok(Program { filter })
    }

    /// Runs the program on `input`; every value it yields. `vars` are the values of
    /// [`VARIABLES`], in order.
    pub fn run(&self, input: Val, vars: &[Val; 5]) -> Result<Vec<Val>, RunError> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new(vars.clone()));
        let mut out = Vec::new();
        for value in self.filter.id.run((ctx, input)) {
            if out.len() == MAX_OUTPUTS {
                return Err(RunError(format!(
                    "the program yields more than {MAX_OUTPUTS} values"
                )));
            }
            match jaq_core::unwrap_valr(value) {
                Ok(v) => out.push(v),
                Err(e) => return Err(RunError(error_text(&e.to_string()))),
            }
        }
        Ok(out)
    }

    /// Runs the program as a predicate: true unless its first value is `false` or `null`
    /// (or it yields nothing), as jq's `select` decides.
    pub fn matches(&self, input: Val, vars: &[Val; 5]) -> Result<bool, RunError> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new(vars.clone()));
        match self.filter.id.run((ctx, input)).next() {
            None => Ok(false),
            Some(value) => match jaq_core::unwrap_valr(value) {
                Ok(v) => Ok(!matches!(v, Val::Null | Val::Bool(false))),
                Err(e) => Err(RunError(error_text(&e.to_string()))),
            },
        }
    }
}

/// A jq runtime error as a reason: every payload value it quotes cut to a short prefix
/// ([`excerpt`]). jaq writes its errors as `cannot use V as TYPE`, `cannot index V with K`,
/// `cannot calculate L OP R`, `invalid path expression with input V`, or a value alone (the
/// program's own `error(V)`); whatever the shape, no quoted part is left whole.
fn error_text(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("cannot use ")
        && let Some((value, kind)) = rest.rsplit_once(" as ")
    {
        return format!("cannot use {} as {}", excerpt(value), excerpt(kind));
    }
    if let Some(rest) = message.strip_prefix("cannot index ")
        && let Some((value, key)) = rest.rsplit_once(" with ")
    {
        return format!("cannot index {} with {}", excerpt(value), excerpt(key));
    }
    if let Some(rest) = message.strip_prefix("cannot calculate ") {
        let split = [" + ", " - ", " * ", " / ", " % "]
            .iter()
            .filter_map(|op| rest.find(op).map(|at| (at, *op)))
            .min();
        return match split {
            Some((at, op)) => format!(
                "cannot calculate {}{op}{}",
                excerpt(&rest[..at]),
                excerpt(&rest[at + op.len()..])
            ),
            None => format!("cannot calculate {}", excerpt(rest)),
        };
    }
    if let Some(rest) = message.strip_prefix("invalid path expression with input ") {
        return format!("invalid path expression with input {}", excerpt(rest));
    }
    excerpt(message).into_owned()
}

/// jq's lexer and parser errors as one line: what was expected, and where.
fn load_errors(code: &str, errors: jaq_core::load::Errors<&str, ()>) -> String {
    use jaq_core::load::Error;
    let position = |s: &str| {
        let offset = (s.as_ptr() as usize).saturating_sub(code.as_ptr() as usize);
        let near: String = code[offset.min(code.len())..].chars().take(12).collect();
        if near.is_empty() {
            "at the end of the program".to_string()
        } else {
            format!("at `{near}` (character {})", offset + 1)
        }
    };
    let mut out = Vec::new();
    for (_, error) in errors {
        match error {
            Error::Io(errs) => out.extend(errs.into_iter().map(|(_, e)| e)),
            Error::Lex(errs) => out.extend(
                errs.into_iter()
                    .map(|(expect, at)| format!("expected {} {}", expect.as_str(), position(at))),
            ),
            Error::Parse(errs) => out.extend(
                errs.into_iter()
                    .map(|(expect, at)| format!("expected {} {}", expect.as_str(), position(at))),
            ),
        }
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Val {
        jaq_json::read::parse_single(text.as_bytes()).unwrap()
    }

    fn no_vars() -> [Val; 5] {
        Default::default()
    }

    fn run(p: &Program, input: &str) -> Vec<String> {
        let out = p.run(json(input), &no_vars()).unwrap();
        out.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn transforms_and_splits() {
        let p = Program::compile("{room: .room, celsius: .value}").unwrap();
        assert_eq!(
            run(&p, r#"{"room":"hall","value":21.5}"#),
            vec![r#"{"room":"hall","celsius":21.5}"#]
        );
        let p = Program::compile(".[]").unwrap();
        assert_eq!(run(&p, "[1,2]").len(), 2);
        assert_eq!(run(&p, "[]").len(), 0);
        let p = Program::compile("range(.)").unwrap();
        let too_many = p.run(json("1000000000"), &no_vars()).unwrap_err();
        assert!(too_many.0.contains("more than 10000"), "{too_many}");
    }

    #[test]
    fn sees_the_variables() {
        let p =
            Program::compile("[$subject, $topic, $headers.site, $match.room, $meta.qos]").unwrap();
        let vars = [
            Val::from("a.b".to_string()),
            Val::from("a/b".to_string()),
            json(r#"{"site":"p1"}"#),
            json(r#"{"room":"hall"}"#),
            json(r#"{"qos":1}"#),
        ];
        let out = p.run(Val::Null, &vars).unwrap();
        assert_eq!(out[0].to_string(), r#"["a.b","a/b","p1","hall",1]"#);
    }

    #[test]
    fn filters() {
        let p = Program::compile(".value > 20").unwrap();
        assert!(p.matches(json(r#"{"value":21}"#), &no_vars()).unwrap());
        assert!(!p.matches(json(r#"{"value":19}"#), &no_vars()).unwrap());
        let p = Program::compile("error(\"no\")").unwrap();
        assert!(matches!(p.matches(Val::Null, &no_vars()), Err(RunError(_))));
    }

    /// A runtime error quotes only a short prefix of the payload value it failed on, whatever
    /// the shape of the error.
    #[test]
    fn runtime_errors_quote_a_prefix_of_the_value() {
        let card = "4111 1111 1111 1111 exp 12/29 cvv 123";
        let long = format!(r#"{{"card":"{card}","padding":"{}"}}"#, "x".repeat(200));
        for program in [
            ".card.x",                      // cannot index "…" with "x"
            ".card | .[0]",                 // cannot index "…" with 0
            ". + 1",                        // cannot calculate {…} + 1
            "1 - .",                        // cannot calculate 1 - {…}
            "error(.)",                     // the value itself
            "path(.card | ascii_downcase)", // invalid path expression
            "tostring | tonumber",          // cannot parse …
            "keys | implode",
        ] {
            let p = Program::compile(program).unwrap();
            let e = p.run(json(&long), &no_vars()).unwrap_err().0;
            assert!(!e.contains("cvv 123"), "{program}: {e}");
            assert!(!e.contains(&"x".repeat(40)), "{program}: {e}");
            assert!(e.chars().count() < 120, "{program}: {e}");
        }
        // What is short stays whole: the error still says what went wrong.
        let p = Program::compile(".a").unwrap();
        let e = p.run(json("[1,2]"), &no_vars()).unwrap_err().0;
        assert_eq!(e, "cannot index [1,2] with \"a\"");
    }

    proptest::proptest! {
        /// Any message (remote text): no panic, and no run of it longer than twice the quoted
        /// limit survives whole.
        #[test]
        fn error_text_bounds_any_message(
            prefix in proptest::sample::select(vec![
                "", "cannot use ", "cannot index ", "cannot calculate ",
                "invalid path expression with input ",
            ]),
            body in "\\PC{0,200}",
        ) {
            let message = format!("{prefix}{body}");
            let shown = error_text(&message);
            let limit = prefix.chars().count() + 2 * super::super::excerpt::MAX_QUOTED_CHARS + 16;
            proptest::prop_assert!(shown.chars().count() <= limit, "{shown}");
        }
    }

    #[test]
    fn reports_compile_errors() {
        let e = Program::compile("{room: .room").unwrap_err();
        assert!(e.contains("expected"), "{e}");
        let e = Program::compile("nosuchfn(1)").unwrap_err();
        assert!(e.contains("undefined filter `nosuchfn`"), "{e}");
        let e = Program::compile("$nosuchvar").unwrap_err();
        assert!(e.contains("nosuchvar"), "{e}");
    }
}
