//! `bridges.yaml` to a validated, typed [`Config`]. No I/O beyond reading the file (and the
//! `${file:...}` secrets it names).

mod model;
pub use model::*;
pub mod yaml;
