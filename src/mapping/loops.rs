//! STUB — replaced by the helper's module on merge.
use std::collections::BTreeSet;

use crate::config::{Config, Connection};

pub struct Analysis {
    pub guarded: BTreeSet<(usize, usize)>,
    pub no_local: BTreeSet<usize>,
    pub cycles: Vec<Cycle>,
}
pub struct Cycle {
    pub hops: Vec<Hop>,
    pub verdict: Verdict,
}
pub struct Hop {
    pub route: usize,
    pub sink: usize,
}
pub enum Verdict {
    Guarded,
    EchoOnce,
    Unguarded,
}
impl Cycle {
    pub fn describe(&self, _config: &Config) -> String {
        String::new()
    }
}
pub fn analyse(_config: &Config) -> Analysis {
    Analysis {
        guarded: BTreeSet::new(),
        no_local: BTreeSet::new(),
        cycles: Vec::new(),
    }
}
pub fn same_broker(a: &Connection, b: &Connection) -> bool {
    a.name == b.name
}
