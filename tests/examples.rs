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
        for secret in ["mqtt-hunter2", "nats-hunter2"] {
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
