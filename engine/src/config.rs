//! Settings: `ROOT/conf/server.conf` (Java properties) overlaid by `STRATA_*` environment variables.
//!
//! Every key `a.b.c` can also be set as `STRATA_A_B_C`; the environment wins.
//! Values are validated here, once, with errors naming the key and where it came from.
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use storage::HousekeepingSettings;

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    File,
    Env(String),
}

/// A configuration problem, naming the key (never the value of a secret).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("invalid value for '{key}'{origin}: {reason}")]
    Invalid {
        key: String,
        origin: String,
        reason: String,
    },
}

/// A value that must not be printed (passwords, keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Keys this version understands, with their meaning (shown for unknown keys).
pub const KNOWN_KEYS: &[&str] = &[
    "pg.net.bind.to",
    "pg.user",
    "pg.password",
    "pg.tls.cert",
    "pg.tls.key",
    "pg.allow.cleartext.remote",
    "pg.readonly.user.enabled",
    "pg.readonly.user",
    "pg.readonly.password",
    "http.min.enabled",
    "http.min.net.bind.to",
    "metrics.enabled",
    "housekeeping.interval.ms",
    "housekeeping.orphan.grace.ms",
    "housekeeping.merge.min.files",
    "housekeeping.small.file.mb",
    "checkpoint.warn.after",
    "checkpoint.max.age",
    "backup.enabled",
    "backup.object.store",
    "backup.compression.level",
    "backup.cleanup.keep.latest.n",
    "backup.cleanup.keep.daily.n",
    "backup.cleanup.keep.weekly.n",
    "backup.cleanup.keep.monthly.n",
    "backup.instance.name",
    "backup.schedule.cron",
    "backup.schedule.tz",
    "backup.verify.schedule.cron",
    "backup.compression.threads",
    "backup.upload.concurrency",
    "backup.download.concurrency",
    "backup.max.bandwidth.mb",
    "backup.encryption.key",
    "backup.encryption.key.file",
    "replication.role",
    "replication.object.store",
    "replication.primary.throttle.window.duration",
];

/// Raw key/value pairs plus their origin.
#[derive(Debug, Default, Clone)]
pub struct Properties {
    values: BTreeMap<String, (String, Source)>,
}

impl Properties {
    /// Reads `ROOT/conf/server.conf` (if present) and the process environment.
    pub fn load(root: &Path) -> Result<Self, ConfigError> {
        let path = root.join("conf").join("server.conf");
        let file = match std::fs::File::open(&path) {
            Ok(f) => java_properties::read(std::io::BufReader::new(f)).map_err(|e| ConfigError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        Ok(Self::from_sources(file, std::env::vars().collect()))
    }

    /// Combines file entries with environment variables (which take precedence).
    pub fn from_sources(file: HashMap<String, String>, env: HashMap<String, String>) -> Self {
        let mut values: BTreeMap<String, (String, Source)> = file
            .into_iter()
            .map(|(k, v)| (k.trim().to_string(), (v.trim().to_string(), Source::File)))
            .collect();
        for key in KNOWN_KEYS
            .iter()
            .copied()
            .chain(values.keys().cloned().collect::<Vec<_>>().iter().map(String::as_str))
        {
            let var = env_var_name(key);
            if let Some(v) = env.get(&var) {
                values.insert(key.to_string(), (v.trim().to_string(), Source::Env(var)));
            }
        }
        Self { values }
    }

    /// Keys that are set but that this version does not know (probably typos).
    pub fn unknown_keys(&self) -> Vec<String> {
        self.values
            .keys()
            .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        let origin = match self.values.get(key) {
            Some((_, Source::Env(var))) => format!(" (from environment variable {var})"),
            Some((_, Source::File)) => " (from server.conf)".to_string(),
            None => String::new(),
        };
        ConfigError::Invalid {
            key: key.to_string(),
            origin,
            reason: reason.into(),
        }
    }

    /// Parses an optional value with `parse`, whose error becomes the reason.
    pub fn parse_with<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(key)
            .map(|v| parse(v).map_err(|reason| self.invalid(key, reason)))
            .transpose()
    }

    /// A duration such as `90s`, `30min`, `1h`.
    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        self.parse_with(key, |v| {
            let d = humantime::parse_duration(v)
                .map_err(|e| format!("'{v}' is not a duration like 30s, 15min or 1h: {e}"))?;
            if d.is_zero() {
                return Err("must be longer than zero".into());
            }
            Ok(d)
        })
    }

