//! Bad configurations are refused before anything starts, by `ferry check` and by `ferry run`
//! alike (exit code 2), each error as `FILE:LINE:COL: error: WHAT` with the right position;
//! a good configuration is explained route by route; secrets never show.

mod support;

use support::*;

/// A valid configuration; the cases below each break one thing in it. No broker runs at
/// these addresses: `ferry check` must not need one, and `ferry run` must refuse a bad file
/// before it tries to connect.
const VALID: &str = r#"connections:
  plant:
    mqtt:
      url: mqtt://127.0.0.1:9
      client_id: ferry-plant
  core:
    nats:
      url: nats://127.0.0.1:9
routes:
  - name: telemetry
    from:
      connection: plant
      topic: sensors/+/temp
      qos: 1
    transform: '{room: .room, celsius: .value}'
    to:
      connection: core
      subject: "iot.{{ topic[1] }}.temperature"
  - name: commands
    from:
      connection: core
      subject: cmd.>
    to:
      connection: plant
      topic: auto
      qos: 1
"#;

/// VALID with `from` replaced by `to` (exactly one occurrence must exist).
fn broken(from: &str, to: &str) -> String {
    assert_eq!(
        VALID.matches(from).count(),
        1,
        "{from:?} must occur once in VALID"
    );
    VALID.replace(from, to)
}

/// The `bridges.yaml:LINE:COL: error: ...` line that contains `message`; panics if there is
/// none, or if that line does not have the prefix.
fn error_line<'a>(output: &'a str, message: &str) -> &'a str {
    let line = output
        .lines()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no line contains {message:?}; output:\n{output}"));
    assert!(
        parse_position(line).is_some(),
        "the error line does not start with `bridges.yaml:LINE:COL: error:`: {line:?}"
    );
    line
}

/// (line, column) from `bridges.yaml:LINE:COL: error: ...`.
fn parse_position(line: &str) -> Option<(usize, usize)> {
    let rest = line.strip_prefix("bridges.yaml:")?;
    let mut parts = rest.splitn(3, ':');
    let l = parts.next()?.parse().ok()?;
    let c = parts.next()?.parse().ok()?;
    parts.next()?.starts_with(" error: ").then_some((l, c))
}

/// The error line `check` is at the line of `yaml` that holds `needle`.
fn assert_reported_on_the_line_of(check: &str, yaml: &str, needle: &str) {
    let want_line = position_of(yaml, needle, 0).0;
    assert_eq!(
        parse_position(check).map(|p| p.0),
        Some(want_line),
        "line in {check:?}"
    );
}

/// Runs both `ferry check` and `ferry run` on `yaml`: both must exit 2 and report `message`
/// on a properly prefixed line; returns that line from each (check, run).
fn refused(yaml: &str, message: &str) -> (String, String) {
    let check = ferry_check(yaml);
    assert_eq!(
        check.code,
        Some(2),
        "`ferry check` should exit 2 on a bad config; output:\n{}",
        check.all()
    );
    let check_line = error_line(&check.all(), message).to_string();

    let run = ferry_run_until_exit(yaml, secs(20));
    assert_eq!(
        run.code,
        Some(2),
        "`ferry run` should refuse a bad config with exit 2; output:\n{}",
        run.all()
    );
    let run_line = error_line(&run.all(), message).to_string();
    (check_line, run_line)
}

#[test]
fn valid_config_is_explained_route_by_route() {
    let out = ferry_check(VALID);
    assert_eq!(
        out.code,
        Some(0),
        "`ferry check` on a valid config; output:\n{}",
        out.all()
    );
    let text = out.all();
    for needle in [
        "telemetry",
        "commands",
        "sensors/+/temp",
        "cmd.>",
        "plant",
        "core",
    ] {
        assert!(
            text.contains(needle),
            "`ferry check` output does not mention {needle:?}:\n{text}"
        );
    }
    // `source → mapping → sinks`: a line per route naming it, with the two arrows.
    for route in ["telemetry", "commands"] {
        assert!(
            text.lines()
                .any(|l| l.contains(route) && l.matches('→').count() >= 2),
            "route {route} is not shown as `source → mapping → sinks`:\n{text}"
        );
    }
}

#[test]
fn unknown_key_suggests_the_right_one_at_its_position() {
    let yaml = broken("      subject: \"iot.", "      subjet: \"iot.");
    let (check, run) = refused(&yaml, "unknown key `subjet`");
    let want = position_of(&yaml, "subjet", 0);
    assert_eq!(parse_position(&check), Some(want), "position in {check:?}");
    assert_eq!(parse_position(&run), Some(want), "position in {run:?}");
    let out = ferry_check(&yaml).all();
    assert!(
        out.contains("did you mean `subject`?"),
        "no suggestion in:\n{out}"
    );
}

