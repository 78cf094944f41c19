//! Encrypted backups: the store holds no plaintext, restore and verify need the
//! key, a wrong key or an altered object is refused, and the key never leaks.
use std::path::Path;
use std::process::Command;

use crate::backup::{files_in, instance_dir, store_opts};
use crate::harness::{Options, Server, Started, binary, table_digest, temp_root};

/// A column name that lands verbatim in every Parquet footer and manifest.
const CANARY: &str = "canary_column_q7x";
const KEY: &str = "q2NzZ2hXbGZhc2RmYXNkZmFzZGZhc2RmYXNkZmFzZGY=";
const OTHER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

async fn load_and_back_up(server: &Server) -> (i64, String) {
    let c = server.connect().await;
    c.batch_execute(&format!(
        "CREATE TABLE t (ts TIMESTAMP, {CANARY} VARCHAR, v DOUBLE) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO t SELECT to_timestamp_micros(1704067200000000 + value * 60000000), 'row', value
             FROM generate_series(0, 4999);"
    ))
    .await
    .unwrap();
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    table_digest(&c, "t").await
}

fn store_contains(store: &Path, needle: &str) -> bool {
    files_in(store).iter().any(|f| {
        std::fs::read(f)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    })
}

fn restore_with(store: &Path, key_env: Option<&str>) -> (tempfile::TempDir, Started) {
    let target = temp_root();
    std::fs::write(
        target.path().join("_backup_restore"),
        format!("backup.object.store=fs::root={};\n", store.display()),
    )
    .unwrap();
    let mut opts = Options::default();
    if let Some(k) = key_env {
        opts = opts.env("STRATA_BACKUP_ENCRYPTION_KEY", k);
    }
    let started = Server::try_start(target.path(), opts);
    (target, started)
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_backups_hold_no_plaintext_and_need_the_right_key() {
    // Control: without a key the canary is visible in the store, so the search works.
    let (plain_root, plain_store) = (temp_root(), temp_root());
    let server = Server::start(plain_root.path(), store_opts(plain_store.path()));
    load_and_back_up(&server).await;
    assert!(store_contains(plain_store.path(), CANARY));

    let (root, store) = (temp_root(), temp_root());
    let server = Server::start(
        root.path(),
        store_opts(store.path()).env("STRATA_BACKUP_ENCRYPTION_KEY", KEY),
    );
    let digest = load_and_back_up(&server).await;
    assert!(!store_contains(store.path(), CANARY), "plaintext in an encrypted store");
    assert!(!store_contains(store.path(), "\"tables\""), "a manifest in plaintext");
    let objects = files_in(&instance_dir(store.path()).join("files"));
    assert!(!objects.is_empty() && objects.iter().all(|o| o.to_string_lossy().ends_with(".enc")));
    let c = server.connect().await;
    let shown = format!(
        "{:?}{:?}",
        c.simple_query("SELECT * FROM backups()").await.unwrap(),
        c.simple_query("SHOW ALL").await.unwrap()
    );
    assert!(!shown.contains(KEY));
    assert!(!server.stderr().contains(KEY), "the key must not be logged");

    // The right key restores exactly.
    let (_t, started) = restore_with(store.path(), Some(KEY));
    let Started::Running(restored) = started else {
        panic!("restore with the key failed")
    };
    assert_eq!(table_digest(&restored.connect().await, "t").await, digest);

    // No key, or a wrong one: a clear refusal, nothing restored.
    for (key, expected) in [(None, "is encrypted"), (Some(OTHER_KEY), "cannot be decrypted")] {
        let (target, started) = restore_with(store.path(), key);
        let Started::Exited { code, stderr } = started else {
            panic!("restored without the key")
        };
        assert_ne!(code, Some(0));
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains(KEY) && !stderr.contains(OTHER_KEY));
        assert!(!target.path().join("db/.data_id").exists());
    }

    // Tampering with an object is detected by verify, naming that object.
    let victim = &objects[objects.len() / 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(victim, &bytes).unwrap();
    let key_file = temp_root();
    let key_path = key_file.path().join("backup.key");
    std::fs::write(&key_path, KEY).unwrap();
    let out = Command::new(binary())
        .args([
            "backup",
            "verify",
            "--store",
            &format!("fs::root={};", store.path().display()),
        ])
        .arg("--key-file")
        .arg(&key_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    let bad: Vec<&str> = text.lines().filter(|l| l.starts_with("BAD ")).collect();
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        bad.len() == 1 && bad[0].contains(&name) && bad[0].contains("cannot be decrypted"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_key_is_a_clear_startup_error_that_does_not_echo_it() {
    let root = temp_root();
    let bad = "this-is-not-a-key-SECRETISH";
    let started = Server::try_start(root.path(), Options::default().conf("backup.encryption.key", bad));
    let Started::Exited { code, stderr } = started else {
        panic!("started with a bad key")
    };
    assert_ne!(code, Some(0));
    assert!(stderr.contains("backup.encryption.key"), "{stderr}");
    assert!(!stderr.contains(bad), "{stderr}");
}

/// The `_backup_restore` block of the README, exactly as a user copies it.
fn readme_trigger() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("# ROOT/_backup_restore")
        .expect("the README shows a trigger file");
    let block = &readme[start..];
    block[..block.find("```").unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_trigger_with_a_key_file_restores_an_encrypted_backup_exactly() {
    let (root, store, secure) = (temp_root(), temp_root(), temp_root());
    let server = Server::start(
        root.path(),
        store_opts(store.path()).env("STRATA_BACKUP_ENCRYPTION_KEY", KEY),
    );
    let expected = load_and_back_up(&server).await;
    let c = server.connect().await;
    let row = c
        .query_one("SELECT backup_timestamp, instance_name FROM backups() LIMIT 1", &[])
        .await
        .unwrap();
    let (timestamp, instance): (String, String) = (row.get(0), row.get(1));
    drop(c);
    server.stop();
    let key_path = secure.path().join("backup.key");
    std::fs::write(&key_path, KEY).unwrap();

    // Every line as the README has it; only the example paths, name and time are this test's.
    let trigger = readme_trigger()
        .replace("/mnt/backups", &store.path().display().to_string())
        .replace("gentle-forest-orchid", &instance)
        .replace("2024-08-24T12:34:56.789123Z", &timestamp)
        .replace("/secure/backup.key", &key_path.display().to_string());
    assert!(trigger.contains("backup.encryption.key.file="), "{trigger}");
    let target = temp_root();
    std::fs::write(target.path().join("_backup_restore"), &trigger).unwrap();
    // No key in server.conf or the environment: the trigger's key file is the only one.
    let restored = Server::start(target.path(), Options::default());
    let c = restored.connect().await;
    assert_eq!(table_digest(&c, "t").await, expected);
    assert!(!restored.stderr().contains(KEY), "the key must not be logged");
}
