//! Configuration errors: each with its place in the file, what is wrong, and what would be
//! right. All of them are collected and reported at once.

use std::fmt;

use super::yaml::Pos;

/// One problem in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    pub message: String,
    pub hint: Option<String>,
}

/// Every problem found in one file. Displays as `FILE:LINE:COL: error: ...` lines, each
/// followed by its `  hint: ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: error: {}",
                self.file, d.pos.line, d.pos.col, d.message
            )?;
            if let Some(hint) = &d.hint {
                write!(f, "\n  hint: {hint}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Adding to the errors of a file, for the checks made once a section is read.
pub trait Report {
    fn report(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>);

    /// Reports a broken name rule (`mapping::names`); true when there was none.
    fn rule(&mut self, pos: Pos, result: Result<(), (String, String)>) -> bool {
        match result {
            Ok(()) => true,
            Err((message, hint)) => {
                self.report(pos, message, hint);
                false
            }
        }
    }
}

impl Report for Vec<Diagnostic> {
    fn report(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.push(Diagnostic {
            pos,
            message: message.into(),
            hint: Some(hint.into()),
        });
    }
}

/// The closest of `candidates` to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 1.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
