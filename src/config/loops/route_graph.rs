//! The route graph: an edge from route `r` through its sink `k` to route `r'` when sink `k`
//! publishes to the broker `r'` subscribes on, under names `r'`'s filter(s) may match; which
//! edges lie on a cycle; and the cycles themselves.
//!
//! An edge gateway may carry thousands of routes, and `ferry check` must stay quick with them:
//! each sink looks up the routes it may reach in a tree of the subscriptions on its broker
//! rather than trying every route, and the cycles' edges come from one pass over the graph
//! (its strongly connected components) rather than a search per edge.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::overlap::{FilterTree, overlaps};
use super::{sink_names, wildcards};
use crate::config::model::{Config, Protocol};
use crate::connectors::protocol::Subscribes;

/// At most this many simple cycles are listed; beyond it the list is cut short.
pub(super) const MAX_CYCLES: usize = 4096;

/// At most this many search steps are spent listing cycles, so a dense graph cannot hang
/// `ferry check`.
const MAX_STEPS: usize = 1_000_000;

/// Route `from` publishes, through its sink `sink`, what route `to` receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Edge {
    pub from: usize,
    pub sink: usize,
    pub to: usize,
}

pub(super) struct RouteGraph {
    /// Every edge, in (route, sink, next route) order.
    pub edges: Vec<Edge>,
    /// Where each route's edges start in `edges` (one more entry than routes).
    first_edge: Vec<usize>,
    /// Each route's strongly connected component: two routes are in the same one when each
    /// leads to the other.
    component: Vec<usize>,
}

impl RouteGraph {
    /// The graph of `config`'s routes, whose connections' brokers are `brokers`.
    pub fn new(config: &Config, brokers: &BTreeMap<String, String>) -> Self {
        let edges = edges(config, brokers);
        let routes = config.routes.len();
        let mut first_edge = vec![0; routes + 1];
        for edge in &edges {
            first_edge[edge.from + 1] += 1;
        }
        for r in 0..routes {
            first_edge[r + 1] += first_edge[r];
        }
        let mut graph = RouteGraph {
            edges,
            first_edge,
            component: Vec::new(),
        };
        graph.component = graph.components();
        graph
    }

    fn routes(&self) -> usize {
        self.first_edge.len() - 1
    }

    /// The edges out of `route`, in (sink, next route) order.
    fn out_of(&self, route: usize) -> &[Edge] {
        &self.edges[self.first_edge[route]..self.first_edge[route + 1]]
    }

    /// The sinks on at least one cycle: an edge `r → r'` is on one when `r'` leads back to `r`,
    /// that is when both are in one strongly connected component.
    pub fn on_cycles(&self) -> BTreeSet<(usize, usize)> {
        self.edges
            .iter()
            .filter(|e| self.component[e.from] == self.component[e.to])
            .map(|e| (e.from, e.sink))
            .collect()
    }

    /// Every route's strongly connected component (Tarjan's algorithm, with an explicit stack
    /// so that a long chain of routes cannot overflow the thread's).
    fn components(&self) -> Vec<usize> {
        const UNSEEN: usize = usize::MAX;
        let routes = self.routes();
        let mut order = vec![UNSEEN; routes];
        let mut lowest = vec![0; routes];
        let mut on_stack = vec![false; routes];
        let mut stack = Vec::new();
        let mut component = vec![UNSEEN; routes];
        let (mut visited, mut components) = (0, 0);
        for root in 0..routes {
            if order[root] != UNSEEN {
                continue;
            }
            // (route, how many of its edges were followed)
            let mut walk = vec![(root, 0)];
            order[root] = visited;
            lowest[root] = visited;
            visited += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some(&(r, followed)) = walk.last() {
                if let Some(edge) = self.out_of(r).get(followed) {
                    walk.last_mut().expect("walking").1 += 1;
                    let next = edge.to;
                    if order[next] == UNSEEN {
                        order[next] = visited;
                        lowest[next] = visited;
                        visited += 1;
                        stack.push(next);
                        on_stack[next] = true;
                        walk.push((next, 0));
                    } else if on_stack[next] {
                        lowest[r] = lowest[r].min(order[next]);
                    }
                    continue;
                }
                walk.pop();
                if let Some(&(parent, _)) = walk.last() {
                    lowest[parent] = lowest[parent].min(lowest[r]);
                }
                if lowest[r] == order[r] {
                    while let Some(member) = stack.pop() {
                        on_stack[member] = false;
                        component[member] = components;
                        if member == r {
                            break;
                        }
                    }
                    components += 1;
                }
            }
        }
        component
    }

