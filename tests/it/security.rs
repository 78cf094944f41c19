//! Authentication: passwords, unknown users, and refusing open binds without a password.
use crate::harness::{Options, Server, Started, sqlstate, temp_root};

#[tokio::test(flavor = "multi_thread")]
async fn password_is_checked() {
    let root = temp_root();
    let server = Server::start(
        root.path(),
        Options::default()
            .conf("pg.password", "correct horse")
            .conf("pg.user", "ops"),
    );
    let ok = server
        .connect_as("ops", Some("correct horse"))
        .await
        .expect("right password");
    ok.simple_query("SELECT 1").await.unwrap();
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
        !server.stderr().contains("correct horse"),
        "the password must never be logged"
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