#[test]
fn route_naming_a_missing_connection_is_reported_at_the_name() {
    let yaml = broken(
        "      connection: plant\n      topic: sensors",
        "      connection: nope\n      topic: sensors",
    );
    let (check, run) = refused(&yaml, "names connection `nope`, which is not defined");
    let want = position_of(&yaml, "nope", 0);
    assert_eq!(parse_position(&check), Some(want), "position in {check:?}");
    assert_eq!(parse_position(&run), Some(want), "position in {run:?}");
}

#[test]
fn mqtt_filter_with_hash_not_last_is_refused() {
    let yaml = broken("topic: sensors/+/temp", "topic: sensors/#/temp");
    let (check, _) = refused(&yaml, "`#` must be the last level");
    assert_reported_on_the_line_of(&check, &yaml, "sensors/#/temp");
}

#[test]
fn nats_subject_with_whitespace_is_refused() {
    let yaml = broken("subject: cmd.>", "subject: \"cmd lights.>\"");
    let (check, _) = refused(&yaml, "contains whitespace");
    assert_reported_on_the_line_of(&check, &yaml, "cmd lights");
}

#[test]
fn jq_that_does_not_compile_is_refused() {
    let yaml = broken(
        "'{room: .room, celsius: .value}'",
        "'{room: .room, celsius: '",
    );
    let (check, _) = refused(&yaml, "does not compile");
    assert_reported_on_the_line_of(&check, &yaml, "transform:");
}

#[test]
fn every_error_in_a_file_is_reported_at_once() {
    let yaml = broken("      subject: \"iot.", "      subjet: \"iot.").replace(
        "      connection: plant\n      topic: sensors",
        "      connection: nope\n      topic: sensors",
    );
    for out in [ferry_check(&yaml), ferry_run_until_exit(&yaml, secs(20))] {
        assert_eq!(out.code, Some(2), "output:\n{}", out.all());
        let text = out.all();
        let unknown = error_line(&text, "unknown key `subjet`");
        let missing = error_line(&text, "names connection `nope`");
        assert_ne!(unknown, missing);
        assert_eq!(
            parse_position(unknown),
            Some(position_of(&yaml, "subjet", 0))
        );
        assert_eq!(parse_position(missing), Some(position_of(&yaml, "nope", 0)));
    }
}

#[test]
fn missing_environment_variable_is_an_error() {
    let yaml = broken(
        "url: nats://127.0.0.1:9",
        "url: ${FERRY_TEST_SURELY_UNSET_VARIABLE}",
    );
    let (check, _) = refused(&yaml, "FERRY_TEST_SURELY_UNSET_VARIABLE");
    assert_eq!(
        parse_position(&check).map(|p| p.0),
        Some(position_of(&yaml, "FERRY_TEST_SURELY_UNSET_VARIABLE", 0).0)
    );
}

#[test]
fn a_password_read_from_a_file_never_appears_in_check_output() {
    const SECRET: &str = "hunter2-ferry-secret-4f1c";
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("mqtt-password");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let yaml = broken(
        "      client_id: ferry-plant\n",
        &format!(
            "      client_id: ferry-plant\n      username: ferry\n      password: ${{file:{}}}\n",
            secret_file.display()
        ),
    );

    let good = ferry_check(&yaml);
    assert_eq!(good.code, Some(0), "output:\n{}", good.all());
    assert!(
        !good.all().contains(SECRET),
        "`ferry check` printed the password:\n{}",
        good.all()
    );

    // Also when the file has an error elsewhere, by check and by run.
    let bad = yaml.replace(
        "      connection: plant\n      topic: sensors",
        "      connection: nope\n      topic: sensors",
    );
    for out in [ferry_check(&bad), ferry_run_until_exit(&bad, secs(20))] {
        assert_eq!(out.code, Some(2), "output:\n{}", out.all());
        assert!(
            !out.all().contains(SECRET),
            "the password appears in:\n{}",
            out.all()
        );
    }
}

