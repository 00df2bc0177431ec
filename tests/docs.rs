//! The documentation stands alone: the README is short and starts with the two commands that
//! set everything up, every relative link in the repository's Markdown leads to a file (and a
//! heading) that exists, and nothing in the repository points at a file outside it, at a design
//! file it does not hold, or at an issue number. No brokers, no ferry binary: files only.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use regex::Regex;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file of the repository, build output and hidden directories (`.git`) left out.
fn repository_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy();
            if name.starts_with('.') || (dir == repo() && name == "target") {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(repo(), &mut out);
    out
}

fn markdown_files() -> Vec<PathBuf> {
    let files: Vec<_> = repository_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    assert!(
        files.iter().any(|p| p.ends_with("docs/architecture.md")),
        "no docs/ found among {files:?}"
    );
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The text with fenced code blocks blanked out (line count kept), so that a `# comment` in a
/// shell block is not taken for a heading, nor `[a](b)` in a code sample for a link.
fn prose(text: &str) -> String {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                ""
            } else if fenced {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped (`` ` ``, `:`, `(`,
/// `⇄`...), each space a `-`; a repeated heading gets `-1`, `-2`, ...
fn anchors(markdown: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for line in prose(markdown).lines() {
        let Some(title) = line
            .strip_prefix('#')
            .map(|rest| rest.trim_start_matches('#'))
            .and_then(|rest| rest.strip_prefix(' '))
        else {
            continue;
        };
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = slug.clone();
        let mut n = 0;
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{slug}-{n}");
        }
    }
    seen
}

/// `a/b/../c` as `a/c`, without asking the file system; `None` when it climbs above `/`.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// What is wrong with one link target written in `file`, if anything.
fn broken(file: &Path, target: &str) -> Option<String> {
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let dest = if path.is_empty() {
        file.to_path_buf()
    } else {
        match normalize(&file.parent().unwrap().join(path)) {
            Some(dest) if dest.starts_with(repo()) => dest,
            _ => return Some("points outside the repository".into()),
        }
    };
    if !dest.exists() {
        return Some(format!("{} does not exist", relative(&dest)));
    }
    let anchor = anchor?;
    if dest.extension().is_none_or(|e| e != "md") {
        return Some(format!(
            "an anchor into {}, which is not Markdown",
            relative(&dest)
        ));
    }
    let text = std::fs::read_to_string(&dest).unwrap();
    (!anchors(&text).contains(anchor)).then(|| {
        format!(
            "{} has no heading whose anchor is `#{anchor}`",
            relative(&dest)
        )
    })
}

/// Every broken relative link in `text`, read as the Markdown file `file`, as `FILE:LINE:
/// [text](target): why`.
fn broken_links(file: &Path, text: &str) -> Vec<String> {
    let link = Regex::new(r"\[([^\]]*)\]\(([^)\s]+)\)").unwrap();
    let prose = prose(text);
    let mut problems = Vec::new();
    for found in link.captures_iter(&prose) {
        let target = &found[2];
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        if let Some(why) = broken(file, target) {
            let line = prose[..found.get(0).unwrap().start()]
                .lines()
                .count()
                .max(1);
            problems.push(format!(
                "{}:{line}: [{}]({target}): {why}",
                relative(file),
                found[1].replace('\n', " ")
            ));
        }
    }
    problems
}

/// The README is the front page: at most 250 lines, and the first thing it shows after saying
/// what ferry is are the two commands that run the demo and the whole test suite.
#[test]
fn readme_is_short_and_starts_with_the_two_commands() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines; keep it to 250 and move the rest into docs/"
    );
    let before_any_section = readme.split("\n## ").next().unwrap();
    let first_block: Vec<&str> = before_any_section
        .split("```")
        .nth(1)
        .expect("README.md shows a code block before its first section")
        .lines()
        .collect();
    assert_eq!(first_block.first(), Some(&"sh"), "{first_block:?}");
    let commands: Vec<&str> = first_block[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        ["scripts/demo", "scripts/test"],
        "README.md's first code block is not the two set-up commands"
    );
}

/// Every `[text](relative/path#anchor)` in the repository's Markdown leads somewhere: the file
/// exists, inside the repository, and the anchor is one of its headings.
#[test]
fn every_relative_link_in_the_documentation_resolves() {
    let mut problems = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        problems.extend(broken_links(&file, &text));
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

/// The README's "where to read on" reaches every page under docs/: none is left for a reader
/// to stumble on.
#[test]
fn the_readme_links_every_page_of_the_docs() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let read_on = readme
        .split("\n## Where to read on\n")
        .nth(1)
        .expect("README.md has a `## Where to read on` section");
    let unlinked: Vec<String> = markdown_files()
        .iter()
        .map(|p| relative(p))
        .filter(|p| p.starts_with("docs/") && !read_on.contains(&format!("]({p})")))
        .collect();
    assert!(
        unlinked.is_empty(),
        "README.md's \"Where to read on\" does not link {unlinked:?}"
    );
}

/// The link check itself: it catches a missing file, a missing heading and a way out of the
/// repository, and passes what exists.
#[test]
fn the_link_check_finds_broken_links() {
    let readme = repo().join("README.md");
    let text = "[a](docs/operations.md#supervision) [b](docs/nowhere.md) \
                [c](docs/operations.md#nowhere) [d](../outside.md) [e](#ferry) \
                [f](https://example.com/x.md)";
    let problems = broken_links(&readme, text);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("docs/nowhere.md does not exist"));
    assert!(problems[1].contains("no heading whose anchor is `#nowhere`"));
    assert!(problems[2].contains("outside the repository"));
    let code = "```sh\n[x](nowhere.md)\n```\n";
    assert!(
        broken_links(&readme, code).is_empty(),
        "a code block is not prose"
    );
    let slugs = anchors("# One-liners: `ferry relay`\n## The MQTT ⇄ NATS codec\n## A\n## A\n");
    for slug in ["one-liners-ferry-relay", "the-mqtt--nats-codec", "a", "a-1"] {
        assert!(slugs.contains(slug), "{slug} not in {slugs:?}");
    }
}

/// Nothing in the repository refers to what it does not hold: no `../` path that climbs out of
/// it, no design file, no issue numbers. The repository is read on its own, by a newcomer or
/// from the package's documentation.
#[test]
fn nothing_points_outside_the_repository() {
    let this_file = repo().join("tests/docs.rs");
    let climb = Regex::new(r"(?:\.\./)+[\w./-]*").unwrap();
    let design = Regex::new(r"(?i)\bdesign\.md\b").unwrap();
    let issue = Regex::new(r"(?i)\b(?:issues?|pull request)\s*#?\s*\d+|(?:^|[\s(])#\d+\b").unwrap();
    let mut problems = Vec::new();
    for file in repository_files() {
        if file == this_file {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue; // not text
        };
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}", relative(&file), n + 1);
            for found in climb.find_iter(line) {
                let dest = normalize(&file.parent().unwrap().join(found.as_str()));
                if !dest.is_some_and(|d| d.starts_with(repo())) {
                    problems.push(format!(
                        "{at}: `{}` leads outside the repository",
                        found.as_str()
                    ));
                }
            }
            if let Some(found) = design.find(line) {
                problems.push(format!(
                    "{at}: `{}`, a file the repository does not hold",
                    found.as_str()
                ));
            }
            if let Some(found) = issue.find(line) {
                problems.push(format!("{at}: `{}` names an issue", found.as_str().trim()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
