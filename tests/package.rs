//! The shell and packaging surface: `ferry completions`, `ferry man`, `ferry schema`, and the
//! Debian package built by `scripts/package`, unpacked into a scratch root (never installed on
//! the machine) and run from there.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const SUBCOMMANDS: [&str; 6] = ["run", "check", "map", "schema", "completions", "man"];

fn ferry(args: &[&str]) -> std::process::Output {
    output_within(Command::new(ferry_bin()).args(args), secs(30))
}

fn stdout_of(args: &[&str]) -> String {
    let out = ferry(args);
    assert!(
        out.status.success(),
        "ferry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A shell found on PATH, if any.
fn shell(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Each shell's script names every subcommand and is valid syntax for that shell (checked with
/// the shell itself when it is installed; bash always is).
#[test]
fn completions_name_every_subcommand_and_parse() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completions", name]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{name} completion lacks `{sub}`");
        }
        assert!(
            script.contains("config"),
            "{name} completion lacks --config"
        );
        let file = dir.path().join(format!("ferry.{name}"));
        std::fs::write(&file, &script).unwrap();
        let Some(sh) = shell(name) else {
            assert_ne!(name, "bash", "bash is needed to check the bash completion");
            eprintln!(
                "note: {name} is not installed; its completion script's syntax is not checked"
            );
            continue;
        };
        let out = output_within(Command::new(sh).arg("-n").arg(&file), secs(30));
        assert!(
            out.status.success(),
            "`{name} -n` refuses the completion script: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let wrong = ferry(&["completions", "powershell-7"]);
    assert_eq!(
        wrong.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// `ferry man` is a roff page that documents every subcommand, and `man` renders it.
#[test]
fn man_page_is_roff_and_renders() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH ferry 1"), "{page}");
    assert!(
        page.contains(".SH NAME") && page.contains(".SH SUBCOMMANDS"),
        "{page}"
    );
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("ferry\\-{sub}(1)")),
            "ferry(1) does not list {sub}"
        );
        // The page it refers to, with the subcommand's own options.
        let sub_page = stdout_of(&["man", sub]);
        assert!(
            sub_page.contains(&format!(".TH ferry-{sub} 1")),
            "{sub_page}"
        );
    }
    assert!(stdout_of(&["man", "check"]).contains("\\-\\-config"));
    assert_eq!(ferry(&["man", "nope"]).status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferry.1");
    std::fs::write(&file, &page).unwrap();
    render_man_page(&file);
}

/// `ferry man bridges.yaml` is bridges.yaml(5): under a heading for each part of the file, every
/// key the schema gives that part (the walk below is the test's own, over `ferry schema`).
#[test]
fn bridges_yaml_page_names_every_key_of_the_schema() {
    let page = stdout_of(&["man", "bridges.yaml"]);
    assert!(page.starts_with(".TH bridges.yaml 5 "), "{page}");
    for heading in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "KEYS",
        "EXAMPLES",
        "FILES",
        "\"SEE ALSO\"",
    ] {
        assert!(page.contains(&format!("\n.SH {heading}\n")), "no {heading}");
    }
    let schema: serde_json::Value = serde_json::from_str(&stdout_of(&["schema"])).unwrap();
    let mut keys = Vec::new();
    keys_by_part(&schema, "The file", &mut keys);
    assert!(keys.len() > 100, "{keys:?}");
    for (part, key) in keys {
        let heading = format!("\n.SS \"{part}\"\n");
        let start = page
            .find(&heading)
            .unwrap_or_else(|| panic!("no heading for {part}"));
        let section = &page[start + heading.len()..];
        let section = &section[..section.find("\n.S").unwrap_or(section.len())];
        let key = key.replace('-', "\\-");
        assert!(
            section.contains(&format!(".TP\n\\fB\\%{key}\\fR (")),
            "{part} does not name `{key}`:{section}"
        );
    }
    // What `ferry man` says when it has no such page names this one too.
    let nope = ferry(&["man", "nope"]);
    assert_eq!(nope.status.code(), Some(2));
    let said = String::from_utf8_lossy(&nope.stderr);
    assert!(
        said.contains("no subcommand `nope`") && said.contains("bridges.yaml"),
        "{said}"
    );
}