    /// A socket address, `default` when unset (and the example in the error).
    fn address(&self, key: &str, default: SocketAddr) -> Result<SocketAddr, ConfigError> {
        Ok(self
            .parse_with(key, |v| {
                v.parse::<SocketAddr>()
                    .map_err(|_| format!("'{v}' is not an address like {default}"))
            })?
            .unwrap_or(default))
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.parse_with(key, |v| match v.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("'{v}' must be true or false")),
        })
    }

    fn number(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        self.parse_with(key, |v| {
            let n: u64 = v.parse().map_err(|_| format!("'{v}' is not a whole number"))?;
            if n < min || n > max {
                return Err(format!("{n} is outside {min}..={max}"));
            }
            Ok(n)
        })
    }
}

/// `backup.encryption.key` (base64) or `backup.encryption.key.file`; never both.
fn encryption(p: &Properties) -> Result<Option<backup::Cipher>, ConfigError> {
    let reason = |e: backup::BackupError| match e {
        backup::BackupError::Config { reason, .. } => reason,
        other => other.to_string(),
    };
    let inline = p.parse_with("backup.encryption.key", |v| {
        backup::Cipher::from_base64(v).map_err(reason)
    })?;
    let file = p.parse_with("backup.encryption.key.file", |v| {
        backup::Cipher::from_key_file(Path::new(v)).map_err(reason)
    })?;
    match (inline, file) {
        (Some(_), Some(_)) => Err(p.invalid(
            "backup.encryption.key.file",
            "set either backup.encryption.key or backup.encryption.key.file, not both",
        )),
        (key, file) => Ok(key.or(file)),
    }
}

/// Validated `backup.*` settings.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub enabled: bool,
    /// `backup.object.store`; `None` means `fs::root=ROOT/backups;`.
    pub object_store: Option<Secret>,
    pub compression_level: i32,
    /// `backup.compression.threads`: compressions running at once.
    pub compression_threads: usize,
    /// `backup.upload.concurrency`: requests sending data at once (`None`: the store kind's default).
    pub upload_concurrency: Option<usize>,
    /// `backup.download.concurrency`: requests fetching data at once (`None`: the store kind's default).
    pub download_concurrency: Option<usize>,
    /// `backup.max.bandwidth.mb` in bytes per second.
    pub max_bandwidth: Option<u64>,
    /// `backup.cleanup.keep.*`, counted in `backup.schedule.tz`.
    pub retention: backup::Retention,
    pub instance_name: Option<String>,
    /// `backup.schedule.cron` in `backup.schedule.tz`.
    pub schedule: Option<Schedule>,
    /// `backup.verify.schedule.cron` in `backup.schedule.tz`: runs `VERIFY BACKUP LATEST`.
    pub verify_schedule: Option<Schedule>,
    /// `backup.encryption.key` / `.key.file`: everything stored is sealed with it.
    pub encryption: Option<backup::Cipher>,
}

/// When scheduled work (backups, verifications) runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: croner::Cron,
    pub tz: chrono_tz::Tz,
    /// The key it was configured by, for messages.
    pub key: &'static str,
}

impl Schedule {
    /// The first run strictly after `now_micros`, in micros.
    pub fn next_after(&self, now_micros: i64) -> Option<i64> {
        let now = chrono::DateTime::from_timestamp_micros(now_micros)?.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&now, false).ok()?;
        Some(next.timestamp_micros())
    }

    /// How long from `now_micros` until the next run; `None` (logged) when
    /// there is none.
    pub(crate) fn until_next(&self, now_micros: i64) -> Option<std::time::Duration> {
        let Some(next) = self.next_after(now_micros) else {
            tracing::warn!("{} has no future run; the scheduled runs stop", self.key);
            return None;
        };
        Some(std::time::Duration::from_micros(
            next.saturating_sub(now_micros).max(0) as u64
        ))
    }
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            object_store: None,
            compression_level: 5,
            // Half the cores: the other half stays with foreground queries and inserts.
            compression_threads: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            upload_concurrency: None,
            download_concurrency: None,
            max_bandwidth: None,
            retention: backup::Retention::default(),
            instance_name: None,
            schedule: None,
            verify_schedule: None,
            encryption: None,
        }
    }
}

