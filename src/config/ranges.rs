//! The ranges of durations and sizes, from bridges.yaml and the command line alike: a value
//! out of range is an error saying what is wrong, never a panic (`Duration::from_secs_f64`
//! panics on `1e30`) nor a value that overflows later arithmetic.

use std::time::Duration;

/// The longest duration accepted anywhere, in bridges.yaml or on the command line: ten
/// years is longer than any timeout or interval means, and `Instant` arithmetic on far longer
/// ones overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// The largest size accepted anywhere: 1 PiB is more than any disk or memory limit means.
pub const MAX_SIZE: u64 = 1 << 50;
pub const DURATION_HINT: &str =
    "write e.g. `250ms`, `30s`, `5m`, `1h`, `2d`, or a number of seconds; from 0 to 10 years";
pub const SIZE_HINT: &str =
    "write a number of bytes, or e.g. `512KiB`, `16MiB`, `1GiB`; at most 1048576GiB (1 PiB)";

/// What is wrong with a duration or size, as the end of a sentence about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberProblem {
    #[error("is not a duration")]
    NotADuration,
    #[error("is not a size")]
    NotASize,
    #[error("must not be negative")]
    Negative,
    #[error("is longer than 10 years, the longest duration allowed")]
    TooLong,
    #[error("is larger than 1 PiB, the largest size allowed")]
    TooLarge,
}

/// `250ms`, `30s`, `5m`, `1h`, `2d`, or a bare number of seconds, up to [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    check_duration(s).ok()
}

/// Like [`parse_duration`], saying what is wrong.
pub fn check_duration(s: &str) -> Result<Duration, NumberProblem> {
    let s = s.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| NumberProblem::NotADuration)?;
    let seconds = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(NumberProblem::NotADuration),
    };
    duration_of_seconds(if negative { -seconds } else { seconds })
}

/// A number of seconds (from YAML, where `1e30` and `.nan` are numbers too) as a duration.
pub fn duration_of_seconds(seconds: f64) -> Result<Duration, NumberProblem> {
    if seconds.is_nan() {
        return Err(NumberProblem::NotADuration);
    }
    if seconds < 0.0 {
        return Err(NumberProblem::Negative);
    }
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(NumberProblem::TooLong);
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| NumberProblem::TooLong)
}

/// Bytes, or a number with `KiB`/`MiB`/`GiB` (also `KB`/`MB`/`GB`, `K`/`M`/`G`), up to
/// [`MAX_SIZE`].
pub fn parse_size(s: &str) -> Option<u64> {
    check_size(s).ok()
}

/// Like [`parse_size`], saying what is wrong.
pub fn check_size(s: &str) -> Result<u64, NumberProblem> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(NumberProblem::Negative);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(NumberProblem::NotASize),
    };
    if number.is_empty() {
        return Err(NumberProblem::NotASize);
    }
    // Digits only: a number that does not fit is too large, not malformed.
    let n: u64 = number.parse().map_err(|_| NumberProblem::TooLarge)?;
    n.checked_mul(factor)
        .filter(|bytes| *bytes <= MAX_SIZE)
        .ok_or(NumberProblem::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_edges_of_the_ranges() {
        assert_eq!(check_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(check_duration("3650d"), Ok(MAX_DURATION));
        assert_eq!(check_duration("3650.1d"), Err(NumberProblem::TooLong));
        assert_eq!(duration_of_seconds(1e30), Err(NumberProblem::TooLong));
        assert_eq!(
            duration_of_seconds(f64::INFINITY),
            Err(NumberProblem::TooLong)
        );
        assert_eq!(duration_of_seconds(-0.5), Err(NumberProblem::Negative));
        assert_eq!(
            duration_of_seconds(f64::NAN),
            Err(NumberProblem::NotADuration)
        );
        assert_eq!(check_duration("-"), Err(NumberProblem::NotADuration));
        assert_eq!(check_size("1048576GiB"), Ok(MAX_SIZE));
        assert_eq!(check_size("1048577GiB"), Err(NumberProblem::TooLarge));
        assert_eq!(check_size("GiB"), Err(NumberProblem::NotASize));
        assert_eq!(check_size("16 MiB"), Ok(16 << 20));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// Any text (arbitrary Unicode, digits and units made frequent): a value in range or
        /// an error, never a panic.
        #[test]
        fn any_text_is_a_value_in_range_or_an_error(
            text in "[-0-9.eE ]{0,30}(ms|s|m|min|h|d|KiB|MiB|GiB|k|[^0-9]{0,3})",
            other in ".{0,40}",
        ) {
            for t in [&text, &other] {
                if let Ok(d) = check_duration(t) {
                    prop_assert!(d <= MAX_DURATION);
                }
                if let Ok(n) = check_size(t) {
                    prop_assert!(n <= MAX_SIZE);
                }
            }
        }

        /// Any float of seconds, from YAML: in range or an error.
        #[test]
        fn any_number_of_seconds_is_in_range_or_an_error(seconds in proptest::num::f64::ANY) {
            if let Ok(d) = duration_of_seconds(seconds) {
                prop_assert!(d <= MAX_DURATION);
            }
        }
    }
}
