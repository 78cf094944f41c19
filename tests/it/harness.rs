//! Starting and stopping real server processes on free ports with their own roots.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

/// A running `strata serve` process; killed (SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    /// The port of `/status` and `/metrics`, when the HTTP server is on.
    pub http_port: Option<u16>,
    stderr_path: PathBuf,
}

/// Options for a server start.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra `key=value` lines for conf/server.conf.
    pub conf: Vec<(String, String)>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    pub demo: bool,
    /// A command the server runs under (`unshare ... sh -c '...' ...`), when not empty.
    pub wrapper: Vec<String>,
    /// Where the server's stderr goes, when not beside the root (a root on a
    /// file system that loses writes must not take the log with it).
    pub stderr_dir: Option<PathBuf>,
}

impl Options {
    pub fn conf(mut self, k: &str, v: &str) -> Self {
        self.conf.push((k.into(), v.into()));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_strata")
}

pub fn write_conf(root: &Path, opts: &Options) {
    std::fs::create_dir_all(root.join("conf")).unwrap();
    let mut conf = String::from("# written by the integration tests\npg.net.bind.to=127.0.0.1:0\n");
    for (k, v) in &opts.conf {
        conf.push_str(&format!("{k}={v}\n"));
    }
    // Unchanged on a restart: a root on a file system that loses unsynced writes keeps it.
    let path = root.join("conf/server.conf");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(conf.as_str()) {
        std::fs::write(path, conf).unwrap();
    }
}

/// The result of a start attempt: a running server, or the exit status and stderr.
pub enum Started {
    Running(Server),
    Exited { code: Option<i32>, stderr: String },
}

impl Server {
    /// Starts a server on `root` (created if needed) and waits until it accepts connections.
    pub fn start(root: &Path, opts: Options) -> Server {
        match Self::try_start(root, opts) {
            Started::Running(s) => s,
            Started::Exited { code, stderr } => panic!("server exited with {code:?}: {stderr}"),
        }
    }

    /// Spawns `strata serve` on `root` without waiting for anything (for crash tests).
    pub fn spawn(root: &Path, opts: &Options) -> Child {
        write_conf(root, opts);
        Self::command(root, opts)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn strata")
    }

    fn command(root: &Path, opts: &Options) -> Command {
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary());
                cmd
            }
            None => Command::new(binary()),
        };
        cmd.arg("serve").arg("--root").arg(root);
        if opts.demo {
            cmd.arg("--demo");
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.env("RUST_LOG", "info");
        cmd
    }

    pub fn try_start(root: &Path, opts: Options) -> Started {
        write_conf(root, &opts);
        let stderr_path = match &opts.stderr_dir {
            Some(dir) => dir.join(format!("stderr.{}", std::process::id())),
            None => root.with_extension(format!("stderr.{}", std::process::id())),
        };
        let stderr_file = std::fs::File::create(&stderr_path).unwrap();
        let mut child = Self::command(root, &opts)
            .stdout(Stdio::piped())
            .stderr(stderr_file)
            .spawn()
            .expect("spawn strata");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The HTTP line, when there is one, comes first.
                if let Some(addr) = line.strip_prefix("strata http listening on ") {
                    let _ = tx.send((true, addr.to_string()));
                } else if let Some(addr) = line.strip_prefix("strata listening on ") {
                    let _ = tx.send((false, addr.to_string()));
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut http_port = None;
        loop {
            if let Ok((http, addr)) = rx.recv_timeout(Duration::from_millis(50)) {
                let port = addr.rsplit(':').next().unwrap().parse().unwrap();
                if http {
                    http_port = Some(port);
                    continue;
                }
                return Started::Running(Server {
                    child: Some(child),
                    port,
                    http_port,
                    stderr_path,
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return Started::Exited {
                    code: status.code(),
                    stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                };
            }
            assert!(Instant::now() < deadline, "server did not start within 120 s");
        }
    }

    pub async fn connect(&self) -> Client {
        self.connect_as("admin", None).await.expect("connect")
    }

    pub async fn connect_as(&self, user: &str, password: Option<&str>) -> Result<Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(self.port).user(user).dbname("strata");
        if let Some(pw) = password {
            config.password(pw);
        }
        let (client, conn) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Runs `psql` with `args` against this server; `None` when psql is not
    /// installed (after [`missing_tool`]).
    pub fn psql(&self, args: &[&str]) -> Option<std::process::Output> {
        self.psql_as("admin", None, args)
    }

    /// [`Server::psql`] logged in as `user`, with `password` if given.
    pub fn psql_as(&self, user: &str, password: Option<&str>, args: &[&str]) -> Option<std::process::Output> {
        let mut psql = Command::new("psql");
        if let Some(pw) = password {
            psql.env("PGPASSWORD", pw);
        }
        let out = psql
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                "strata",
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(args)
            .output();
        match out {
            Ok(o) => Some(o),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing_tool("psql");
                None
            }
            Err(e) => panic!("running psql: {e}"),
        }
    }

    /// The server's process id (the wrapper's, which execs the server).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM and wait: the clean shutdown path. Returns the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        unsafe_sigterm(child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn unsafe_sigterm(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// A fresh temporary root folder.
pub fn temp_root() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("strata-it-").tempdir().unwrap()
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no sqlstate: {e}"))
}

/// Order-independent digest of a table's rows, computed server-side as text.
pub async fn table_digest(client: &Client, table: &str) -> (i64, String) {
    let rows = client.simple_query(&format!("SELECT * FROM {table}")).await.unwrap();
    let mut lines: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect();
    lines.sort();
    let count = lines.len() as i64;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&lines, &mut h);
    (count, format!("{:016x}", std::hash::Hasher::finish(&h)))
}

/// A tool a test needs is not installed: under `.ci/run` (which installs every
/// tool and sets `STRATA_REQUIRE_TEST_TOOLS`) that fails the test; elsewhere the
/// test says loudly that it skips the part that needs the tool.
pub fn missing_tool(tool: &str) {
    assert!(
        std::env::var_os("STRATA_REQUIRE_TEST_TOOLS").is_none() && std::env::var_os("CI").is_none(),
        "{tool} is required here (.ci/run installs it)"
    );
    // Written to the stream itself: `eprintln!` would be captured, and hidden, for a passing test.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {tool} is not installed, so a test skips what needs it (.ci/run installs it)"
    );
}

/// True when `program` can be run; otherwise [`missing_tool`] is called.
pub fn have_program(program: &str) -> bool {
    match Command::new(program).arg("--version").output() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            missing_tool(program);
            false
        }
        Err(e) => panic!("running {program}: {e}"),
    }
}
