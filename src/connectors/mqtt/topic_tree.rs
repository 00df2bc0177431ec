//! Topic filters in a tree of levels, as brokers keep them: finding the filters a topic
//! matches walks the topic's levels once, however many filters there are, instead of
//! matching each filter in turn. The same rules as `topic::matches`: `+` one level, `#` this
//! level and everything below, and a topic starting with `$` not matched by a filter whose
//! first level is a wildcard.

use std::collections::HashMap;
use std::str::Split;

/// Topic filters, each with a value (what it stands for).
pub struct TopicTree<T> {
    root: Node<T>,
}

struct Node<T> {
    /// The next level, by name. Boxed: a map keeps room for a few entries, and most
    /// nodes have one child (a route's own filter), so the room is a pointer each.
    children: HashMap<Box<str>, Box<Node<T>>>,
    /// The next level is `+`.
    plus: Option<Box<Node<T>>>,
    /// Filters ending here with `/#` (or `#` alone, at the root).
    hash: Vec<T>,
    /// Filters ending at this level.
    here: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            plus: None,
            hash: Vec::new(),
            here: Vec::new(),
        }
    }
}

impl<T: Copy> TopicTree<T> {
    pub fn new() -> Self {
        TopicTree {
            root: Node::default(),
        }
    }

    /// Adds a valid filter (see `topic::filter_error`), without any `$share/GROUP/` prefix.
    pub fn insert(&mut self, filter: &str, value: T) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = match level {
                "#" => return node.hash.push(value),
                "+" => node.plus.get_or_insert_with(Box::default),
                name => node.children.entry(name.into()).or_default(),
            };
        }
        node.here.push(value);
    }

    /// Calls `found` with the value of every filter `topic` matches (once per filter, in no
    /// particular order).
    pub fn matches(&self, topic: &str, mut found: impl FnMut(T)) {
        // [MQTT-4.7.2-1]: `#` and `+` as first level do not match `$SYS/...`.
        let wildcards_first = !topic.starts_with('$');
        self.root
            .matches(topic.split('/'), wildcards_first, &mut found);
    }
}

impl<T: Copy> Node<T> {
    /// `levels`: what is left of the topic below this node.
    fn matches(&self, mut levels: Split<'_, char>, wildcards: bool, found: &mut impl FnMut(T)) {
        if wildcards {
            // `a/#` matches `a` too.
            self.hash.iter().copied().for_each(&mut *found);
        }
        let Some(level) = levels.next() else {
            return self.here.iter().copied().for_each(found);
        };
        if let Some(child) = self.children.get(level) {
            child.matches(levels.clone(), true, found);
        }
        if wildcards && let Some(plus) = &self.plus {
            plus.matches(levels, true, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::topic;
    use super::*;
    use proptest::prelude::*;

    fn matching(tree: &TopicTree<usize>, topic: &str) -> Vec<usize> {
        let mut found = Vec::new();
        tree.matches(topic, |v| found.push(v));
        found.sort();
        found
    }

    #[test]
    fn levels_and_wildcards() {
        let mut tree = TopicTree::new();
        for (i, filter) in ["a/b", "a/+", "a/#", "#", "+/b", "$SYS/#", "a/b/c", "+"]
            .into_iter()
            .enumerate()
        {
            tree.insert(filter, i);
        }
        assert_eq!(matching(&tree, "a/b"), vec![0, 1, 2, 3, 4]);
        assert_eq!(matching(&tree, "a"), vec![2, 3, 7]);
        assert_eq!(matching(&tree, "a/b/c"), vec![2, 3, 6]);
        assert_eq!(matching(&tree, "x/b"), vec![3, 4]);
        assert_eq!(matching(&tree, "$SYS/b"), vec![5]);
        assert_eq!(matching(&tree, "$SYS"), vec![5]);
        // Empty levels are levels.
        assert_eq!(matching(&tree, "/b"), vec![3, 4]);
        assert_eq!(matching(&tree, "a/"), vec![1, 2, 3]);
    }

    #[test]
    fn one_filter_many_values() {
        let mut tree = TopicTree::new();
        tree.insert("a/+", 1);
        tree.insert("a/+", 2);
        assert_eq!(matching(&tree, "a/x"), vec![1, 2]);
        assert!(matching(&tree, "b/x").is_empty());
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new()),
            Just("$s".to_string()),
        ]
    }

    fn filter() -> impl Strategy<Value = String> {
        let level = prop_oneof![level(), Just("+".to_string())];
        (prop::collection::vec(level, 1..5), any::<bool>())
            .prop_map(|(levels, hash)| {
                let mut filter = levels.join("/");
                if hash {
                    filter.push_str("/#");
                }
                filter
            })
            .prop_filter("a valid filter", |f| topic::filter_error(f).is_none())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The tree finds exactly the filters `topic::matches` says the topic matches.
        #[test]
        fn agrees_with_matches(
            filters in prop::collection::vec(
                prop_oneof![filter(), Just("#".to_string())], 1..12,
            ),
            topic in prop::collection::vec(level(), 1..6).prop_map(|l| l.join("/")),
        ) {
            let mut tree = TopicTree::new();
            for (i, filter) in filters.iter().enumerate() {
                prop_assert!(topic::filter_error(filter).is_none(), "{}", filter);
                tree.insert(filter, i);
            }
            let expected: Vec<usize> = (0..filters.len())
                .filter(|&i| topic::matches(&topic, &filters[i]))
                .collect();
            prop_assert_eq!(matching(&tree, &topic), expected);
        }
    }
}
