//! The `ferry` command line: parses arguments, calls into the library, maps errors to exit
//! codes (0 ok, 1 runtime failure, 2 bad configuration or usage).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Relays messages between MQTT, NATS, SSE and HTTP from declarative routes in bridges.yaml",
    after_help = "Examples:
  ferry check                       validate ./bridges.yaml and print every route
  ferry run -c /etc/ferry/bridges.yaml
  RUST_LOG=ferry=debug ferry run    more detail in the log
  ferry map -r temperatures sensors/kitchen/temp '{\"room\": \"kitchen\", \"value\": 21.5}'
                                    what a route makes of one message, connecting to nothing

Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace) [default: info; warn for `ferry relay`];
    /// RUST_LOG, when set, wins.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RelayDelivery {
    AtLeastOnce,
    AtMostOnce,
}

/// `--timeout`: a duration as in bridges.yaml (`500ms`, `30s`, `5m`), up to 10 years.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    ferry::config::check_duration(text).map_err(|problem| {
        format!("`{text}` {problem} (write e.g. 500ms, 30s, 5m; from 0 to 10 years)")
    })
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: relay every route until SIGINT or SIGTERM.
    Run {
        /// Configuration file [default: ./bridges.yaml, then /etc/ferry/bridges.yaml]
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print every route as source → mapping → sinks.
    Check {
        /// Configuration file [default: ./bridges.yaml, then /etc/ferry/bridges.yaml]
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Show what a route makes of one message (subject, headers, payload, which sinks),
    /// without connecting to anything. Exits 1 when the message would fail.
    Map {
        /// Configuration file [default: ./bridges.yaml, then /etc/ferry/bridges.yaml]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The route to run the message through.
        #[arg(short, long)]
        route: String,
        /// The MQTT topic or NATS subject the message arrives on.
        subject: String,
        /// The payload; `-` reads it from standard input. Empty when not given.
        payload: Option<String>,
        /// A header (NATS) or user property (MQTT 5) the message arrives with; repeatable.
        #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// The QoS it arrives with.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        /// It arrives retained.
        #[arg(long)]
        retain: bool,
    },
    /// Relay messages once from one endpoint to another, from the shell: the same engine as
    /// `ferry run`, one route built from two URLs. Ends at the end of the input, after
    /// --count messages, after --timeout, or on SIGINT; prints a one-line summary.
    #[command(after_help = ferry::config::endpoints::accepted_forms())]
    Relay {
        /// Where messages come from: a URL (mqtt://, mqtts://, ws+mqtt://, nats://, tls://,
        /// ws+nats://, sse+https://) or `-` for JSON lines on standard input.
        from: String,
        /// Where they go: a URL (mqtt://, nats://, https:// to POST, ...) or `-` for standard
        /// output.
        to: String,
        /// jq program reshaping each JSON payload (each value it yields is one message).
        #[arg(long, value_name = "JQ")]
        transform: Option<String>,
        /// jq program; a message passes when it yields true.
        #[arg(long, value_name = "JQ")]
        filter: Option<String>,
        /// Template for the subject/topic each message goes to, e.g. `out/{{ topic[1] }}`.
        #[arg(long, value_name = "TEMPLATE")]
        subject: Option<String>,
        /// Stop after relaying N messages (exit 0).
        #[arg(short = 'n', long, value_name = "N")]
        count: Option<u64>,
        /// Stop after this long, e.g. `30s`, `5m` (exit 1 if --count was not reached by then).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
        /// QoS of MQTT subscriptions and publishes, unless a URL says `?qos=`.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: Option<u8>,
        /// `at-least-once`: acknowledge the source only after the sink confirmed (persistent
        /// MQTT session, QoS 1; a NATS source must be JetStream).
        #[arg(long, value_enum)]
        delivery: Option<RelayDelivery>,
        /// Standard input/output as raw lines (the payload) instead of JSON lines.
        #[arg(long)]
        raw: bool,
        /// On standard output, every payload in base64 (else only those that are not UTF-8).
        #[arg(long)]
        base64: bool,
        /// User name for endpoints whose URL names none.
        #[arg(long)]
        user: Option<String>,
        /// File holding the password for endpoints whose URL has none (or FERRY_PASSWORD).
        #[arg(long, value_name = "PATH")]
        password_file: Option<PathBuf>,
        /// No live counter on standard error, no summary.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show a route's messages live, before and after mapping, from the running daemon
    /// (through its admin listener), without disturbing the flow.
    Tap {
        /// The route to watch.
        route: String,
        /// Exit after N events (each `before`, `after`, `filtered` or `failed` line is one).
        #[arg(short = 'n', long, value_name = "N")]
        count: Option<u64>,
        /// Configuration file whose `admin.listen` says where the daemon listens
        /// [default: ./bridges.yaml, then /etc/ferry/bridges.yaml]
        #[arg(short, long, conflicts_with = "admin")]
        config: Option<PathBuf>,
        /// The admin listener's address instead: `http://HOST:PORT`, `HOST:PORT` or a port.
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        /// Print each event as the JSON line the daemon sends.
        #[arg(long)]
        json: bool,
        /// A file holding the admin token (`admin.token`); without it, the token of the
        /// configuration file, if any.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// A PEM file of the CA(s) that signed an HTTPS admin listener's certificate (`admin.tls`),
        /// trusted instead of the system's.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// Print the JSON Schema of bridges.yaml, for editors:
    /// `ferry schema > bridges.schema.json`, then `# yaml-language-server: $schema=bridges.schema.json`
    /// at the top of bridges.yaml.
    Schema,
    /// Print a shell completion script: `ferry completions bash > /etc/bash_completion.d/ferry`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the manual page (roff): `ferry man | man -l -`; `ferry man run` prints ferry-run(1),
    /// `ferry man bridges.yaml` the configuration file's, bridges.yaml(5).
    Man {
        /// A subcommand whose page to print instead of ferry(1), or `bridges.yaml`.
        subcommand: Option<String>,
    },
}

/// The shells `ferry completions` writes scripts for.
#[derive(Clone, Copy, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

fn main() -> ExitCode {
    // A route's jq worker process, started by ferry itself: not a command for users, so not in
    // clap's help, man pages or completions.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(ferry::pipeline::jq_worker::SUBCOMMAND))
    {
        return ferry::pipeline::jq_worker::serve();
    }
    let cli = Cli::parse();
    // A one-shot relay stays quiet but for problems and its summary, like mosquitto_sub.
    let quiet = matches!(cli.command, Command::Relay { .. });
    let level = cli
        .log_level
        .unwrap_or_else(|| if quiet { "warn" } else { "info" }.to_string());
    init_logging(cli.log_format, &level);
    match cli.command {
        Command::Schema => {
            print_generated(|out| out.write_all(ferry::config::schema::json().as_bytes()))
        }
        Command::Completions { shell } => print_generated(|out| {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut Cli::command(), "ferry", out);
            Ok(())
        }),
        // The configuration file's page, from its schema as the reference in docs/ is.
        Command::Man { subcommand } if subcommand.as_deref() == Some("bridges.yaml") => {
            print_generated(|out| out.write_all(ferry::config::reference::man_page().as_bytes()))
        }
        Command::Man { subcommand } => {
            let ferry = Cli::command();
            let page = match subcommand {
                None => ferry,
                // ferry(1) lists each subcommand as ferry-NAME(1), the page made here.
                Some(name) => match ferry.find_subcommand(&name) {
                    // clap names are 'static; leaking one string in a one-shot command is fine.
                    Some(sub) => sub
                        .clone()
                        .name(&*Box::leak(format!("ferry-{name}").into_boxed_str()))
                        .version(env!("CARGO_PKG_VERSION")),
                    None => {
                        eprintln!(
                            "ferry: no subcommand `{name}`; see `ferry --help` \
                             (or `ferry man bridges.yaml` for the configuration file)"
                        );
                        return ExitCode::from(2);
                    }
                },
            };
            print_generated(|out| clap_mangen::Man::new(page).render(out))
        }
        Command::Check { config } => {
            let path = config_path(config);
            match ferry::config::load(&path) {
                Ok(config) => {
                    print!("{}", ferry::explain::explain(&config));
                    println!("{}: OK", path.display());
                    ExitCode::SUCCESS
                }
                Err(errors) => config_failed(&errors),
            }
        }
        Command::Map {
            config,
            route,
            subject,
            payload,
            headers,
            qos,
            retain,
        } => {
            let path = config_path(config);
            let config = match ferry::config::load(&path) {
                Ok(config) => config,
                Err(errors) => return config_failed(&errors),
            };
            let payload = match payload.as_deref() {
                Some("-") => {
                    let mut buf = Vec::new();
                    if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf) {
                        eprintln!("ferry: cannot read the payload from standard input: {e}");
                        return ExitCode::from(1);
                    }
                    buf
                }
                Some(text) => text.as_bytes().to_vec(),
                None => Vec::new(),
            };
            let origin = config
                .routes
                .iter()
                .find(|r| r.name == route)
                .map(|r| r.from.connection.as_str())
                .unwrap_or("?");
            let mut message = ferry::message::Message::new(origin.into(), subject, payload);
            message.qos = qos;
            message.retain = retain;
            for header in headers {
                let Some((name, value)) = header.split_once('=') else {
                    eprintln!("ferry: `--header {header}` is not NAME=VALUE");
                    return ExitCode::from(2);
                };
                message.headers.push((name.to_string(), value.to_string()));
            }
            match ferry::explain::map(&config, &route, &message) {
                Ok((text, ok)) => {
                    print!("{text}");
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("ferry: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Relay {
            from,
            to,
            transform,
            filter,
            subject,
            count,
            timeout,
            qos,
            delivery,
            raw,
            base64,
            user,
            password_file,
            quiet,
        } => {
            let password = match password_file {
                Some(path) => match std::fs::read_to_string(&path) {
                    Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_string()),
                    Err(e) => {
                        eprintln!("ferry: cannot read --password-file {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                },
                None => std::env::var("FERRY_PASSWORD").ok(),
            };
            let args = ferry::config::endpoints::RelayArgs {
                from,
                to,
                transform,
                filter,
                subject,
                count,
                qos,
                at_least_once: delivery == Some(RelayDelivery::AtLeastOnce),
                raw,
                base64,
                user,
                password,
            };
            let config = match ferry::config::endpoints::relay_config(&args) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("ferry relay: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(config.threads);
            let runtime = match runtime(builder) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            use std::io::IsTerminal;
            let limits = ferry::relay::Limits {
                count,
                timeout,
                progress: !quiet && std::io::stderr().is_terminal(),
            };
            match runtime.block_on(ferry::relay::run(&config, &limits)) {
                Ok(outcome) => {
                    if !quiet {
                        eprintln!("{outcome}");
                    }
                    if outcome.succeeded() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("ferry relay: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Tap {
            route,
            count,
            config,
            admin,
            json,
            token_file,
            ca,
        } => {
            let admin = match admin {
                Some(url) => ferry::admin::AdminAddress::Url(url),
                None => ferry::admin::AdminAddress::Config(config_path(config)),
            };
            let options = ferry::admin::TapOptions {
                route,
                count,
                admin,
                json,
                token_file,
                ca,
            };
            let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match runtime.block_on(ferry::admin::tap(&options, &mut std::io::stdout())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(ferry::admin::TapError::Config(errors)) => config_failed(&errors),
                Err(e) => {
                    eprintln!("ferry: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Run { config } => {
            let path = config_path(config);
            let config = match ferry::config::load(&path) {
                Ok(config) => config,
                Err(errors) => return config_failed(&errors),
            };
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(config.threads);
            let runtime = match runtime(builder) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            runtime.block_on(async {
                match ferry::daemon::run(&path, config).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e:#}");
                        ExitCode::from(1)
                    }
                }
            })
        }
    }
}

/// Writes what a generator produced to stdout; a closed pipe (`ferry man | head`) is not an
/// error worth a panic.
fn print_generated(write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match write(&mut out).and_then(|()| std::io::Write::flush(&mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: cannot write to standard output: {e}");
            ExitCode::from(1)
        }
    }
}

/// Builds the tokio runtime `builder` describes, or says why not (exit 1).
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("ferry: cannot start the runtime: {e}");
        ExitCode::from(1)
    })
}

fn config_failed(errors: &ferry::config::ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    let n = errors.errors.len();
    eprintln!(
        "ferry: {n} error{} in {}; nothing was started",
        if n == 1 { "" } else { "s" },
        errors.file
    );
    ExitCode::from(2)
}

/// `-c FILE`, else ./bridges.yaml if it exists, else /etc/ferry/bridges.yaml.
fn config_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let local = PathBuf::from("bridges.yaml");
        if local.exists() {
            local
        } else {
            PathBuf::from("/etc/ferry/bridges.yaml")
        }
    })
}

fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,ferry={level}")));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Under systemd, stderr is a journal stream: the journal stamps each line itself and keeps
    // its level from a `<N>` prefix, and colours would be stored as escape codes.
    if ferry::systemd::stderr_is_journal() {
        let builder = builder.with_ansi(false);
        match format {
            LogFormat::Text => builder
                .event_format(ferry::systemd::JournalPrefix(
                    tracing_subscriber::fmt::format().without_time(),
                ))
                .init(),
            LogFormat::Json => builder
                .json()
                .event_format(ferry::systemd::JournalPrefix(
                    tracing_subscriber::fmt::format().json(),
                ))
                .init(),
        }
        return;
    }
    let builder = builder.with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `ferry --help` gives every subcommand its own line of what it does (a misplaced doc
    /// comment once gave `relay` the tap's and `tap` none).
    #[test]
    fn every_subcommand_says_what_it_does() {
        let cli = Cli::command();
        let about = |name: &str| {
            cli.find_subcommand(name)
                .and_then(|c| c.get_about())
                .map(|a| a.to_string())
                .unwrap_or_default()
        };
        assert!(
            about("relay").starts_with("Relay messages once"),
            "{}",
            about("relay")
        );
        assert!(
            about("tap").starts_with("Show a route's messages live"),
            "{}",
            about("tap")
        );
        for sub in cli.get_subcommands() {
            assert!(
                sub.get_about().is_some(),
                "`ferry {}` has no description",
                sub.get_name()
            );
        }
    }
}
