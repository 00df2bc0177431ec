//! The layers ferry's modules form, and the tests that keep them.
//!
//! Bottom to top; a file may import from its own layer or any below it, never from above, so
//! no two modules import each other and a reader can learn the code from the bottom up:
//!
//! 1. the message (`message.rs`): what flows, and its acknowledgement;
//! 2. configuration primitives: the positioned YAML tree, diagnostics, `${...}`
//!    interpolation, duration and size ranges, URL redaction;
//! 3. the configuration model (`config/model/` and each connector's `config.rs`): the typed,
//!    validated configuration;
//! 4. the shared contracts (`contracts/`): what connectors and the pipeline agree on (a
//!    sink, a route's input queue, connection status and backoff, supervised tasks);
//! 5. protocol descriptions: in each connector's folder, the I/O-free files that say what the
//!    protocol is (`protocol.rs`, `names.rs`, `url_form.rs`) and the registry
//!    (`connectors/protocol.rs`);
//! 6. mapping (`mapping/`): what a route does to each message, pure;
//! 7. configuration assembly (the rest of `config/`, and each connector's `read.rs`): parsing
//!    and checking `bridges.yaml` and `ferry relay`'s URLs into the model;
//! 8. connectors (the rest of `connectors/`): the protocol clients and servers;
//! 9. the pipeline (`pipeline/`): routes, workers, spools, supervision, reload;
//! 10. commands: the admin listener, the daemon, `ferry relay`, `ferry check`'s explanation,
//!     systemd, and the crate root.
//!
//! A second test keeps each protocol crate inside its connector's folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top: each layer's name and the files in it (`dir/` is everything under `dir`, `*`
/// one folder name). A file is in the first layer that lists it.
const LAYERS: &[(&str, &[&str])] = &[
    ("the message", &["message.rs"]),
    (
        "configuration primitives",
        &[
            "config/yaml.rs",
            "config/diagnostics.rs",
            "config/interpolate.rs",
            "config/ranges.rs",
            "config/redact.rs",
            "config/endpoint_url.rs",
            "config/values.rs",
        ],
    ),
    // The typed configuration, each protocol's part in its own folder: it names no descriptor
    // and no runtime, so everything above may read it.
    (
        "the configuration model",
        &[
            "config/model/",
            "config/resolved.rs",
            "config/probe.rs",
            "connectors/*/config.rs",
        ],
    ),
    ("shared contracts", &["contracts/"]),
    // What each protocol is, over the model's types: directions, delivery, names, URL forms.
    (
        "protocol descriptions",
        &[
            "connectors/protocol.rs",
            "connectors/*/protocol.rs",
            "connectors/*/names.rs",
            "connectors/*/url_form.rs",
        ],
    ),
    ("mapping", &["mapping/"]),
    // Reading a protocol's sections into the model lives in its folder, beside its keys, but
    // it is configuration assembly: it extends the `Reader` of `config/` and may check
    // templates, which the mapping compiles.
    (
        "configuration assembly",
        &["config/", "connectors/*/read.rs"],
    ),
    ("connectors", &["connectors/"]),
    ("the pipeline", &["pipeline/"]),
    (
        "commands",
        &[
            "admin/",
            "daemon.rs",
            "relay.rs",
            "explain.rs",
            "systemd.rs",
            "lib.rs",
        ],
    ),
];

/// Imports from a higher layer that another change removes: (importing file, imported path,
/// what removes it). Delete an entry once its import is gone; the test fails on a stale one.
const KNOWN_EXCEPTIONS: &[(&str, &str, &str)] = &[];