    /// Every simple cycle (no route twice), each listed once from its lowest route, up to
    /// [`MAX_CYCLES`] cycles and [`MAX_STEPS`] search steps; the flag says whether it stopped
    /// early.
    pub fn simple_cycles(&self) -> (Vec<Vec<Edge>>, bool) {
        let mut search = CycleSearch {
            graph: self,
            found: Vec::new(),
            steps: 0,
            truncated: false,
            on_path: vec![0; self.routes()],
        };
        for start in 0..self.routes() {
            search.from(start);
            if search.truncated {
                break;
            }
        }
        (search.found, search.truncated)
    }
}

/// Every edge of the route graph, in (route, sink, next route) order.
fn edges(config: &Config, brokers: &BTreeMap<String, String>) -> Vec<Edge> {
    let filters: Vec<Vec<String>> = config.routes.iter().map(|r| r.from.spec.names()).collect();
    // The routes' subscriptions, by the broker and protocol they subscribe on: only where some
    // sink publishes (routes that all read from one broker and write to another need none).
    let mut subscriptions: HashMap<(&str, Protocol), FilterTree> = config
        .routes
        .iter()
        .flat_map(|route| &route.to)
        .map(|s| {
            (
                (broker_of(brokers, &s.connection), s.spec.protocol()),
                FilterTree::default(),
            )
        })
        .collect();
    for (r, route) in config.routes.iter().enumerate() {
        let protocol = route.from.spec.protocol();
        let Some(syntax) = wildcards(protocol) else {
            continue;
        };
        let key = (broker_of(brokers, &route.from.connection), protocol);
        let Some(tree) = subscriptions.get_mut(&key) else {
            continue;
        };
        for filter in &filters[r] {
            tree.insert(filter, r, syntax);
        }
    }
    let mut found = Vec::new();
    let mut reached = Vec::new();
    for (from, route) in config.routes.iter().enumerate() {
        for (sink, s) in route.to.iter().enumerate() {
            let protocol = s.spec.protocol();
            let Some(syntax) = wildcards(protocol) else {
                continue;
            };
            let Some(tree) = subscriptions.get(&(broker_of(brokers, &s.connection), protocol))
            else {
                continue;
            };
            let names = sink_names(route, sink);
            reached.clear();
            for name in &names {
                tree.candidates(name, syntax, &mut reached);
            }
            reached.sort_unstable();
            reached.dedup();
            for &to in &reached {
                let reaches = filters[to]
                    .iter()
                    .any(|f| names.iter().any(|n| overlaps(n, f, syntax)));
                if reaches {
                    found.push(Edge { from, sink, to });
                }
            }
        }
    }
    found
}

/// The broker of a connection (an unknown connection is its own).
fn broker_of<'a>(brokers: &'a BTreeMap<String, String>, connection: &'a str) -> &'a str {
    brokers.get(connection).map_or(connection, String::as_str)
}

/// A depth-first search for simple cycles, one start route at a time.
struct CycleSearch<'a> {
    graph: &'a RouteGraph,
    found: Vec<Vec<Edge>>,
    steps: usize,
    truncated: bool,
    /// For each route, how many edges of the current path leave it.
    on_path: Vec<usize>,
}

impl CycleSearch<'_> {
    /// Lists the cycles through `start` that visit no lower route: it follows every edge that
    /// stays within `start`'s component, above `start`, and off the path; one that returns to
    /// `start` closes a cycle.
    fn from(&mut self, start: usize) {
        let graph = self.graph;
        let within = |r: usize| r >= start && graph.component[r] == graph.component[start];
        let mut path: Vec<Edge> = Vec::new();
        // (route, how many of its edges were followed)
        let mut walk = vec![(start, 0)];
        while let Some(&(at, followed)) = walk.last() {
            let Some(&edge) = graph.out_of(at).get(followed) else {
                walk.pop();
                if let Some(edge) = path.pop() {
                    self.on_path[edge.from] -= 1;
                }
                continue;
            };
            walk.last_mut().expect("walking").1 += 1;
            self.steps += 1;
            if self.found.len() >= MAX_CYCLES || self.steps >= MAX_STEPS {
                self.truncated = true;
                return;
            }
            if edge.to == start {
                path.push(edge);
                self.found.push(path.clone());
                path.pop();
            } else if within(edge.to) && self.on_path[edge.to] == 0 {
                self.on_path[edge.from] += 1;
                path.push(edge);
                walk.push((edge.to, 0));
            }
        }
    }
}
