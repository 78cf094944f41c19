//! Authentication and transport: passwords, unknown users, refusing open binds
//! without a password or TLS, and TLS with psql.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Options, Server, Started, sqlstate, temp_root};

/// A backup encryption key (base64 of 32 bytes) that must never be shown.
const SECRET_KEY: &str = "c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=";

#[tokio::test(flavor = "multi_thread")]
async fn password_is_checked() {
    let root = temp_root();
    let server = Server::start(
        root.path(),
        Options::default()
            .conf("pg.password", "correct horse")
            .conf("pg.user", "ops")
            .env("STRATA_BACKUP_ENCRYPTION_KEY", SECRET_KEY),
    );
    let ok = server
        .connect_as("ops", Some("correct horse"))
        .await
        .expect("right password");
    ok.simple_query("SELECT 1").await.unwrap();
    // Nothing a client can list shows a secret: settings, backups, their errors.
    for sql in [
        "SHOW ALL",
        "SELECT * FROM backups()",
        "BACKUP DATABASE WAIT",
        "SELECT * FROM backups()",
    ] {
        let text = match ok.simple_query(sql).await {
            Ok(msgs) => format!("{msgs:?}"),
            Err(e) => format!("{e:?}"),
        };
        for secret in ["correct horse", SECRET_KEY] {
            assert!(!text.contains(secret), "{sql} shows a secret: {text}");
        }
    }
    let err = server
        .connect_as("ops", Some("wrong"))
        .await
        .expect_err("wrong password must fail");
    assert_eq!(sqlstate(&err), "28P01", "{err}");
    let err = server
        .connect_as("admin", Some("correct horse"))
        .await
        .expect_err("unknown user must fail");
    assert_eq!(sqlstate(&err), "28P01", "{err}");
    assert!(
        !server.stderr().contains("correct horse") && !server.stderr().contains(SECRET_KEY),
        "secrets must never be logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_password_only_the_configured_user_on_loopback() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    server.connect_as("admin", None).await.expect("default user");
    let err = server
        .connect_as("mallory", None)
        .await
        .expect_err("unknown user must fail");
    assert_eq!(sqlstate(&err), "28000", "{err}");
}

#[test]
fn non_loopback_bind_without_password_is_refused() {
    let root = temp_root();
    let opts = Options::default().conf("pg.net.bind.to", "0.0.0.0:0");
    match Server::try_start(root.path(), opts) {
        Started::Exited { code, stderr } => {
            assert_ne!(code, Some(0));
            assert!(
                stderr.contains("pg.password") && stderr.contains("loopback"),
                "{stderr}"
            );
        }
        Started::Running(_) => panic!("must refuse to listen on 0.0.0.0 without a password"),
    }
}

/// A self-signed certificate for localhost and its key, as PEM files in `dir`.
fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// This machine's address on its default route, if it has one.
fn non_loopback_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // Connecting a UDP socket sends nothing; it only picks the route.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// `psql` with a full connection string; returns (success, stdout + stderr).
fn psql_conninfo(conninfo: &str, password: &str, command: &str) -> (bool, String) {
    let out = Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", conninfo, "-c", command])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_psql_and_no_cleartext_logins_from_other_hosts() {
    if !crate::harness::have_program("psql") {
        return;
    }
    let root = temp_root();
    let certs = temp_root();
    let (cert, key) = self_signed_cert(certs.path());
    let server = Server::start(
        root.path(),
        Options::default()
            .conf("pg.net.bind.to", "0.0.0.0:0")
            .conf("pg.password", "tls horse")
            .conf("pg.tls.cert", cert.to_str().unwrap())
            .conf("pg.tls.key", key.to_str().unwrap()),
    );
    let port = server.port;
    let ca = cert.display();
    // psql over TLS, checking the server's certificate against ours.
    let conninfo = format!("host=127.0.0.1 port={port} user=admin dbname=strata sslmode=verify-ca sslrootcert={ca}");
    let (ok, out) = psql_conninfo(&conninfo, "tls horse", "SELECT 40 + 2");
    assert!(ok && out.trim() == "42", "{out}");
    let (ok, out) = psql_conninfo(&conninfo, "tls horse", "\\conninfo");
    assert!(ok && out.contains("SSL"), "psql must report an SSL connection: {out}");
    // Loopback clients may still connect in clear.
    let local = server
        .connect_as("admin", Some("tls horse"))
        .await
        .expect("loopback without TLS");
    local.simple_query("SELECT 1").await.unwrap();
    // A client on another host without TLS is refused before it can log in.
    match non_loopback_address() {
        Some(ip) => {
            let clear = format!("host={ip} port={port} user=admin dbname=strata sslmode=disable");
            let (ok, out) = psql_conninfo(&clear, "tls horse", "SELECT 1");
            assert!(!ok && out.contains("without TLS refused"), "{out}");
            let secure = format!("host={ip} port={port} user=admin dbname=strata sslmode=require");
            let (ok, out) = psql_conninfo(&secure, "tls horse", "SELECT 40 + 2");
            assert!(ok && out.trim() == "42", "{out}");
        }
        None => eprintln!("no non-loopback address on this machine: remote-client check skipped"),
    }
    assert!(!server.stderr().contains("tls horse"));
}

#[test]
fn remote_binds_need_tls_or_an_explicit_opt_in_and_bad_certificates_are_refused() {
    let root = temp_root();
    let remote = Options::default()
        .conf("pg.net.bind.to", "0.0.0.0:0")
        .conf("pg.password", "pw");
    match Server::try_start(root.path(), remote.clone()) {
        Started::Exited { code, stderr } => {
            assert_ne!(code, Some(0));
            assert!(
                stderr.contains("pg.tls.cert") && stderr.contains("pg.allow.cleartext.remote"),
                "{stderr}"
            );
        }
        Started::Running(_) => panic!("must refuse a remote bind without TLS"),
    }
    let opted_in = Server::start(root.path(), remote.conf("pg.allow.cleartext.remote", "true"));
    assert_eq!(opted_in.stop(), Some(0), "with the opt-in it starts and stops cleanly");

    let certs = temp_root();
    let not_pem = certs.path().join("cert.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let (_, key) = self_signed_cert(certs.path());
    let bad = Options::default()
        .conf("pg.tls.cert", not_pem.to_str().unwrap())
        .conf("pg.tls.key", key.to_str().unwrap());
    let other_root = temp_root();
    match Server::try_start(other_root.path(), bad) {
        Started::Exited { code, stderr } => {
            assert_ne!(code, Some(0));
            assert!(
                stderr.contains("pg.tls.cert") && stderr.contains("cert.pem"),
                "{stderr}"
            );
        }
        Started::Running(_) => panic!("must refuse a file that holds no certificate"),
    }
}