/// When to warn about, and when to give up on, an open checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointLimits {
    pub warn_after: Duration,
    pub max_age: Option<Duration>,
}

impl Default for CheckpointLimits {
    fn default() -> Self {
        Self {
            warn_after: Duration::from_secs(3600),
            max_age: None,
        }
    }
}

impl BackupSettings {
    /// The store's requests in flight: the settings where given, else its kind's defaults.
    pub(crate) fn concurrency(&self, defaults: backup::Concurrency) -> backup::Concurrency {
        backup::Concurrency {
            upload: self.upload_concurrency.unwrap_or(defaults.upload),
            download: self.download_concurrency.unwrap_or(defaults.download),
        }
    }

    /// Opens the store `conn` names, sealing with `cipher`, with the
    /// configured transfer concurrency.
    pub(crate) fn open_store(
        &self,
        conn: &str,
        cipher: Option<backup::Cipher>,
    ) -> Result<backup::Store, backup::BackupError> {
        let store = backup::Store::open(conn)?.with_cipher(cipher);
        let concurrency = self.concurrency(store.concurrency());
        Ok(store.with_concurrency(concurrency))
    }

    /// The store connection string in effect: configured, or `ROOT/backups` (with a warning).
    pub(crate) fn store_connection(&self, root: &Path) -> String {
        match &self.object_store {
            Some(c) => c.expose().to_string(),
            None => {
                let dir = root.join("backups");
                tracing::warn!(
                    "backup.object.store is not set: backups go to {} on the same disk as the database",
                    dir.display()
                );
                format!("fs::root={};", dir.display())
            }
        }
    }
}

/// `pg.net.bind.to` -> `STRATA_PG_NET_BIND_TO`.
pub fn env_var_name(key: &str) -> String {
    format!("STRATA_{}", key.to_ascii_uppercase().replace(['.', '-'], "_"))
}

/// Validated server settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    /// Certificate chain and private key for TLS on the wire protocol.
    pub tls: Option<TlsFiles>,
    /// Accept clients from other hosts without TLS (`pg.allow.cleartext.remote`).
    pub allow_cleartext_remote: bool,
    pub user: String,
    pub password: Option<Secret>,
    /// A second login that may read but not change anything (`pg.readonly.*`).
    pub readonly: Option<ReadonlyUser>,
    pub housekeeping_interval: Duration,
    pub housekeeping: HousekeepingSettings,
    pub checkpoint: CheckpointLimits,
    pub backup: BackupSettings,
    pub replication: ReplicationSettings,
    /// The HTTP server for `/status` and `/metrics`; `None` when neither is enabled.
    pub http: Option<HttpSettings>,
}

/// `replication.*`: commit shipping (QuestDB Enterprise's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// `replication.role=primary`: every commit goes to the store within the window.
    pub primary: bool,
    /// `replication.object.store`; `None`: the backup store.
    pub object_store: Option<Secret>,
    /// `replication.primary.throttle.window.duration` (ms): the longest a commit waits to be shipped.
    pub window: Duration,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        Self {
            primary: false,
            object_store: None,
            window: Duration::from_millis(1000),
        }
    }
}

/// How long a cleanup spares new data objects while commits are shipped: a
/// shipper uploads a commit's files before the log object naming them.
const SHIPPED_OBJECT_GRACE: Duration = Duration::from_secs(3600);

fn replication(p: &Properties) -> Result<ReplicationSettings, ConfigError> {
    let primary = match p.get("replication.role").map(str::to_ascii_lowercase).as_deref() {
        None | Some("none") => false,
        Some("primary") => true,
        Some(other) => {
            return Err(p.invalid(
                "replication.role",
                format!("'{other}' is not a role; use none or primary (read replicas are not supported yet)"),
            ));
        }
    };
    let window = p.number("replication.primary.throttle.window.duration", 10, 3_600_000)?;
    Ok(ReplicationSettings {
        primary,
        object_store: p.get("replication.object.store").map(Secret::new),
        window: window.map_or(ReplicationSettings::default().window, Duration::from_millis),
    })
}

