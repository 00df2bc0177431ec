//! Damaged and hostile files, and numbers and names that could escape their bounds, from the
//! outside: the real ferry binary, real brokers (mosquitto and nats-server, whose JetStream
//! stream records everything ferry publishes, so every message is counted whenever it
//! arrived), and damage done to ferry's files between two runs.
//!
//! Every ferry in this file runs under umask 000 (the whole test process sets it, since the
//! child inherits it): the state files must be private anyway.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// Sets the test process's umask to 000 (once), so every ferry started here inherits the
/// most permissive one. The standard library has no umask; the C library's is linked anyway.
fn permissive_umask() {
    unsafe extern "C" {
        fn umask(mask: u32) -> u32;
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: umask only swaps the process's file mode creation mask; it cannot fail.
    ONCE.call_once(|| unsafe {
        umask(0);
    });
}

/// The sequence numbers the capture stream holds, in stream order, once it holds `n`.
async fn captured(outage: &NatsOutage, n: u64) -> Vec<usize> {
    outage.wait_captured(n, secs(60)).await;
    let stored = outage.captured().await;
    stored
        .iter()
        .map(|p| parse_seq(p).expect("a sequence payload").1)
        .collect()
}

/// [`spooled_route`] between `outage`'s brokers, spooled in `spool_dir` (at most 1 MiB).
fn spooled(outage: &NatsOutage, spool_dir: &Path) -> String {
    outage.route(spool_dir, "ferry-hostile-files", ", max_bytes: 1MiB")
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_spool_segment_costs_one_message_and_is_kept_aside() {
    permissive_umask();
    tokio::time::timeout(secs(180), async {
        const SENT: usize = 100;
        let mut outage = NatsOutage::start().await;
        let state = tempfile::tempdir().unwrap();
        let spool = state.path().join("state").join("spool");
        let yaml = spooled(&outage, &spool);
        outage.spool_while_nats_is_down(&yaml, 0, SENT, 0).await;

        // One flipped byte in the middle of the segment (the last one, as the open checks).
        let segments = files_ending(&spool, ".seg");
        assert_eq!(segments.len(), 1, "{segments:?}");
        let mut bytes = std::fs::read(&segments[0]).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x20;
        std::fs::write(&segments[0], &bytes).unwrap();

        let mut ferry = Ferry::start(&yaml);
        ferry
            .wait_for_line("before this start; forwarding them first", secs(30))
            .await;
        outage.nats.restart();
        let skipped = ferry
            .wait_for_line("damaged byte(s) skipped", secs(60))
            .await;
        let seqs = captured(&outage, SENT as u64 - 1).await;
        assert!(ferry.terminate().await.success());
        let stopped = ferry.wait_for_line("route stopped", secs(5)).await;
        assert!(
            stopped.contains("1 damaged record(s) set aside"),
            "{stopped}"
        );

        // Exactly one message is lost: the one the damaged byte is in; everything after it
        // arrives, once and in order.
        let tally = Tally::of(SENT, seqs.iter().copied());
        tally.report("flipped byte");
        assert_eq!(seqs.len(), SENT - 1, "{seqs:?}");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(seqs.last(), Some(&(SENT - 1)));
        let lost = (0..SENT).find(|n| !seqs.contains(n)).unwrap();
        assert!(
            (SENT / 4..SENT * 3 / 4).contains(&lost),
            "the message lost is the one in the middle, not {lost}"
        );

        // Its bytes are kept aside, named in the warning.
        let aside = files_ending(&spool, ".damaged");
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(
            skipped.contains(&aside[0].display().to_string()),
            "{skipped}"
        );
        let kept = std::fs::metadata(&aside[0]).unwrap().len();
        let segment = bytes.len() as u64;
        assert!(
            kept > 12 && kept < segment / 10,
            "the .damaged file holds one record ({kept} of the segment's {segment} bytes)"
        );

        // Every state file 0600 and directory 0700, under umask 000.
        for dir in [state.path().join("state"), spool.clone()] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        let sink_dir = aside[0].parent().unwrap();
        assert_eq!(mode(sink_dir), 0o700, "{}", sink_dir.display());
        for file in std::fs::read_dir(sink_dir).unwrap() {
            let file = file.unwrap().path();
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    })
    .await
    .expect("the test did not finish within 180s");
}

/// A small tmpfs, unmounted when dropped (ferry is stopped by then).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) on a fresh directory. Needs
    /// root, as the test suite runs; a failure says so.
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs on {} (the full-disk test needs root): {status}",
            dir.path().display()
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the file system refuses with ENOSPC; returns its size.
    fn fill_up(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join(name))
            .unwrap();
        let mut written = 0;
        for chunk in [64 * 1024, 4096, 1] {
            let block = vec![0u8; chunk];
            loop {
                match file.write(&block) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => panic!("filling the tmpfs: {e}"),
                }
            }
        }
        written
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_neither_keeps_forwarded_segments_nor_stops_the_next_start() {
    permissive_umask();
    tokio::time::timeout(secs(240), async {
        // 600 messages of 1000 bytes: three segments of at most 256 KiB (max_bytes / 4).
        const SPOOLED: usize = 600;
        const LIVE: usize = 20;
        let mut outage = NatsOutage::start().await;
        let disk = SmallDisk::mount("4m");
        let spool = disk.path().join("spool");
        let yaml = spooled(&outage, &spool);
        outage
            .spool_while_nats_is_down(&yaml, 0, SPOOLED, 1000)
            .await;
        assert!(files_ending(&spool, ".seg").len() >= 3);

        // The disk fills up while ferry is down: the cursor cannot be written any more.
        let filler = disk.fill_up("filler");
        eprintln!("[full disk] {filler} bytes of filler");
        let mut ferry = outage
            .ferry_forwarding_the_spool(&yaml, SPOOLED, secs(90))
            .await;
        let seqs = captured(&outage, SPOOLED as u64).await;
        assert_eq!(
            files_ending(&spool, ".seg"),
            Vec::<PathBuf>::new(),
            "forwarded segments are deleted on a full disk"
        );
        assert!(ferry.terminate().await.success());
        Tally::of(SPOOLED, seqs.iter().copied()).report("full disk, spooled");
        assert_in_order("seq", &seqs, SPOOLED);

        // Full again (the deleted segments made room): the next start still runs the route,
        // and forwards nothing twice.
        disk.fill_up("filler-2");
        let mut ferry = Ferry::start(&yaml);
        ferry.wait_ready().await;
        outage.publish(SPOOLED, SPOOLED + LIVE, 0).await;
        let seqs = captured(&outage, (SPOOLED + LIVE) as u64).await;
        assert!(ferry.terminate().await.success());
        Tally::of(SPOOLED + LIVE, seqs.iter().copied()).report("full disk, after restart");
        assert_in_order("seq", &seqs, SPOOLED + LIVE);
        drop(disk);
    })
    .await
    .expect("the test did not finish within 240s");
}

/// The `bridges.yaml:LINE:COL: error: ...` line holding `needle`, with its line and column.
fn error_at(output: &str, needle: &str) -> (String, usize, usize) {
    let line = output
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line holds {needle:?}:\n{output}"));
    let rest = line
        .strip_prefix("bridges.yaml:")
        .unwrap_or_else(|| panic!("not a `bridges.yaml:LINE:COL:` line: {line}"));
    let mut parts = rest.splitn(3, ':');
    let l = parts.next().unwrap().parse().unwrap();
    let c = parts.next().unwrap().parse().unwrap();
    (line.to_string(), l, c)
}

/// `ferry check` and `ferry run` both refuse `yaml` with exit 2, at `line` of the file, with
/// `needle` in the message (and `hint` somewhere in the output).
fn refused_at(yaml: &str, needle: &str, line: usize, hint: &str) {
    for out in [ferry_check(yaml), ferry_run_until_exit(yaml, secs(20))] {
        assert_eq!(out.code, Some(2), "{}", out.all());
        let (text, l, c) = error_at(&out.all(), needle);
        assert_eq!(l, line, "{text}");
        assert!(c > 1, "{text}");
        assert!(out.all().contains(hint), "no hint {hint:?}:\n{}", out.all());
    }
}

#[test]
fn route_names_that_would_leave_the_state_directory_are_refused() {
    permissive_umask();
    let state = tempfile::tempdir().unwrap();
    for (name, needle) in [
        ("\"../escaped\"", "must not contain `/`"),
        ("\"a/b\"", "must not contain `/`"),
        ("\"..\"", "must not be `.` or `..`"),
        ("\"nul\\0byte\"", "control characters"),
        ("\"back\\\\slash\"", "must not contain `/` or `\\`"),
    ] {
        let yaml = format!(
            "state_dir: {}
connections:
  mq:
    mqtt: {{ url: \"mqtt://127.0.0.1:9\", client_id: x }}
  nc:
    nats: {{ url: \"nats://127.0.0.1:9\" }}
routes:
  - name: {name}
    from: {{ connection: mq, topic: \"a/#\", qos: 1 }}
    to: {{ connection: nc, subject: \"a\" }}
    spool: {{}}
",
            state.path().display()
        );
        refused_at(&yaml, needle, 8, "spool's directory");
    }
    // Nothing was created outside (or inside) the state directory.
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
}

#[test]
fn numbers_beyond_their_range_are_refused_with_exit_2_not_a_panic() {
    permissive_umask();
    let config = |line: &str| {
        format!(
            "{line}
connections:
  nc:
    nats: {{ url: \"nats://127.0.0.1:9\" }}
routes:
  - name: r
    from: {{ connection: nc, subject: a }}
    to: {{ connection: nc, subject: b }}
"
        )
    };
    for (line, needle) in [
        (
            "shutdown_timeout: 1e30",
            "`shutdown_timeout` is longer than 10 years",
        ),
        (
            "shutdown_timeout: 99999999999999999999s",
            "`shutdown_timeout` is longer than 10 years",
        ),
        (
            "startup_timeout: -5",
            "`startup_timeout` must not be negative",
        ),
        (
            "startup_timeout: \"NaN\"",
            "`startup_timeout` is not a duration",
        ),
        (
            "startup_timeout: 3651d",
            "`startup_timeout` is longer than 10 years",
        ),
    ] {
        refused_at(&config(line), needle, 1, "from 0 to 10 years");
    }
    let out = ferry_command(
        &[
            "relay",
            "nats://127.0.0.1:9/a",
            "-",
            "--timeout",
            "99999999999999999999s",
        ],
        "",
        secs(20),
    );
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.stderr
            .contains("`99999999999999999999s` is longer than 10 years"),
        "{}",
        out.stderr
    );
    assert!(!out.all().contains("panicked"), "{}", out.all());
    let out = ferry_command(
        &[
            "relay",
            "nats://127.0.0.1:9/a",
            "-",
            "--count",
            "99999999999999999999",
        ],
        "",
        secs(20),
    );
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(!out.all().contains("panicked"), "{}", out.all());
}
