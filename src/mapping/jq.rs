//! jq programs (run by jaq) over JSON payloads: `transform:` and `filter:`.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;

type Filter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

/// A compiled jq program.
pub struct Program {
    filter: Filter,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("jq::Program")
    }
}

/// Why a payload could not be run through a program.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("jq error: {0}")]
    Failed(String),
}

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

    /// Runs the program on a JSON payload; every value it yields, serialised as compact JSON.
    pub fn run(&self, payload: &[u8]) -> Result<Vec<Vec<u8>>, RunError> {
        let input =
            jaq_json::read::parse_single(payload).map_err(|e| RunError::NotJson(e.to_string()))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for value in self.filter.id.run((ctx, input)) {
            match jaq_core::unwrap_valr(value) {
                Ok(v) => out.push(v.to_string().into_bytes()),
                Err(e) => return Err(RunError::Failed(e.to_string())),
            }
        }
        Ok(out)
    }

    /// Runs the program as a predicate: true unless its first value is `false` or `null`
    /// (or it yields nothing), as jq's `select` decides.
    pub fn matches(&self, payload: &[u8]) -> Result<bool, RunError> {
        let input =
            jaq_json::read::parse_single(payload).map_err(|e| RunError::NotJson(e.to_string()))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        match self.filter.id.run((ctx, input)).next() {
            None => Ok(false),
            Some(value) => match jaq_core::unwrap_valr(value) {
                Ok(v) => Ok(!matches!(v, Val::Null | Val::Bool(false))),
                Err(e) => Err(RunError::Failed(e.to_string())),
            },
        }
    }
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

    #[test]
    fn transforms_and_splits() {
        let p = Program::compile("{room: .room, celsius: .value}").unwrap();
        let out = p.run(br#"{"room":"hall","value":21.5}"#).unwrap();
        assert_eq!(out, vec![br#"{"room":"hall","celsius":21.5}"#.to_vec()]);
        let p = Program::compile(".[]").unwrap();
        assert_eq!(p.run(b"[1,2]").unwrap().len(), 2);
        assert_eq!(p.run(b"[]").unwrap().len(), 0);
    }

    #[test]
    fn filters() {
        let p = Program::compile(".value > 20").unwrap();
        assert!(p.matches(br#"{"value":21}"#).unwrap());
        assert!(!p.matches(br#"{"value":19}"#).unwrap());
        assert!(matches!(p.matches(b"not json"), Err(RunError::NotJson(_))));
    }

    #[test]
    fn reports_compile_errors() {
        let e = Program::compile("{room: .room").unwrap_err();
        assert!(e.contains("expected"), "{e}");
        let e = Program::compile("nosuchfn(1)").unwrap_err();
        assert!(e.contains("undefined filter `nosuchfn`"), "{e}");
    }
}