/// `pg.readonly.user` and its password, when `pg.readonly.user.enabled`.
#[derive(Debug, Clone)]
pub struct ReadonlyUser {
    pub user: String,
    pub password: Secret,
}

/// `http.min.*` and `metrics.enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    pub bind: SocketAddr,
    /// Serve `GET /metrics` (`metrics.enabled`); `/status` is always served.
    pub metrics: bool,
}

impl Settings {
    pub fn from_properties(p: &Properties) -> Result<Self, ConfigError> {
        let bind = p.address("pg.net.bind.to", SocketAddr::from(([127, 0, 0, 1], 8812)))?;
        let password = p.get("pg.password").map(Secret::new);
        if password.is_none() && !bind.ip().is_loopback() {
            return Err(p.invalid(
                "pg.net.bind.to",
                format!("{bind} is not a loopback address and pg.password is not set; set a password to accept remote connections"),
            ));
        }
        let tls = tls(p)?;
        let allow_cleartext_remote = p.boolean("pg.allow.cleartext.remote")?.unwrap_or(false);
        if tls.is_none() && !allow_cleartext_remote && !bind.ip().is_loopback() {
            return Err(p.invalid(
                "pg.net.bind.to",
                format!(
                    "{bind} is not a loopback address and TLS is not configured: logins and data would cross the network in clear; \
                     set pg.tls.cert and pg.tls.key, or pg.allow.cleartext.remote=true to accept that"
                ),
            ));
        }
        let user = p.get("pg.user").unwrap_or("admin").to_string();
        let readonly = readonly_user(p, &user)?;
        let defaults = HousekeepingSettings::default();
        Ok(Self {
            bind,
            tls,
            allow_cleartext_remote,
            user,
            password,
            readonly,
            housekeeping_interval: Duration::from_millis(
                p.number("housekeeping.interval.ms", 10, 86_400_000)?.unwrap_or(5_000),
            ),
            housekeeping: HousekeepingSettings {
                orphan_grace_micros: p
                    .number("housekeeping.orphan.grace.ms", 0, 86_400_000)?
                    .map_or(defaults.orphan_grace_micros, |ms| ms as i64 * 1000),
                merge_min_files: p
                    .number("housekeeping.merge.min.files", 2, 1_000_000)?
                    .map_or(defaults.merge_min_files, |n| n as usize),
                small_file_bytes: p
                    .number("housekeeping.small.file.mb", 1, 1 << 20)?
                    .map_or(defaults.small_file_bytes, |mb| mb << 20),
            },
            checkpoint: CheckpointLimits {
                warn_after: p
                    .duration("checkpoint.warn.after")?
                    .unwrap_or(CheckpointLimits::default().warn_after),
                max_age: p.duration("checkpoint.max.age")?,
            },
            backup: BackupSettings {
                enabled: p.boolean("backup.enabled")?.unwrap_or(true),
                object_store: p.get("backup.object.store").map(Secret::new),
                compression_level: p.number("backup.compression.level", 1, 22)?.map_or(5, |n| n as i32),
                retention: retention(p)?,
                compression_threads: p
                    .number("backup.compression.threads", 1, 1024)?
                    .map_or(BackupSettings::default().compression_threads, |n| n as usize),
                upload_concurrency: p.number("backup.upload.concurrency", 1, 1024)?.map(|n| n as usize),
                download_concurrency: p.number("backup.download.concurrency", 1, 1024)?.map(|n| n as usize),
                max_bandwidth: p.number("backup.max.bandwidth.mb", 1, 1 << 20)?.map(|mb| mb << 20),
                instance_name: p.get("backup.instance.name").map(str::to_string),
                schedule: schedule(p, "backup.schedule.cron")?,
                verify_schedule: schedule(p, "backup.verify.schedule.cron")?,
                encryption: encryption(p)?,
            },
            replication: replication(p)?,
            http: http(p)?,
        }
        .sparing_shipped_objects())
    }

    /// While commits are shipped, a backup's cleanup must not delete the
    /// objects of a commit whose log object is not written yet.
    fn sparing_shipped_objects(mut self) -> Self {
        if self.replication.primary {
            self.backup.retention.new_object_grace_micros = SHIPPED_OBJECT_GRACE.as_micros() as i64;
        }
        self
    }
}

