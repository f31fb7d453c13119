//! One rule for a test that cannot run here (no root, a tool missing): under CI it fails; elsewhere it
//! passes after saying SKIPPED where a person sees it. libtest captures `println!`/`eprintln!` of passing
//! tests, so the line goes straight to the stderr handle and, when stderr is not a terminal, also to
//! the controlling terminal. With `KUBELINK_SKIPPED_LOG` set (scripts/test sets it), the line is also
//! appended to that file, which scripts/test prints after the run.

use std::io::{IsTerminal, Write};

/// Whether this run must not skip anything: `CI` is `true` or `1` (`.ci/run` exports `CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Fails `test` under CI with `reason`; elsewhere reports it skipped. Returns false, for
/// `if !ready { return skip(..) }`-style callers.
pub fn skip(test: &str, reason: &str) -> bool {
    let line = format!("SKIPPED {test}: {reason}");
    assert!(!in_ci(), "{test} cannot run under CI: {reason}");
    let banner = format!("\n!!!!!!!! {line} !!!!!!!!\n");
    let _ = std::io::stderr().write_all(banner.as_bytes());
    if !std::io::stderr().is_terminal()
        && let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty")
    {
        let _ = tty.write_all(banner.as_bytes());
    }
    record(&line);
    false
}

fn record(line: &str) {
    let Some(path) = std::env::var_os("KUBELINK_SKIPPED_LOG") else { return };
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}