/// Each protocol crate and where it may be named: its connector's folder (or file), and the
/// admin listener for the HTTP server and TLS it runs.
const PROTOCOL_CRATES: &[(&str, &[&str])] = &[
    ("mqtt4", &["connectors/mqtt/"]),
    ("mqtt5", &["connectors/mqtt/"]),
    ("rumqttc", &["connectors/mqtt/"]),
    ("async_nats", &["connectors/nats/"]),
    (
        "reqwest",
        &[
            // One HTTP client stack for every connector that speaks HTTP, and `ferry tap`.
            "connectors/http_client.rs",
            "connectors/http/",
            "connectors/sse/",
            "connectors/migratorydata/",
            "admin/tap_client.rs",
        ],
    ),
    (
        "axum",
        &[
            "connectors/sse_server/",
            "connectors/http_server/",
            "admin/",
            // `HttpRoutes`: how a connection hands its HTTP routes to the admin listener.
            "connectors/mod.rs",
        ],
    ),
    ("hyper", &["admin/"]),
    ("hyper_util", &["admin/"]),
    ("tower_service", &["admin/"]),
    ("tokio_rustls", &["admin/"]),
    ("rustls", &["connectors/tls.rs", "admin/"]),
    ("rustls_pemfile", &["connectors/tls.rs"]),
    ("rustls_native_certs", &["connectors/tls.rs"]),
];

fn matches(pattern: &str, file: &str) -> bool {
    if let Some(dir) = pattern.strip_suffix('/') {
        let dir: Vec<&str> = dir.split('/').collect();
        let file: Vec<&str> = file.split('/').collect();
        return file.len() > dir.len() && dir.iter().zip(&file).all(|(d, f)| *d == "*" || d == f);
    }
    let pattern: Vec<&str> = pattern.split('/').collect();
    let file: Vec<&str> = file.split('/').collect();
    pattern.len() == file.len() && pattern.iter().zip(&file).all(|(p, f)| *p == "*" || p == f)
}

/// The layer (index into [`LAYERS`]) of a file relative to `src/`.
fn layer(file: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, files)| files.iter().any(|pattern| matches(pattern, file)))
}

/// One source file: its path relative to `src/` and its lines, with test-only items,
/// comments and string contents blanked (line numbers kept).
struct Source {
    file: String,
    module: Vec<String>,
    lines: Vec<String>,
}

/// The crate's module path of a file relative to `src/`.
fn module_of(file: &str) -> Vec<String> {
    let path = file.strip_suffix(".rs").unwrap_or(file);
    let mut module: Vec<String> = path.split('/').map(String::from).collect();
    if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
        module.pop();
    }
    module
}