/// The read-only login: it always needs its own password (even when the main
/// user may log in without one), and its own name.
fn readonly_user(p: &Properties, main_user: &str) -> Result<Option<ReadonlyUser>, ConfigError> {
    if !p.boolean("pg.readonly.user.enabled")?.unwrap_or(false) {
        return Ok(None);
    }
    let user = p.get("pg.readonly.user").unwrap_or("user").to_string();
    if user == main_user {
        return Err(p.invalid(
            "pg.readonly.user",
            format!("'{user}' is also pg.user; the read-only user needs a name of its own"),
        ));
    }
    let Some(password) = p.get("pg.readonly.password") else {
        return Err(p.invalid(
            "pg.readonly.user.enabled",
            "the read-only user is enabled but pg.readonly.password is not set",
        ));
    };
    Ok(Some(ReadonlyUser {
        user,
        password: Secret::new(password),
    }))
}

/// The HTTP server runs when `metrics.enabled` or `http.min.enabled` is true
/// (both off by default: a second port is opt-in).
fn http(p: &Properties) -> Result<Option<HttpSettings>, ConfigError> {
    let metrics = p.boolean("metrics.enabled")?.unwrap_or(false);
    let min = p.boolean("http.min.enabled")?.unwrap_or(false);
    let bind = p.address("http.min.net.bind.to", SocketAddr::from(([127, 0, 0, 1], 9003)))?;
    Ok((metrics || min).then_some(HttpSettings { bind, metrics }))
}

/// PEM files for TLS on the wire protocol (read when the server starts).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `pg.tls.cert` and `pg.tls.key`: both or neither.
fn tls(p: &Properties) -> Result<Option<TlsFiles>, ConfigError> {
    match (p.get("pg.tls.cert"), p.get("pg.tls.key")) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(p.invalid("pg.tls.key", "pg.tls.cert is set; set pg.tls.key too")),
        (None, Some(_)) => Err(p.invalid("pg.tls.cert", "pg.tls.key is set; set pg.tls.cert too")),
    }
}

/// `backup.schedule.cron` (5 fields; a leading seconds field is also accepted) and `backup.schedule.tz`.
/// `backup.schedule.tz`: the zone of the schedule and of retention's calendar.
fn time_zone(p: &Properties) -> Result<chrono_tz::Tz, ConfigError> {
    Ok(p.parse_with("backup.schedule.tz", |v| {
        v.parse::<chrono_tz::Tz>()
            .map_err(|_| format!("'{v}' is not an IANA time zone such as Europe/Paris"))
    })?
    .unwrap_or(chrono_tz::UTC))
}

fn retention(p: &Properties) -> Result<backup::Retention, ConfigError> {
    let count = |key: &str, min| p.number(key, min, 100_000).map(|n| n.map(|n| n as usize));
    let defaults = backup::Retention::default();
    Ok(backup::Retention {
        latest: count("backup.cleanup.keep.latest.n", 1)?.unwrap_or(defaults.latest),
        daily: count("backup.cleanup.keep.daily.n", 0)?.unwrap_or(0),
        weekly: count("backup.cleanup.keep.weekly.n", 0)?.unwrap_or(0),
        monthly: count("backup.cleanup.keep.monthly.n", 0)?.unwrap_or(0),
        tz: time_zone(p)?,
        new_object_grace_micros: 0,
    })
}