/// Text that looks like bridges.yaml: its keys, values that are durations, sizes, counts,
/// references and names, and YAML punctuation, in any order.
fn yaml_ish() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just(": ".to_string()),
        Just("- ".to_string()),
        Just("{ ".to_string()),
        Just(" }".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("\"".to_string()),
        Just("connections".to_string()),
        Just("routes".to_string()),
        Just("name".to_string()),
        Just("from".to_string()),
        Just("to".to_string()),
        Just("connection".to_string()),
        Just("mqtt".to_string()),
        Just("nats".to_string()),
        Just("url".to_string()),
        Just("mqtt://127.0.0.1:1".to_string()),
        Just("topic".to_string()),
        Just("subject".to_string()),
        Just("spool".to_string()),
        Just("max_bytes".to_string()),
        Just("shutdown_timeout".to_string()),
        Just("queue".to_string()),
        Just("max_messages".to_string()),
        Just("qos".to_string()),
        Just("1e30".to_string()),
        Just("-1".to_string()),
        Just(".nan".to_string()),
        Just("99999999999999999999".to_string()),
        Just("16GiB".to_string()),
        Just("250ms".to_string()),
        Just("${HOME}".to_string()),
        Just("${file:/dev/null}".to_string()),
        Just("${".to_string()),
        Just("{{ topic[1] }}".to_string()),
        Just("../".to_string()),
        ".{0,6}",
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|parts| parts.concat())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

    /// The whole loader on arbitrary bytes (through a file, as `ferry run` reads it): an
    /// error or a configuration, never a panic.
    #[test]
    fn the_loader_takes_any_bytes_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridges.yaml");
        std::fs::write(&path, &bytes).unwrap();
        let _ = ferry::config::load(&path);
    }

    /// The parser on text that looks like a configuration: an error or a configuration,
    /// never a panic; every error has a position inside the text.
    #[test]
    fn the_parser_takes_any_yaml_ish_text_without_panic(text in yaml_ish()) {
        let lookup = ferry::config::Lookup::system();
        // YAML breaks lines at LF, CRLF and a lone CR (`str::lines` knows only the first two).
        let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
        if let Err(errors) = ferry::config::parse(&text, "bridges.yaml", &lookup) {
            for e in &errors.errors {
                proptest::prop_assert!(e.pos.line >= 1, "{e:?}");
                proptest::prop_assert!(e.pos.line as usize <= lines + 1, "{e:?} in {text:?}");
            }
        }
    }

    /// Durations and sizes: any text is a value in range or an error, never a panic.
    #[test]
    fn durations_and_sizes_take_any_text_without_panic(text in ".{0,24}", number in proptest::num::f64::ANY) {
        if let Ok(d) = ferry::config::check_duration(&text) {
            proptest::prop_assert!(d <= ferry::config::MAX_DURATION);
        }
        if let Ok(n) = ferry::config::check_size(&text) {
            proptest::prop_assert!(n <= ferry::config::MAX_SIZE);
        }
        for unit in ["", "ms", "s", "m", "h", "d"] {
            let _ = ferry::config::check_duration(&format!("{number}{unit}"));
        }
        let _ = ferry::config::check_size(&format!("{number}GiB"));
    }
}

#[test]
fn deeply_nested_yaml_is_an_error_not_a_stack_overflow() {
    // Run on a thread with the stack of a runtime worker (where a reload parses).
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            let lookup = ferry::config::Lookup::system();
            for n in [30, 64, 100, 100_000] {
                for deep in ["[".repeat(n), "{a: ".repeat(n), "- ".repeat(n) + "x"] {
                    assert!(ferry::config::parse(&deep, "bridges.yaml", &lookup).is_err());
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn numbers_out_of_range_are_errors_saying_the_range() {
    use ferry::config::{NumberProblem, check_duration, check_size};
    assert_eq!(check_duration("1e30"), Err(NumberProblem::NotADuration));
    assert_eq!(
        check_duration("99999999999999999999s"),
        Err(NumberProblem::TooLong)
    );
    assert_eq!(check_duration("3651d"), Err(NumberProblem::TooLong));
    assert_eq!(check_duration("-5s"), Err(NumberProblem::Negative));
    assert_eq!(check_duration("NaN"), Err(NumberProblem::NotADuration));
    assert!(check_duration("3650d").is_ok());
    assert_eq!(check_size("16GiB"), Ok(16 << 30));
    assert_eq!(
        check_size("99999999999999999999"),
        Err(NumberProblem::TooLarge)
    );
    assert_eq!(check_size("17179869184GiB"), Err(NumberProblem::TooLarge));
    assert_eq!(check_size("-1"), Err(NumberProblem::Negative));
    assert_eq!(check_size("lots"), Err(NumberProblem::NotASize));
}
