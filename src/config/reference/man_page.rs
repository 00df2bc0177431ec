//! bridges.yaml(5), the manual page of the configuration file (`ferry man bridges.yaml`): what
//! the file is, then every part of it with its keys, from the same walk of the schema as the
//! key tables in docs/, so `man bridges.yaml` says what `ferry check` reads.
//!
//! The roff is written by hand: every piece of text from the schema goes through `escape`,
//! which leaves roff nothing to interpret.

use super::{Body, Part, Word, part, reading_order};

/// The page, in roff.
pub fn man_page() -> String {
    let schema = super::super::schema::schema().to_value();
    let mut page = format!(
        ".TH bridges.yaml 5 \"\" \"ferry {}\"\n",
        escape(env!("CARGO_PKG_VERSION"))
    );
    page.push_str(ABOUT);
    for name in reading_order(&schema) {
        section(&mut page, &name, &part(&schema, &name));
    }
    page.push_str(EXAMPLE_INTRO);
    page.push_str(".PP\n.EX\n");
    for line in EXAMPLE.lines() {
        text_line(&mut page, &escape(line));
    }
    page.push_str(".EE\n");
    page.push_str(FILES_AND_SEE_ALSO);
    page
}

/// One part of the file under its own heading: what it is, then its keys, its values or
/// what it takes.
fn section(page: &mut String, name: &str, part: &Part) {
    let title = if name.is_empty() { "The file" } else { name };
    page.push_str(&format!(".SS \"{}\"\n", escape(title)));
    if !part.description.is_empty() {
        text_line(page, &prose(&part.description));
    }
    match &part.body {
        Body::Keys(keys) => {
            for key in keys {
                let mut takes = words(&key.takes);
                if key.required {
                    takes.push_str("; required");
                }
                if let Some(default) = &key.default {
                    takes.push_str(&format!("; default {}", bold(default)));
                }
                page.push_str(".TP\n");
                text_line(page, &format!("{} ({takes})", bold(&key.name)));
                if !key.description.is_empty() {
                    text_line(page, &prose(&key.description));
                }
            }
        }
        Body::Values(values) => {
            for (value, meaning) in values {
                page.push_str(".TP\n");
                text_line(page, &bold(value));
                if !meaning.is_empty() {
                    text_line(page, &prose(meaning));
                }
            }
        }
        Body::Takes(takes) => text_line(page, &format!("Takes {}.", words(takes))),
    }
}

/// What a value takes: values as written in the file in bold, other parts (each the title of
/// a section) in italics.
fn words(words: &[Word]) -> String {
    words
        .iter()
        .map(|word| match word {
            Word::Plain(words) => escape(words),
            Word::Value(value) => bold(value),
            Word::Part(name) => italic(name),
        })
        .collect()
}

/// A description from the schema: its `code` in bold.
fn prose(description: &str) -> String {
    description
        .split('`')
        .enumerate()
        .map(|(i, piece)| {
            if i % 2 == 1 {
                bold(piece)
            } else {
                escape(piece)
            }
        })
        .collect()
}

/// A value, key or part name: in bold, and never hyphenated (`\%`), so that it reads as
/// the file has it.
fn bold(text: &str) -> String {
    format!(r"\fB\%{}\fR", escape(text))
}

fn italic(text: &str) -> String {
    format!(r"\fI\%{}\fR", escape(text))
}

/// `text` as roff prints it, character for character: a backslash is roff's escape, `-` a
/// hyphen it may turn into a dash, quotes and `^` `~` glyphs it would typeset (so that what
/// the reader copies from the page is what the file takes), and anything beyond ASCII is
/// named by its code point, since groff reads its input as Latin-1.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str(r"\e"),
            '-' => out.push_str(r"\-"),
            '\'' => out.push_str(r"\(aq"),
            '`' => out.push_str(r"\(ga"),
            '^' => out.push_str(r"\(ha"),
            '~' => out.push_str(r"\(ti"),
            ' '..='~' => out.push(c),
            c => out.push_str(&format!(r"\[u{:04X}]", u32::from(c))),
        }
    }
    out
}

/// Appends a line of text, which roff must not read as a request when it starts with a dot.
fn text_line(page: &mut String, line: &str) {
    if line.starts_with(['.', '\'']) {
        page.push_str(r"\&");
    }
    page.push_str(line);
    page.push('\n');
}

