//! Every example configuration is valid, `ferry check` explains each of its routes, and no
//! secret it reads shows up in that explanation.

use std::process::Command;

#[test]
fn every_example_checks_and_keeps_its_secrets() {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("mqtt-password"), "mqtt-hunter2\n").unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["check", "-c"])
            .arg(&path)
            .env("CREDENTIALS_DIRECTORY", secrets.path())
            .env("NATS_PASSWORD", "nats-hunter2")
            .env("WEBHOOK_TOKEN", "webhook-hunter2")
            .env("RESTDB_API_KEY", "restdb-hunter2")
            .env("MIGRATORYDATA_TOKEN", "migratorydata-hunter2")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", path.display());
        let yaml = std::fs::read_to_string(&path).unwrap();
        let routes = yaml.matches("  - name: ").count();
        assert_eq!(
            stdout.matches("\nroute ").count() + usize::from(stdout.starts_with("route ")),
            routes,
            "{stdout}"
        );
        assert!(stdout.contains(" → "), "{stdout}");
        for secret in [
            "mqtt-hunter2",
            "nats-hunter2",
            "webhook-hunter2",
            "restdb-hunter2",
            "migratorydata-hunter2",
        ] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{}: secret leaked",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "examples found: {checked}");
}

/// `ferry map` shows what a route makes of one message, without any broker: each publish,
/// a failure with its dead letter (exit 1), an unknown route (exit 2).
#[test]
fn ferry_map_shows_publishes_and_dead_letters_without_brokers() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/split-and-dead-letters.yaml"
    );
    let map = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["map", "-c", example])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = map(&[
        "-r",
        "readings",
        "gateways/plant-1/batch",
        r#"{"readings": [{"room": "Hall", "celsius": 21.5}, {"room": "lab", "celsius": 19}]}"#,
    ]);
    assert_eq!(code, Some(0), "{out}");
    let hall = out
        .find("→ core (nats) `iot.plant-1.hall.temperature`")
        .expect(&out);
    let lab = out
        .find("→ core (nats) `iot.plant-1.lab.temperature`")
        .expect(&out);
    assert!(hall < lab, "in order: {out}");
    assert!(
        out.contains(r#"payload: {"room":"lab","celsius":19,"site":"plant-1"}"#),
        "{out}"
    );
    assert!(out.contains("headers: site: plant-1"), "{out}");

    let (code, out, _) = map(&["-r", "readings", "gateways/plant-1/batch", "not json"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("fails at decode"), "{out}");
    assert!(out.contains("→ core (nats) `dead.readings`"), "{out}");
    assert!(out.contains("Ferry-Stage: decode"), "{out}");
    assert!(
        out.contains("payload: not json"),
        "the dead letter is unchanged: {out}"
    );

    let (code, out, _) = map(&[
        "-r",
        "readings",
        "gateways/plant-1/batch",
        r#"{"readings": []}"#,
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("nothing is published"), "{out}");

    let (code, _, err) = map(&["-r", "readings", "gateways/plant-1/other", "{}"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(
            "never receives `gateways/plant-1/other`: its source subscribes to `gateways/+/batch`"
        ),
        "{err}"
    );

    let (code, _, err) = map(&["-r", "nope", "a/b"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("no route is called `nope`; the routes are: readings"),
        "{err}"
    );
}