/// `line` without comments and with what is inside string and char literals blanked, so
/// braces and paths in them count for nothing. `in_string` carries a string across lines.
fn code_only(line: &str, in_string: &mut Option<usize>) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(hashes) = *in_string {
            // Inside a string: find its end (`"` plus the raw string's hashes).
            if c == '\\' && hashes == 0 {
                i += 2;
                continue;
            }
            if c == '"'
                && chars[i + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|h| **h == '#')
                    .count()
                    == hashes
            {
                *in_string = None;
                out.push('"');
                i += 1 + hashes;
                continue;
            }
            i += 1;
            continue;
        }
        match c {
            '/' if chars.get(i + 1) == Some(&'/') => break,
            '"' => {
                *in_string = Some(0);
                out.push('"');
            }
            // A raw string: r"..." or r#"..."#.
            'r' if i == 0 || !is_word(chars[i - 1]) || chars[i - 1] == 'b' => {
                let hashes = chars[i + 1..].iter().take_while(|h| **h == '#').count();
                if chars.get(i + 1 + hashes) == Some(&'"') {
                    *in_string = Some(hashes);
                    out.push('"');
                    i += 2 + hashes;
                    continue;
                }
                out.push(c);
            }
            '\'' if chars.get(i + 2) == Some(&'\'') => {
                out.push_str("' '");
                i += 3;
                continue;
            }
            '\'' if chars.get(i + 1) == Some(&'\\') => {
                let end = chars[i + 2..].iter().position(|c| *c == '\'');
                out.push_str("' '");
                i += 3 + end.unwrap_or(0);
                continue;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Reads every `.rs` file under `src/` (but `main.rs`, the binary, which reaches the library
/// only as `ferry::`), its test-only items blanked and the files of test-only modules left out.
fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let file = path.strip_prefix(&root).unwrap().display().to_string();
                files.push((file, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files.sort();
    let mut test_modules = BTreeSet::new();
    let mut sources = Vec::new();
    for (file, text) in &files {
        let module = module_of(file);
        let mut in_string = None;
        let code: Vec<String> = text
            .lines()
            .map(|line| code_only(line, &mut in_string))
            .collect();
        let mut lines = Vec::with_capacity(code.len());
        let mut skip_from = None;
        let mut depth = 0i64;
        let mut n = 0;
        while n < code.len() {
            let line = code[n].trim();
            if skip_from.is_none() && line.starts_with("#[cfg(test)]") {
                skip_from = Some(n);
                depth = 0;
            }
            if let Some(from) = skip_from {
                lines.push(String::new());
                let item = line.trim_start_matches("#[cfg(test)]").trim();
                if item.starts_with("#[") && item.ends_with(']') || n == from && item.is_empty() {
                    n += 1;
                    continue;
                }
                if let Some(name) = item
                    .strip_prefix("mod ")
                    .or_else(|| item.strip_prefix("pub mod "))
                    .and_then(|rest| rest.strip_suffix(';'))
                {
                    let mut path = module.clone();
                    path.push(name.trim().to_string());
                    test_modules.insert(path);
                }
                depth += braces(line);
                if depth <= 0 && (line.ends_with('}') || line.ends_with(';')) {
                    skip_from = None;
                }
                n += 1;
                continue;
            }
            lines.push(code[n].clone());
            n += 1;
        }
        sources.push(Source {
            file: file.clone(),
            module,
            lines,
        });
    }
    sources.retain(|s| {
        s.file != "main.rs"
            && !test_modules
                .iter()
                .any(|m| s.module.len() >= m.len() && s.module[..m.len()] == m[..])
    });
    sources
}

/// A path from the crate root and the name a `use` binds it to.
type Named = (Vec<String>, String);

/// Expands a `use` tree (`a::{b, c::{d as e}}`) into each path it names and the name it
/// binds (`*` for a glob).
fn expand(tree: &str, prefix: &[String], out: &mut Vec<Named>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let mut path = prefix.to_vec();
        path.extend(
            tree[..open]
                .split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &path, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &path, out);
        return;
    }
    if tree.is_empty() {
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((path, alias)) => (path.trim(), Some(alias.trim())),
        None => (tree, None),
    };
    let mut full = prefix.to_vec();
    full.extend(path.split("::").map(str::trim).map(String::from));
    if full.last().is_some_and(|l| l == "self") {
        full.pop();
    }
    let name = alias.map_or_else(|| full.last().cloned().unwrap_or_default(), String::from);
    out.push((full, name));
}

/// The `use` statements of a file: their first line, and each path they name (from the
/// crate root) with the name it binds. Paths through `crate::`, a file-level `super::` or
/// `self::`, or a child module count; other crates are not layered.
fn uses(source: &Source, files: &BTreeMap<Vec<String>, &Source>) -> Vec<(usize, Vec<Named>)> {
    let mut found = Vec::new();
    let mut depth = 0i64;
    let mut n = 0;
    while n < source.lines.len() {
        let line = source.lines[n].trim();
        // `super::` inside an inline module means another module: only the file's own count.
        let file_level = depth == 0;
        depth += braces(line);
        let at = line.find("use ").filter(|at| {
            let before = line[..*at].trim();
            before.is_empty() || before.starts_with("pub")
        });
        let Some(at) = at else {
            n += 1;
            continue;
        };
        let first = n;
        let mut statement = line[at + 4..].to_string();
        while !statement.contains(';') && n + 1 < source.lines.len() {
            n += 1;
            statement.push(' ');
            statement.push_str(source.lines[n].trim());
            depth += braces(&source.lines[n]);
        }
        let statement = statement.split(';').next().unwrap_or_default().trim();
        let head = statement.split("::").next().unwrap_or_default();
        let mut child = source.module.clone();
        child.push(head.to_string());
        let (mut base, mut tree) = match head {
            "crate" => (Vec::new(), &statement["crate::".len()..]),
            "self" | "super" if file_level => (source.module.clone(), statement),
            _ if files.contains_key(&child) => (source.module.clone(), statement),
            _ => {
                n += 1;
                continue;
            }
        };
        if let Some(rest) = tree.strip_prefix("self::") {
            tree = rest;
        }
        while let Some(rest) = tree.strip_prefix("super::") {
            base.pop();
            tree = rest;
        }
        let mut paths = Vec::new();
        expand(tree, &base, &mut paths);
        found.push((first, paths));
        n += 1;
    }
    found
}

/// How much deeper in braces a line ends than it starts.
fn braces(line: &str) -> i64 {
    line.matches('{').count() as i64 - line.matches('}').count() as i64
}

/// Where a path from the crate root is defined: the file, and whether the path names a module
/// (rather than an item in one). Follows `pub use` re-exports, so `config::Reconnect` is found
/// in `config/model/`.
fn resolve(
    path: &[String],
    files: &BTreeMap<Vec<String>, &Source>,
    depth: usize,
) -> Option<(String, bool)> {
    let mut known = 0;
    while known < path.len() && files.contains_key(&path[..=known]) {
        known += 1;
    }
    let module = files.get(&path[..known])?;
    let Some(item) = path.get(known) else {
        return Some((module.file.clone(), true));
    };
    if depth > 8 {
        return Some((module.file.clone(), false));
    }
    let mut globs = Vec::new();
    for (_, paths) in uses(module, files) {
        for (target, name) in paths {
            if name == "*" {
                globs.push(target[..target.len() - 1].to_vec());
            } else if name == *item {
                let mut target = target;
                target.extend_from_slice(&path[known + 1..]);
                if let Some(found) = resolve(&target, files, depth + 1) {
                    return Some(found);
                }
            }
        }
    }
    for glob in globs {
        let Some(source) = files.get(&glob[..]) else {
            continue;
        };
        // Defined there, or re-exported there by name (`pub use protocols::{X, ...}`).
        let reexports = || {
            uses(source, files)
                .iter()
                .any(|(_, paths)| paths.iter().any(|(_, name)| name == item))
        };
        if defines(source, item) || reexports() {
            let mut target = glob.clone();
            target.extend_from_slice(&path[known..]);
            return resolve(&target, files, depth + 1);
        }
    }
    Some((module.file.clone(), false))
}

/// Whether `source` defines `item` at its top level.
fn defines(source: &Source, item: &str) -> bool {
    source.lines.iter().any(|line| {
        let line = line.trim_start();
        let line = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        [
            "struct ",
            "enum ",
            "type ",
            "trait ",
            "fn ",
            "const ",
            "static ",
            "mod ",
            "async fn ",
        ]
        .iter()
        .any(|kind| {
            line.strip_prefix(kind).is_some_and(|rest| {
                rest.strip_prefix(item)
                    .is_some_and(|after| after.chars().next().is_none_or(|c| !is_word(c)))
            })
        })
    })
}

/// Every import of one file into another: (line, path as the crate names it, defining file).
fn imports(
    source: &Source,
    files: &BTreeMap<Vec<String>, &Source>,
) -> Vec<(usize, String, String)> {
    let mut found = Vec::new();
    let mut aliases = BTreeMap::new();
    let mut in_use = BTreeSet::new();
    for (line, paths) in uses(source, files) {
        for (path, name) in paths {
            if path.last().is_some_and(|l| l == "*") {
                continue;
            }
            let Some((file, is_module)) = resolve(&path, files, 0) else {
                continue;
            };
            if is_module {
                // A module brought into scope: what counts is each path used through it.
                aliases.insert(name, path);
            } else {
                found.push((line, path.join("::"), file));
            }
        }
        let mut end = line;
        while !source.lines[end].contains(';') && end + 1 < source.lines.len() {
            end += 1;
        }
        in_use.extend(line..=end);
    }
    let mut heads: Vec<(String, Vec<String>)> = aliases.into_iter().collect();
    heads.push(("crate".into(), Vec::new()));
    for (n, line) in source.lines.iter().enumerate() {
        if in_use.contains(&n) {
            continue;
        }
        for (head, module) in &heads {
            let pattern = format!("{head}::");
            let mut from = 0;
            while let Some(at) = line[from..].find(&pattern) {
                let at = from + at;
                from = at + pattern.len();
                let before = line[..at].chars().last();
                if before.is_some_and(|c| is_word(c) || c == ':') {
                    continue;
                }
                let rest: String = line[from..]
                    .chars()
                    .take_while(|c| is_word(*c) || *c == ':')
                    .collect();
                let mut path = module.clone();
                path.extend(rest.split("::").filter(|s| !s.is_empty()).map(String::from));
                if path.is_empty() {
                    continue;
                }
                if let Some((file, _)) = resolve(&path, files, 0) {
                    found.push((n, path.join("::"), file));
                }
            }
        }
    }
    found
}

/// No file imports from a layer above its own.
#[test]
fn no_module_imports_from_a_higher_layer() {
    let sources = sources();
    let files: BTreeMap<Vec<String>, &Source> =
        sources.iter().map(|s| (s.module.clone(), s)).collect();
    let mut problems = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    for source in &sources {
        let Some(own) = layer(&source.file) else {
            problems.push(format!(
                "src/{}: in no layer; add it to LAYERS in src/layers.rs",
                source.file
            ));
            continue;
        };
        for (line, path, file) in imports(source, &files) {
            let Some(theirs) = layer(&file) else {
                continue;
            };
            if theirs <= own {
                continue;
            }
            if let Some(known) = KNOWN_EXCEPTIONS
                .iter()
                .find(|(from, to, _)| *from == source.file && path.starts_with(to))
            {
                used_exceptions.insert(*known);
                continue;
            }
            problems.push(format!(
                "src/{}:{}: `{path}` (src/{file}, {}) imported from {}: a module imports only from its own layer or below",
                source.file,
                line + 1,
                LAYERS[theirs].0,
                LAYERS[own].0,
            ));
        }
    }
    for known in KNOWN_EXCEPTIONS {
        if !used_exceptions.contains(known) {
            problems.push(format!(
                "src/{} no longer imports `{}`: delete its entry in KNOWN_EXCEPTIONS",
                known.0, known.1
            ));
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Each protocol crate is named only in its connector's folder (and the admin listener's).
#[test]
fn protocol_crates_stay_in_their_connector() {
    let mut sources = sources();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let main = std::fs::read_to_string(root.join("main.rs")).unwrap();
    let mut in_string = None;
    sources.push(Source {
        file: "main.rs".into(),
        module: Vec::new(),
        lines: main.lines().map(|l| code_only(l, &mut in_string)).collect(),
    });
    let mut problems = Vec::new();
    for source in &sources {
        for (n, line) in source.lines.iter().enumerate() {
            for (krate, allowed) in PROTOCOL_CRATES {
                let pattern = format!("{krate}::");
                let named = line.match_indices(&pattern).any(|(at, _)| {
                    line[..at]
                        .chars()
                        .last()
                        .is_none_or(|c| !is_word(c) && c != ':')
                });
                if named && !allowed.iter().any(|a| matches(a, &source.file)) {
                    problems.push(format!(
                        "src/{}:{}: names `{krate}`, which belongs in {}",
                        source.file,
                        n + 1,
                        allowed.join(", ")
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The test's own reading of a file: comments, strings and test modules do not count.
#[test]
fn the_reader_skips_comments_strings_and_tests() {
    let mut in_string = None;
    assert_eq!(
        code_only(r#"let x = "crate::admin"; // crate::admin"#, &mut in_string),
        r#"let x = ""; "#
    );
    assert_eq!(code_only("let c = '{';", &mut in_string), "let c = ' ';");
    let mut paths = Vec::new();
    expand("config::{self, Config, model::{A as B}}", &[], &mut paths);
    let paths: Vec<(String, String)> = paths.into_iter().map(|(p, n)| (p.join("::"), n)).collect();
    assert_eq!(
        paths,
        [
            ("config".to_string(), "config".to_string()),
            ("config::Config".into(), "Config".into()),
            ("config::model::A".into(), "B".into()),
        ]
    );
    assert!(matches(
        "connectors/*/config.rs",
        "connectors/mqtt/config.rs"
    ));
    assert!(!matches("connectors/*/config.rs", "connectors/config.rs"));
    assert!(matches("contracts/", "contracts/sink.rs"));
    assert_eq!(layer("config/model/mod.rs"), Some(2));
    assert_eq!(layer("connectors/mqtt/protocol.rs"), Some(4));
    assert_eq!(layer("config/parse.rs"), Some(6));
}