fn schedule(p: &Properties, key: &'static str) -> Result<Option<Schedule>, ConfigError> {
    let tz = time_zone(p)?;
    let cron = p.parse_with(key, |v| {
        v.parse::<croner::Cron>()
            .map_err(|e| format!("'{v}' is not a cron expression such as '0 3 * * *': {e}"))
    })?;
    Ok(cron.map(|cron| Schedule { cron, tz, key }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every backticked name in the first cell of each table row of the
    /// README's `## heading` section.
    fn readme_table_keys(heading: &str) -> std::collections::BTreeSet<String> {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let section = readme
            .split("\n## ")
            .find(|s| s.starts_with(heading))
            .expect("README section");
        section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .flat_map(|l| {
                let cell = l.split(" |").next().unwrap_or_default();
                cell.split('`')
                    .step_by(2)
                    .map(|k| k.trim_matches(|c| c == ',' || c == ' ').to_string())
            })
            .filter(|k| !k.is_empty())
            .collect()
    }

    #[test]
    fn the_readme_documents_exactly_the_keys_the_server_knows() {
        let documented = readme_table_keys("Configuration");
        let known: std::collections::BTreeSet<String> = KNOWN_KEYS.iter().map(|k| k.to_string()).collect();
        assert_eq!(documented, known, "README's configuration table vs KNOWN_KEYS");
    }

    fn props(file: &[(&str, &str)], env: &[(&str, &str)]) -> Properties {
        let m = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Properties::from_sources(m(file), m(env))
    }

    #[test]
    fn defaults() {
        let s = Settings::from_properties(&props(&[], &[])).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:8812");
        assert_eq!(s.user, "admin");
        assert!(s.password.is_none());
    }

    #[test]
    fn environment_overrides_file() {
        let p = props(
            &[("pg.net.bind.to", "127.0.0.1:1")],
            &[("STRATA_PG_NET_BIND_TO", "127.0.0.1:2")],
        );
        assert_eq!(Settings::from_properties(&p).unwrap().bind.port(), 2);
    }

    #[test]
    fn errors_name_the_key_and_origin() {
        let err = Settings::from_properties(&props(&[], &[("STRATA_PG_NET_BIND_TO", "nowhere")])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("pg.net.bind.to") && msg.contains("STRATA_PG_NET_BIND_TO"),
            "{msg}"
        );
        let err = Settings::from_properties(&props(&[("housekeeping.merge.min.files", "1")], &[])).unwrap_err();
        assert!(err.to_string().contains("housekeeping.merge.min.files"));
    }

    #[test]
    fn transfer_concurrency_overrides_the_store_kinds_default_and_refuses_zero() {
        let defaults = backup::Concurrency { upload: 4, download: 4 };
        let s = Settings::from_properties(&props(&[("backup.download.concurrency", "32")], &[])).unwrap();
        assert_eq!(
            s.backup.concurrency(defaults),
            backup::Concurrency {
                upload: 4,
                download: 32
            }
        );
        let err = Settings::from_properties(&props(&[("backup.upload.concurrency", "0")], &[])).unwrap_err();
        assert!(err.to_string().contains("backup.upload.concurrency"), "{err}");
    }

    #[test]
    fn remote_bind_needs_a_password() {
        let err = Settings::from_properties(&props(&[("pg.net.bind.to", "0.0.0.0:8812")], &[])).unwrap_err();
        assert!(err.to_string().contains("pg.password"), "{err}");
        let cleartext = props(&[("pg.net.bind.to", "0.0.0.0:8812"), ("pg.password", "s3cret")], &[]);
        let err = Settings::from_properties(&cleartext).unwrap_err().to_string();
        assert!(
            err.contains("pg.tls.cert") && err.contains("pg.allow.cleartext.remote"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        let tls = props(
            &[
                ("pg.net.bind.to", "0.0.0.0:8812"),
                ("pg.password", "s3cret"),
                ("pg.tls.cert", "/etc/strata/cert.pem"),
                ("pg.tls.key", "/etc/strata/key.pem"),
            ],
            &[],
        );
        let s = Settings::from_properties(&tls).unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
        let opted_in = props(
            &[
                ("pg.net.bind.to", "0.0.0.0:8812"),
                ("pg.password", "s3cret"),
                ("pg.allow.cleartext.remote", "true"),
            ],
            &[],
        );
        assert!(Settings::from_properties(&opted_in).unwrap().allow_cleartext_remote);
        let half = props(&[("pg.tls.cert", "/etc/strata/cert.pem")], &[]);
        let err = Settings::from_properties(&half).unwrap_err().to_string();
        assert!(err.contains("pg.tls.key"), "{err}");
    }

    #[test]
    fn readonly_user() {
        let off = Settings::from_properties(&props(&[("pg.readonly.password", "r")], &[])).unwrap();
        assert!(off.readonly.is_none(), "off unless enabled");
        let on = Settings::from_properties(&props(
            &[("pg.readonly.user.enabled", "true"), ("pg.readonly.password", "r")],
            &[],
        ))
        .unwrap();
        let ro = on.readonly.expect("enabled");
        assert_eq!((ro.user.as_str(), ro.password.expose()), ("user", "r"));
        assert!(!format!("{ro:?}").contains("\"r\""), "the password is redacted");
        let err = Settings::from_properties(&props(&[("pg.readonly.user.enabled", "true")], &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pg.readonly.password"), "{err}");
        let err = Settings::from_properties(&props(
            &[
                ("pg.readonly.user.enabled", "true"),
                ("pg.readonly.user", "admin"),
                ("pg.readonly.password", "r"),
            ],
            &[],
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("pg.readonly.user") && err.contains("pg.user"), "{err}");
    }

    #[test]
    fn checkpoint_durations() {
        let s = Settings::from_properties(&props(&[("checkpoint.max.age", "90min")], &[])).unwrap();
        assert_eq!(s.checkpoint.max_age, Some(Duration::from_secs(5400)));
        assert_eq!(s.checkpoint.warn_after, Duration::from_secs(3600));
        let err = Settings::from_properties(&props(&[("checkpoint.warn.after", "soon")], &[])).unwrap_err();
        assert!(err.to_string().contains("checkpoint.warn.after"));
    }

    #[test]
    fn backup_settings() {
        let s = Settings::from_properties(&props(&[], &[])).unwrap();
        assert!(s.backup.enabled && s.backup.object_store.is_none());
        assert_eq!((s.backup.compression_level, s.backup.retention.latest), (5, 5));
        for (k, v) in [
            ("backup.compression.level", "23"),
            ("backup.enabled", "yes"),
            ("backup.cleanup.keep.latest.n", "0"),
            ("backup.cleanup.keep.daily.n", "-1"),
            ("backup.cleanup.keep.monthly.n", "lots"),
            ("backup.verify.schedule.cron", "every day"),
        ] {
            let err = Settings::from_properties(&props(&[(k, v)], &[])).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }

    #[test]
    fn schedules() {
        let s = Settings::from_properties(&props(
            &[
                ("backup.schedule.cron", "0 3 * * *"),
                ("backup.schedule.tz", "Europe/Paris"),
            ],
            &[],
        ))
        .unwrap();
        let sched = s.backup.schedule.unwrap();
        // 2024-01-15 00:00 UTC -> next 03:00 Paris = 02:00 UTC.
        let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 15)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        let next = sched.next_after(start.timestamp_micros()).unwrap();
        assert_eq!(next, start.timestamp_micros() + 2 * 3_600_000_000);
        let bad_tz = props(
            &[
                ("backup.schedule.cron", "0 3 * * *"),
                ("backup.schedule.tz", "Mars/Olympus"),
            ],
            &[],
        );
        assert!(
            Settings::from_properties(&bad_tz)
                .unwrap_err()
                .to_string()
                .contains("backup.schedule.tz")
        );
        let err = Settings::from_properties(&props(&[("backup.schedule.cron", "every day")], &[])).unwrap_err();
        assert!(err.to_string().contains("backup.schedule.cron"));
    }

    #[test]
    fn unknown_keys_are_reported() {
        let p = props(&[("pg.net.bind.too", "x")], &[]);
        assert_eq!(p.unknown_keys(), vec!["pg.net.bind.too".to_string()]);
    }

    #[test]
    fn replication_keys_have_defaults_and_bad_values_name_the_key() {
        let off = Settings::from_properties(&props(&[], &[])).unwrap();
        assert_eq!(off.replication, ReplicationSettings::default());
        assert_eq!(off.backup.retention.new_object_grace_micros, 0);
        let on = Settings::from_properties(&props(
            &[
                ("replication.role", "PRIMARY"),
                ("replication.primary.throttle.window.duration", "250"),
            ],
            &[],
        ))
        .unwrap();
        assert!(on.replication.primary);
        assert_eq!(on.replication.window, Duration::from_millis(250));
        assert!(
            on.backup.retention.new_object_grace_micros > 0,
            "a cleanup spares new objects while shipping"
        );
        for (key, value, says) in [
            ("replication.role", "replica", "none or primary"),
            (
                "replication.primary.throttle.window.duration",
                "0",
                "replication.primary.throttle.window.duration",
            ),
            (
                "replication.primary.throttle.window.duration",
                "soon",
                "replication.primary.throttle.window.duration",
            ),
        ] {
            let err = Settings::from_properties(&props(&[(key, value)], &[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains(says), "{key}={value}: {err}");
        }
    }
}
