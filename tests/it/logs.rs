//! The server's log as tools see it.
use crate::harness::{Options, Server, temp_root};

/// A log in a file or a pipe (`strata serve > server.log 2>&1`) is plain text:
/// colour codes are for terminals only. The harness sends stderr to a file.
#[tokio::test(flavor = "multi_thread")]
async fn log_to_a_file_has_no_colour_codes() {
    let root = temp_root();
    // An empty NO_COLOR does not disable colour (no-color.org), so only the
    // terminal check can keep escapes out here.
    let server = Server::start(root.path(), Options::default().env("NO_COLOR", ""));
    let c = server.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    let log = server.stderr();
    assert_eq!(server.stop(), Some(0));
    assert!(log.contains("database open"), "the log has lines: {log}");
    assert!(!log.contains("\x1b["), "ANSI escapes in a log file: {log:?}");
}
