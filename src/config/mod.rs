//! `bridges.yaml` to a validated, typed [`Config`]. No I/O beyond reading the file (and the
//! `${file:...}` secrets it names).

mod admin_listener;
mod connections;
mod decode;
pub mod delivery;
mod deserialize;
pub(crate) mod diagnostics;
pub mod endpoint_url;
pub mod endpoints;
mod file;
mod interpolate;
pub mod loops;
mod model;
mod parse;
pub(crate) mod probe;
mod ranges;
pub(crate) mod reader;
mod redact;
pub mod reference;
mod request_route;
mod resolved;
mod route_ends;
pub(crate) mod route_section;
pub mod schema;
pub mod security;
mod validate;
pub(crate) mod values;
pub mod yaml;

use std::path::Path;

pub use diagnostics::{ConfigErrors, Diagnostic};
pub use interpolate::Lookup;
pub use model::*;
pub use parse::{Front, parse, parse_document};
pub use ranges::{
    MAX_DURATION, MAX_SIZE, NumberProblem, check_duration, check_size, parse_duration, parse_size,
};
pub use redact::{is_secret_query_key, redact_url};
pub use resolved::{ResolvedRoute, ResolvedSink};

/// Reads and validates the configuration file at `path`, interpolating from the process
/// environment and the file system.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: file.clone(),
        errors: vec![Diagnostic {
            pos: yaml::Pos { line: 1, col: 1 },
            message: format!("cannot read the configuration: {e}"),
            hint: Some("pass the file with -c PATH".into()),
        }],
    })?;
    parse(&text, &file, &Lookup::system())
}
