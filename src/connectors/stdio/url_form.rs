//! `-` as an endpoint of `ferry relay`: standard input (FROM) or output (TO), JSON lines or,
//! with `--raw`, raw lines. Only the relay builds it; bridges.yaml has no such connection.

use crate::config::endpoint_url::{Built, Naming, flag, map, text};
use crate::config::yaml::Pos;

/// Its line in `ferry relay`'s accepted forms.
pub const USAGE: &str = "-                                                       standard input (FROM) or output (TO), JSON lines";

pub const NAMING: Naming = Naming {
    protocol: "stdio",
    target: "subject",
    names: None,
};

/// The connection for `-`: `raw` lines, or JSON lines (payloads always in base64 with
/// `base64`) whose subjects are written as the other side's protocol (`names`) writes them.
pub fn lines(raw: bool, base64: bool, names: &str, whole: Pos) -> Built {
    let connection = map(
        whole,
        [
            ("lines", text(whole, if raw { "raw" } else { "json" })),
            ("base64", flag(whole, base64)),
            ("names", text(whole, names)),
        ],
    );
    Built {
        connection: map(whole, [("stdio", connection)]),
        keys: Vec::new(),
        name: None,
    }
}
