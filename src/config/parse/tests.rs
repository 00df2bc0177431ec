//! The decoder's tests, in three groups that share one lookup of `${...}` and one way to
//! collect a file's errors.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// `${NATS_URL}` and `${KEY}` are set; any `${file:...}` holds `s3cret`.
fn lookup() -> Lookup<'static> {
    Lookup {
        var: &|n| match n {
            "NATS_URL" => Some("nats://127.0.0.1:4222".to_string()),
            "KEY" => Some("k3y".to_string()),
            _ => None,
        },
        file: &|_| Ok("s3cret\n".to_string()),
    }
}

/// The configuration `text`, or its errors as `ferry check` prints them.
fn parse_text(text: &str) -> Result<Config, String> {
    parse(text, "b.yaml", &lookup()).map_err(|e| e.to_string())
}

/// The errors of `text`, which must have some, as printed.
fn error_text(text: &str) -> String {
    match parse_text(text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    }
}

/// The lines of [`error_text`].
fn errors(text: &str) -> Vec<String> {
    error_text(text).lines().map(str::to_string).collect()
}

mod decoding;

mod web;

mod delivery_rules;
