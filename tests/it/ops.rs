//! Operating the server: `/status` and `/metrics` over HTTP, scraped with curl
//! (a real HTTP client) and checked with `promtool check metrics`.
use std::process::Command;

use crate::backup::store_opts;
use crate::harness::{Options, Server, have_program, missing_tool, temp_root};

/// `GET path` with curl: (status code, body).
pub(crate) fn get(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("curl prints the status code last");
    (code.trim().parse().expect("a status code"), body.to_string())
}

/// The value of the sample `name` (with its labels, if any) in a scrape.
pub(crate) fn sample(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_string))
}

/// `promtool check metrics` accepts the scrape (Debian's prometheus package).
pub(crate) fn promtool_accepts(text: &str) {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        return missing_tool("promtool (Debian package prometheus)");
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metrics_opts(store: &std::path::Path) -> Options {
    store_opts(store)
        .conf("metrics.enabled", "true")
        .conf("http.min.net.bind.to", "127.0.0.1:0")
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_metrics_over_http_and_last_success_survives_a_restart() {
    if !have_program("curl") {
        return;
    }
    let (root, store) = (temp_root(), temp_root());
    let server = Server::start(root.path(), metrics_opts(store.path()));
    let port = server.http_port.expect("the server prints its HTTP address");
    let (code, body) = get(port, "/status");
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["status"], "ok", "{body}");

    let (code, before) = get(port, "/metrics");
    assert_eq!(code, 200, "{before}");
    assert_eq!(sample(&before, "strata_backup_running").as_deref(), Some("0"));
    assert_eq!(sample(&before, "strata_backup_failures_total").as_deref(), Some("0"));
    assert_eq!(
        sample(&before, "strata_backup_last_success_timestamp_seconds"),
        None,
        "no backup yet"
    );
    promtool_accepts(&before);

    let c = server.connect().await;
    crate::backup::two_day_table(&c).await;
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    c.batch_execute("CHECKPOINT CREATE").await.unwrap();
    let (_, after) = get(port, "/metrics");
    promtool_accepts(&after);
    let last: f64 = sample(&after, "strata_backup_last_success_timestamp_seconds")
        .expect("a last success after a backup")
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last).abs() < 300.0, "last success {last}, now {now}");
    let age: f64 = sample(&after, "strata_backup_last_success_age_seconds")
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..300.0).contains(&age), "{age}");
    let uploaded: f64 = sample(&after, "strata_backup_last_bytes_uploaded")
        .unwrap()
        .parse()
        .unwrap();
    assert!(uploaded > 0.0, "{after}");
    assert_eq!(sample(&after, "strata_checkpoint_open").as_deref(), Some("1"));
    let puts: u64 = sample(&after, "strata_store_operations_total{kind=\"put\"}")
        .unwrap()
        .parse()
        .unwrap();
    assert!(puts >= 3, "data files, manifest, history: {after}");
    c.batch_execute("CHECKPOINT RELEASE").await.unwrap();
    drop(c);
    server.stop();

    // After a restart the figures come from the store's history, not from zero.
    let server = Server::start(root.path(), metrics_opts(store.path()));
    let (_, restarted) = get(server.http_port.unwrap(), "/metrics");
    let again: f64 = sample(&restarted, "strata_backup_last_success_timestamp_seconds")
        .expect("last success survives a restart")
        .parse()
        .unwrap();
    assert_eq!(again, last);
    assert_eq!(sample(&restarted, "strata_checkpoint_open").as_deref(), Some("0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_alone_without_metrics_and_no_http_server_by_default() {
    if !have_program("curl") {
        return;
    }
    let root = temp_root();
    let server = Server::start(
        root.path(),
        Options::default()
            .conf("http.min.enabled", "true")
            .conf("http.min.net.bind.to", "127.0.0.1:0"),
    );
    let port = server.http_port.expect("http.min.enabled starts the HTTP server");
    assert_eq!(get(port, "/status").0, 200);
    let (code, body) = get(port, "/metrics");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("metrics.enabled"), "{body}");
    drop(server);
    let plain_root = temp_root();
    let plain = Server::start(plain_root.path(), Options::default());
    assert_eq!(plain.http_port, None, "no second port unless asked for");
}

