//! Payload values as failure reasons and log lines quote them: a short prefix, never the whole
//! value. A reason travels far (the log, `/routes`, a dead letter's `Ferry-Error` header) and a
//! payload may hold what must not (a card number, a personal record); the dead letter's own
//! payload stays whole, for whoever is entitled to read it.

use std::borrow::Cow;

/// The most characters of a payload value a reason quotes.
pub const MAX_QUOTED_CHARS: usize = 32;

/// `value` cut to its first [`MAX_QUOTED_CHARS`] characters, then `…`; whole when shorter. Cut
/// at a character boundary, whatever the text.
pub fn excerpt(value: &str) -> Cow<'_, str> {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => Cow::Owned(format!("{}…", &value[..end])),
        None => Cow::Borrowed(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_short_values_and_cuts_long_ones() {
        assert_eq!(excerpt("short"), "short");
        let exact = "x".repeat(MAX_QUOTED_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let long = format!("\"{}\"", "4111111111111111".repeat(4));
        assert_eq!(excerpt(&long), format!("{}…", &long[..MAX_QUOTED_CHARS]));
        assert_eq!(excerpt(&"é".repeat(40)), format!("{}…", "é".repeat(32)));
    }

    proptest! {
        /// Any Unicode: at most MAX_QUOTED_CHARS characters of the value, a prefix of it, and
        /// `…` exactly when something was left out.
        #[test]
        fn a_prefix_of_bounded_length(value in "\\PC{0,80}|\\p{Any}{0,80}") {
            let shown = excerpt(&value);
            if value.chars().count() <= MAX_QUOTED_CHARS {
                prop_assert_eq!(shown, value.as_str());
            } else {
                let kept = shown.strip_suffix('…').expect("a cut value ends with …");
                prop_assert_eq!(kept.chars().count(), MAX_QUOTED_CHARS);
                prop_assert!(value.starts_with(kept));
            }
        }
    }
}