/// NAME, SYNOPSIS, DESCRIPTION, and the start of the keys: written for the page, in roff.
const ABOUT: &str = r#".SH NAME
bridges.yaml \- ferry\(aqs configuration: connections, and routes that relay messages between them
.SH SYNOPSIS
.B /etc/ferry/bridges.yaml
.br
.BI /etc/ferry/ NAME .yaml
.SH DESCRIPTION
.B ferry
relays messages between MQTT brokers, NATS servers (JetStream too), server\-sent\-event
streams, HTTP endpoints and MigratoryData, along the routes this YAML file declares.
\fBferry.service\fR runs \fB/etc/ferry/bridges.yaml\fR, and each
\fBferry@\fINAME\fB.service\fR runs \fB/etc/ferry/\fINAME\fB.yaml\fR, so that one machine may
run several.
\fBferry run\fR and \fBferry check\fR read the file given with \fB\-c\fR, else
\fB./bridges.yaml\fR if there is one, else \fB/etc/ferry/bridges.yaml\fR.
.PP
The file has two parts.
\fBconnections\fR names each endpoint once (an MQTT broker, NATS servers, an SSE stream, an
HTTP endpoint...) for any number of routes to share.
\fBroutes\fR lists the routes: each reads one source on a connection, maps every message (a jq
filter and transform, templates for the subject and the headers) and publishes what comes out
to one or more sinks.
.PP
Any value may be written as \fB${ENV}\fR, \fB${ENV:\-default}\fR or \fB${file:/path}\fR (the
file\(aqs content, its trailing newline removed), so that secrets stay out of the file; a
missing variable without a default is an error.
Durations are written \fB250ms\fR, \fB30s\fR, \fB5m\fR, \fB1h\fR, or as a bare number of
seconds; sizes as a number of bytes, or \fB512KiB\fR, \fB16MiB\fR, \fB1GiB\fR (also \fBKB\fR,
\fBMB\fR, \fBGB\fR).
YAML anchors and merge keys work; top\-level keys starting with \fBx\-\fR are ignored, so that
they can hold anchors.
.PP
\fBferry check\fR validates the file and prints every route; it reports every mistake at once,
each with its line, its column and a hint.
\fBferry schema\fR prints the JSON Schema this page is made from, for editors.
.SH KEYS
Each part of the file, with its keys: what each takes, its default, and what it is.
A name in italics is another part, under its own heading below.
"#;

const EXAMPLE_INTRO: &str = r#".SH EXAMPLES
A route that relays every room\(aqs temperature from an MQTT broker to NATS, reshaped by jq on
the way: a reading published on \fB\%sensors/kitchen/temp\fR as
\fB\%{"room":"kitchen","value":21.5}\fR goes to \fB\%iot.kitchen.temperature\fR as
\fB\%{"room":"kitchen","celsius":21.5}\fR.
"#;

/// The example route, as a file would hold it (a test checks it passes `ferry check`).
const EXAMPLE: &str = r#"connections:
  plant:
    mqtt: { url: "mqtt://127.0.0.1:1883" }
  core:
    nats: { url: "${NATS_URL:-nats://127.0.0.1:4222}" }
routes:
  - name: temperatures
    from: { connection: plant, topic: "sensors/+/temp", qos: 1 }
    transform: '{room: .room, celsius: .value}'
    to: { connection: core, subject: "iot.{{ topic[1] }}.temperature" }"#;

const FILES_AND_SEE_ALSO: &str = r#".SH FILES
.TP
.B /etc/ferry/bridges.yaml
The configuration of \fBferry.service\fR.
.TP
.BI /etc/ferry/ NAME .yaml
The configuration of \fBferry@\fINAME\fB.service\fR.
.TP
.B /var/lib/ferry
Where ferry keeps SSE cursors, MQTT session state and spools, unless \fBstate_dir\fR says
otherwise; \fBferry@\fINAME\fR keeps its own in \fB/var/lib/ferry/\fINAME\fR.
.TP
.B /usr/share/doc/ferry/docs/configuration.md
The same reference with examples; each protocol\(aqs page is in \fBdocs/connectors/\fR.
.SH "SEE ALSO"
.BR ferry (1),
.BR ferry\-check (1),
.BR ferry\-schema (1),
.BR mosquitto.conf (5)
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Lookup, parse};

    /// As a reader would try it: no variable set, so `${NATS_URL:-...}` takes its default.
    #[test]
    fn the_example_passes_ferry_check() {
        let lookup = Lookup {
            var: &|_| None,
            file: &|path| Err(std::io::Error::other(format!("no {path} here"))),
        };
        if let Err(errors) = parse(EXAMPLE, "bridges.yaml(5)", &lookup) {
            panic!("{errors}");
        }
    }

    /// Text from the schema reaches the reader as written: nothing in it is a roff escape, a
    /// request, a dash or a typographic quote, and nothing is left for groff to misread.
    #[test]
    fn text_is_escaped_for_roff() {
        assert_eq!(
            escape(r"a-b \n 'q' `g` ^~ é →"),
            r"a\-b \en \(aqq\(aq \(gag\(ga \(ha\(ti \[u00E9] \[u2192]"
        );
        assert_eq!(
            prose("`x-y` is a \\fB`.`"),
            r"\fB\%x\-y\fR is a \efB\fB\%.\fR"
        );
        let mut page = String::new();
        text_line(&mut page, &prose(".hidden, then `.` and 'quoted'"));
        assert_eq!(page, "\\&.hidden, then \\fB\\%.\\fR and \\(aqquoted\\(aq\n");
        let mut page = String::new();
        section(
            &mut page,
            "Queue",
            &Part {
                description: ".starts with a dot".into(),
                body: Body::Values(vec![("drop_oldest".into(), "'quoted".into())]),
            },
        );
        assert_eq!(
            page,
            ".SS \"Queue\"\n\\&.starts with a dot\n.TP\n\\fB\\%drop_oldest\\fR\n\\(aqquoted\n"
        );
    }
}