/// Polls `backups()` until the newest backup's `verify_status` is `want`;
/// returns its `last_verified_ts`.
async fn verified(c: &tokio_postgres::Client, want: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let rows = crate::backup::backups(c).await;
        if crate::backup::field(&rows[0], "verify_status") == want {
            return crate::backup::field(&rows[0], "last_verified_ts");
        }
        assert!(std::time::Instant::now() < deadline, "never verified {want}: {rows:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The verification records in the store, parsed, by file name.
fn verification_records(store: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let dir = crate::backup::instance_dir(store).join("verifications");
    let mut out: Vec<_> = crate::backup::files_in(&dir)
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_verification_records_ok_then_a_flipped_byte_and_the_records_outlive_a_restart() {
    if !have_program("curl") {
        return;
    }
    let (root, store) = (temp_root(), temp_root());
    let every_second = metrics_opts(store.path()).conf("backup.verify.schedule.cron", "* * * * * *");
    let server = Server::start(root.path(), every_second);
    let port = server.http_port.unwrap();
    let c = server.connect().await;
    crate::backup::two_day_table(&c).await;
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let backup_micros = crate::backup::manifests(store.path())[0]["backup_micros"]
        .as_i64()
        .unwrap();

    let first = verified(&c, "ok").await;
    assert!(!first.is_empty());
    let (_, m) = get(port, "/metrics");
    promtool_accepts(&m);
    let sound: f64 = sample(&m, "strata_backup_verify_last_success_timestamp_seconds")
        .expect("a sound verification")
        .parse()
        .unwrap();
    assert_eq!(sample(&m, "strata_backup_verify_corrupt_total").as_deref(), Some("0"));
    let records = verification_records(store.path());
    let (name, ok) = records.last().expect("a record in the store");
    assert!(
        name.starts_with(&format!("{backup_micros}-")) && name.ends_with("-ok.json"),
        "{name}"
    );
    assert_eq!(ok["status"], "ok");
    assert!(
        ok["files"].as_u64().unwrap() >= 2 && ok["problems"].as_array().unwrap().is_empty(),
        "{ok}"
    );

    // Flip one byte of one stored object: the next scheduled run finds it.
    let mut objects = crate::backup::files_in(&crate::backup::instance_dir(store.path()).join("files"));
    objects.sort();
    let victim = objects[0].clone();
    let victim_name = victim.file_name().unwrap().to_string_lossy().to_string();
    let original = std::fs::read(&victim).unwrap();
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x40;
    std::fs::write(&victim, &flipped).unwrap();
    verified(&c, "corrupt").await;
    let log = server.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("is corrupt") && l.contains(&victim_name)),
        "an error naming the file: {log}"
    );
    let (_, m) = get(port, "/metrics");
    promtool_accepts(&m);
    let corrupt: u64 = sample(&m, "strata_backup_verify_corrupt_total")
        .unwrap()
        .parse()
        .unwrap();
    assert!(corrupt >= 1, "{m}");
    let (name, bad) = verification_records(store.path())
        .into_iter()
        .find(|(n, _)| n.ends_with("-corrupt.json"))
        .expect("a corrupt record");
    assert!(name.starts_with(&format!("{backup_micros}-")), "{name}");
    assert!(
        bad["problems"][0]["object"].as_str().unwrap().contains(&victim_name),
        "{bad}"
    );
    drop(c);
    server.stop();

    // After a restart (no schedule now) backups() and the metrics still know.
    let server = Server::start(root.path(), metrics_opts(store.path()));
    let c = server.connect().await;
    verified(&c, "corrupt").await;
    let (_, m) = get(server.http_port.unwrap(), "/metrics");
    let again: f64 = sample(&m, "strata_backup_verify_last_success_timestamp_seconds")
        .expect("the last sound verification survives a restart")
        .parse()
        .unwrap();
    assert!(again >= sound, "{again} < {sound}");

    // A dropped backup takes its verification records with it.
    std::fs::write(&victim, &original).unwrap();
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let first_ts = crate::backup::field(&crate::backup::backups(&c).await[1], "backup_timestamp");
    c.simple_query(&format!("DROP BACKUP '{first_ts}'")).await.unwrap();
    let left = verification_records(store.path());
    assert!(
        left.iter().all(|(n, _)| !n.starts_with(&format!("{backup_micros}-"))),
        "{left:?}"
    );
}
