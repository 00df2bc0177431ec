//! Whether a name a sink publishes can be received by a subscription, one pair at a time
//! ([`overlaps`]), or among every subscription on a broker at once ([`FilterTree`]).

use std::collections::HashMap;

use crate::connectors::protocol::Wildcards;

/// One level of a pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level<'a> {
    Literal(&'a str),
    /// `+` or `*`.
    One,
    /// `#` (at least 0 more levels) or `>` (at least 1).
    Rest {
        at_least: usize,
    },
}

fn levels(pattern: &str, syntax: Wildcards) -> Vec<Level<'_>> {
    pattern
        .split(syntax.separator)
        .map(|l| {
            if l == syntax.one_level {
                Level::One
            } else if l == syntax.rest {
                Level::Rest {
                    at_least: syntax.rest_at_least,
                }
            } else {
                Level::Literal(l)
            }
        })
        .collect()
}

/// Whether some name matched by `published` (what a sink may publish) is received by a
/// subscription to `filter`. MQTT `a/#` receives `a` too; MQTT filters that start with a
/// wildcard do not receive topics whose first level starts with `$` (MQTT 4.7.2), but a
/// published pattern that starts with a wildcard may still name ordinary topics.
pub(super) fn overlaps(published: &str, filter: &str, syntax: Wildcards) -> bool {
    let names = levels(published, syntax);
    let subscribed = levels(filter, syntax);
    if syntax.hides_dollar_names
        && matches!(names.first(), Some(Level::Literal(l)) if l.starts_with('$'))
        && matches!(subscribed.first(), Some(Level::One | Level::Rest { .. }))
    {
        return false;
    }
    intersect(&names, &subscribed)
}

/// Whether two level patterns match a common name. A multi-level wildcard is always last.
fn intersect(a: &[Level], b: &[Level]) -> bool {
    match (a.first(), b.first()) {
        (Some(Level::Rest { at_least }), _) => has_at_least(b, *at_least),
        (_, Some(Level::Rest { at_least })) => has_at_least(a, *at_least),
        (None, None) => true,
        (None, _) | (_, None) => false,
        (Some(x), Some(y)) => one_level_meets(*x, *y) && intersect(&a[1..], &b[1..]),
    }
}

/// Whether a pattern can match a name of at least `n` levels.
fn has_at_least(pattern: &[Level], n: usize) -> bool {
    pattern.len() >= n || pattern.iter().any(|l| matches!(l, Level::Rest { .. }))
}

fn one_level_meets(a: Level, b: Level) -> bool {
    match (a, b) {
        (Level::Literal(x), Level::Literal(y)) => x == y,
        _ => true,
    }
}

/// The subscriptions of the routes on one broker, as a tree of their levels (as brokers keep
/// theirs), so that the routes a published pattern may reach are found by walking the pattern's
/// levels rather than by trying every subscription. The tree only narrows the search: what it
/// answers is a superset, which [`overlaps`] then decides.
#[derive(Default)]
pub(super) struct FilterTree {
    root: Branch,
}

/// The subscriptions that share the levels leading here.
#[derive(Default)]
struct Branch {
    literal: HashMap<String, Branch>,
    /// Under a one-level wildcard (`+`, `*`).
    one_level: Option<Box<Branch>>,
    /// Routes with a subscription whose multi-level wildcard (`#`, `>`) is here.
    rest: Vec<usize>,
    /// Routes with a subscription that ends here.
    end: Vec<usize>,
}

impl FilterTree {
    /// Adds route `route`'s subscription to `filter`.
    pub(super) fn insert(&mut self, filter: &str, route: usize, syntax: Wildcards) {
        let mut branch = &mut self.root;
        for level in levels(filter, syntax) {
            branch = match level {
                Level::Literal(l) => branch.literal.entry(l.to_string()).or_default(),
                Level::One => branch.one_level.get_or_insert_with(Box::default),
                Level::Rest { .. } => {
                    branch.rest.push(route);
                    return;
                }
            };
        }
        branch.end.push(route);
    }

    /// Pushes to `routes` every route with a subscription that may receive a name matched by
    /// `published`, and maybe some more (in no order, perhaps more than once).
    pub(super) fn candidates(&self, published: &str, syntax: Wildcards, routes: &mut Vec<usize>) {
        self.root.reach(&levels(published, syntax), routes);
    }
}

impl Branch {
    fn reach(&self, published: &[Level], routes: &mut Vec<usize>) {
        // A multi-level wildcard here takes whatever the pattern has left.
        routes.extend(&self.rest);
        match published.first() {
            None => routes.extend(&self.end),
            Some(Level::Rest { .. }) => self.everything(routes),
            Some(Level::One) => {
                for branch in self.literal.values() {
                    branch.reach(&published[1..], routes);
                }
                if let Some(branch) = &self.one_level {
                    branch.reach(&published[1..], routes);
                }
            }
            Some(Level::Literal(l)) => {
                if let Some(branch) = self.literal.get(*l) {
                    branch.reach(&published[1..], routes);
                }
                if let Some(branch) = &self.one_level {
                    branch.reach(&published[1..], routes);
                }
            }
        }
    }

    /// Every route with a subscription here or below.
    fn everything(&self, routes: &mut Vec<usize>) {
        routes.extend(&self.rest);
        routes.extend(&self.end);
        for branch in self.literal.values().chain(self.one_level.as_deref()) {
            branch.everything(routes);
        }
    }
}