/// Every (part, key) of a schema: the file's own keys, then each definition's.
fn keys_by_part(v: &serde_json::Value, part: &str, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match v {
        Value::Object(o) => {
            if let Some(props) = o.get("properties").and_then(Value::as_object) {
                out.extend(props.keys().map(|key| (part.to_string(), key.clone())));
            }
            for (name, child) in o {
                if name == "$defs" {
                    for (def, schema) in child.as_object().unwrap() {
                        keys_by_part(schema, def, out);
                    }
                } else {
                    keys_by_part(child, part, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| keys_by_part(i, part, out)),
        _ => {}
    }
}

/// groff reads bridges.yaml(5) without a warning (with all of them on): no stray escape, no
/// character it cannot typeset, no misplaced request. groff is needed (`man` uses it).
#[test]
fn bridges_yaml_page_has_no_groff_warnings() {
    let page = stdout_of(&["man", "bridges.yaml"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridges.yaml.5");
    std::fs::write(&file, &page).unwrap();
    let groff = shell("groff").expect("groff is needed to check bridges.yaml(5): install groff");
    let out = output_within(
        Command::new(groff)
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&file),
        secs(60),
    );
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.is_empty(),
        "groff on bridges.yaml(5):\n{warnings}"
    );
    render_man_page(&file);
}

/// Renders a man page file with `man -l` when `man` is installed; checks it names ferry.
fn render_man_page(file: &Path) {
    let Some(man) = shell("man") else {
        eprintln!("note: man is not installed; the page is not rendered");
        return;
    };
    let out = output_within(
        Command::new(man)
            .arg("-l")
            .arg(file)
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "80"),
        secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "man -l {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ferry") && text.contains("NAME"), "{text}");
}

/// `ferry schema` prints JSON Schema 2020-12 that an editor can load (the content is checked
/// against the parser in src/config/schema.rs).
#[test]
fn schema_command_prints_json_schema() {
    let text = stdout_of(&["schema"]);
    let schema: serde_json::Value = serde_json::from_str(&text).expect("ferry schema prints JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(schema["$defs"]["Route"]["properties"]["from"].is_object());
}

/// The .deb that `scripts/package` builds holds every asset where Debian expects it, with the
/// control fields set, and its ferry checks its own default config from a scratch root.
///
/// It packages the debug binary cargo built for this test run (`--profile dev --no-build
/// --fast`): a release build would cost CI minutes and shows nothing more here. On a machine
/// without cargo-deb, scripts/package installs it first (a few minutes, once).
#[test]
fn debian_package_holds_every_asset_and_checks_its_config() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The binary under test is <target>/debug/ferry: package that one.
    let target_dir = Path::new(ferry_bin()).parent().unwrap().parent().unwrap();
    let out = output_within(
        Command::new(repo.join("scripts/package"))
            .args(["--profile", "dev", "--no-build", "--fast"])
            .current_dir(repo)
            .env("CARGO_TARGET_DIR", target_dir),
        secs(20 * 60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/package failed:\n{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let deb = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("scripts/package prints the .deb"),
    );
    assert!(
        deb.is_file(),
        "{} is not a file; stderr:\n{stderr}",
        deb.display()
    );

    let listing = dpkg_deb(&["-c"], &deb);
    let mut expected = vec![
        "./usr/bin/ferry".to_string(),
        "./etc/ferry/bridges.yaml".into(),
        "./usr/share/doc/ferry/README.md".into(),
        "./usr/share/man/man1/ferry.1.gz".into(),
        "./usr/share/man/man1/ferry-run.1.gz".into(),
        "./usr/share/man/man1/ferry-check.1.gz".into(),
        "./usr/share/man/man5/bridges.yaml.5.gz".into(),
        "./usr/share/bash-completion/completions/ferry".into(),
        "./usr/share/zsh/vendor-completions/_ferry".into(),
        "./usr/share/fish/vendor_completions.d/ferry.fish".into(),
    ];
    // Every unit in systemd/ (ferry.service, ferry@.service) is packaged.
    let mut units = 0;
    for entry in std::fs::read_dir(repo.join("systemd")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".service") {
            expected.push(format!("./usr/lib/systemd/system/{name}"));
            units += 1;
        }
    }
    assert!(units >= 1, "no units in systemd/");
    // Every page of docs/ (its connectors/ folder too) beside the README, as docs/, where the
    // README's links and the pages' links to each other expect it.
    let mut pages = 0;
    let mut dirs = vec![repo.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let page = path.strip_prefix(repo).unwrap().display().to_string();
            expected.push(format!("./usr/share/doc/ferry/{page}"));
            pages += 1;
        }
    }
    assert!(pages >= 2, "no pages in docs/");
    for path in &expected {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} is not in the package:\n{listing}"
        );
    }
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" ./usr/bin/ferry")),
        "ferry is not executable:\n{listing}"
    );

    let info = dpkg_deb(&["-I"], &deb);
    for field in [
        "Package: ferry",
        "Section: net",
        "Maintainer: ",
        "Depends: libc6",
        "Description: ",
    ] {
        assert!(
            info.contains(field),
            "no `{field}` in the control file:\n{info}"
        );
    }
    let control = dpkg_deb(&["-f"], &deb);
    assert!(
        control.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{control}"
    );
    let meta = tempfile::tempdir().unwrap();
    let status = output_within(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(meta.path()),
        secs(60),
    );
    assert!(status.status.success());
    let conffiles = std::fs::read_to_string(meta.path().join("conffiles")).unwrap_or_default();
    assert!(
        conffiles.lines().any(|l| l == "/etc/ferry/bridges.yaml"),
        "the config is not a conffile: {conffiles:?}"
    );
    // Installed, not started: the postinst never enables or starts ferry on a fresh install.
    let postinst = std::fs::read_to_string(meta.path().join("postinst")).unwrap_or_default();
    assert!(
        !postinst.contains("deb-systemd-invoke start") && !postinst.contains("systemctl start"),
        "{postinst}"
    );

    // Unpack into a scratch root (the machine is not touched) and run the packaged ferry on
    // the packaged config.
    let root = tempfile::tempdir().unwrap();
    let unpack = output_within(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(root.path()),
        secs(120),
    );
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
    let config = root.path().join("etc/ferry/bridges.yaml");
    let check = output_within(
        Command::new(root.path().join("usr/bin/ferry"))
            .args(["check", "-c"])
            .arg(&config)
            .env("NO_COLOR", "1"),
        secs(30),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        check.status.code(),
        Some(0),
        "ferry check on the packaged config:\n{said}"
    );
    assert!(said.contains(": OK"), "{said}");
    render_man_page(&root.path().join("usr/share/man/man1/ferry.1.gz"));
    render_man_page(&root.path().join("usr/share/man/man5/bridges.yaml.5.gz"));
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = output_within(Command::new("dpkg-deb").args(args).arg(deb), secs(60));
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
