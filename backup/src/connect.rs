//! `backup.object.store` connection strings, in QuestDB's forms, turned into an
//! object_store client: `fs::root=/path;`, `s3::bucket=B;...`,
//! `azblob::endpoint=...;container=C;...`, `gcs::bucket=B;...`, and the URL
//! forms `file:///path`, `s3://bucket/prefix`, `az://container/prefix`,
//! `gs://bucket/prefix` (credentials from the environment). No error shows a
//! secret: builders' own messages may echo options, so only their kind is told.
use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path;

use crate::error::{BackupError, Result};

const KEY: &str = "backup.object.store";
/// Options whose values are secrets, shown as `***`.
const SECRET_OPTIONS: &[&str] = &[
    "secret_access_key",
    "session_token",
    "token",
    "account_key",
    "sas_token",
    "credential",
];

/// What a connection string names.
pub(crate) enum Target {
    /// A local folder (absolute path).
    Local(String),
    /// An object store, and the folder inside it (`root=`).
    Remote { store: Arc<dyn ObjectStore>, prefix: Path },
}

pub(crate) fn bad(reason: impl Into<String>) -> BackupError {
    BackupError::Config {
        key: KEY.into(),
        reason: reason.into(),
    }
}

/// Parses `conn`; `display` (the redacted string) names it in errors.
pub(crate) fn connect(conn: &str, display: &str) -> Result<Target> {
    if let Some(rest) = conn.strip_prefix("file://") {
        return Ok(Target::Local(rest.to_string()));
    }
    for (scheme, kind) in [("s3://", "s3"), ("az://", "azblob"), ("gs://", "gcs")] {
        if let Some(rest) = conn.strip_prefix(scheme) {
            return from_url(kind, rest);
        }
    }
    let Some((kind, body)) = conn.split_once("::") else {
        return Err(bad(format!(
            "'{display}' is not a connection string; use fs::root=/path;, s3::bucket=...;, azblob::container=...; \
             or gcs::bucket=...; (or file://, s3://, az://, gs:// URLs)"
        )));
    };
    let opts = Options::parse(kind, body)?;
    match opts.kind.as_str() {
        "fs" => {
            // QuestDB stages files in `atomic_write_dir` to publish them atomically;
            // object_store already writes each file to a temporary name and renames it.
            opts.only(&["root", "atomic_write_dir"])?;
            Ok(Target::Local(opts.required("root", "/path")?.to_string()))
        }
        "s3" => s3(&opts),
        "azblob" => azure(&opts),
        "gcs" => gcs(&opts),
        other => Err(bad(format!("unknown store kind '{other}'; use fs, s3, azblob or gcs"))),
    }
}

/// `s3://bucket/prefix` and its kin: the bucket (container) from the URL, the
/// rest from the environment, as each cloud's tools read it.
fn from_url(kind: &str, rest: &str) -> Result<Target> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad(format!("{kind} URL without a bucket")));
    }
    let store: Arc<dyn ObjectStore> = match kind {
        "s3" => Arc::new(
            AmazonS3Builder::from_env()
                .with_retry(client_retries())
                .with_bucket_name(bucket)
                .build()
                .map_err(|_| bad("cannot configure S3 from the environment (AWS_REGION, AWS_ACCESS_KEY_ID, ...)"))?,
        ),
        "azblob" => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_retry(client_retries())
                .with_container_name(bucket)
                .build()
                .map_err(|_| {
                    bad("cannot configure Azure from the environment (AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY, ...)")
                })?,
        ),
        _ => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_retry(client_retries())
                .with_bucket_name(bucket)
                .build()
                .map_err(|_| {
                    bad("cannot configure Google Cloud Storage from the environment (GOOGLE_SERVICE_ACCOUNT, ...)")
                })?,
        ),
    };
    Ok(Target::Remote {
        store,
        prefix: Path::from(prefix),
    })
}

fn s3(opts: &Options) -> Result<Target> {
    opts.only(&[
        "bucket",
        "region",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "endpoint",
        "allow_http",
        "root",
        "prefix",
        "virtual_hosted_style_request",
    ])?;
    let mut b = AmazonS3Builder::new()
        .with_retry(client_retries())
        .with_bucket_name(opts.required("bucket", "NAME")?)
        .with_region(opts.get("region").unwrap_or("us-east-1"))
        .with_allow_http(opts.boolean("allow_http")?)
        .with_virtual_hosted_style_request(opts.boolean("virtual_hosted_style_request")?);
    if let Some(v) = opts.get("access_key_id") {
        b = b.with_access_key_id(v);
    }
    if let Some(v) = opts.get("secret_access_key") {
        b = b.with_secret_access_key(v);
    }
    if let Some(v) = opts.get("session_token") {
        b = b.with_token(v);
    }
    if let Some(v) = opts.get("endpoint") {
        b = b.with_endpoint(v);
    }
    remote(
        b.build(),
        opts,
        "invalid s3 options (check bucket, region and endpoint)",
    )
}

/// `azblob::endpoint=https://ACCOUNT.blob.core.windows.net;container=C;root=P;account_name=ACCOUNT;account_key=KEY;`
/// Without `account_key` the managed identity of the machine is used. An
/// `http://` endpoint (Azurite: `http://127.0.0.1:10000/devstoreaccount1`) is
/// allowed as given.
fn azure(opts: &Options) -> Result<Target> {
    opts.only(&["endpoint", "container", "root", "account_name", "account_key"])?;
    let mut b = MicrosoftAzureBuilder::new()
        .with_retry(client_retries())
        .with_container_name(opts.required("container", "NAME")?)
        .with_account(opts.required("account_name", "ACCOUNT")?);
    if let Some(endpoint) = opts.get("endpoint") {
        b = b
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint.to_string());
    }
    if let Some(key) = opts.get("account_key") {
        b = b.with_access_key(key);
    }
    remote(
        b.build(),
        opts,
        "invalid azblob options (check endpoint, account_name and account_key, a base64 key)",
    )
}

/// `gcs::bucket=B;root=P;credential=BASE64_OF_THE_SERVICE_ACCOUNT_JSON;` or
/// `credential_path=/path/key.json`; with neither, the machine's application
/// default credentials.
fn gcs(opts: &Options) -> Result<Target> {
    opts.only(&["bucket", "root", "credential", "credential_path"])?;
    let mut b = GoogleCloudStorageBuilder::new()
        .with_retry(client_retries())
        .with_bucket_name(opts.required("bucket", "NAME")?);
    match (opts.get("credential"), opts.get("credential_path")) {
        (Some(_), Some(_)) => return Err(bad("set either credential or credential_path, not both")),
        (Some(encoded), None) => {
            let json = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .ok_or_else(|| bad("gcs credential must be the base64 of a service account JSON key"))?;
            b = b.with_service_account_key(json);
        }
        (None, Some(path)) => b = b.with_service_account_path(path),
        (None, None) => {}
    }
    remote(
        b.build(),
        opts,
        "invalid gcs options (check bucket and the service account key)",
    )
}

/// The store a builder built, in the folder `opts` name; a builder's error is
/// replaced by `invalid` (its own message may echo a secret).
fn remote<S: ObjectStore>(built: object_store::Result<S>, opts: &Options, invalid: &str) -> Result<Target> {
    Ok(Target::Remote {
        store: Arc::new(built.map_err(|_| bad(invalid))?),
        prefix: opts.prefix()?,
    })
}

/// The clients' own request retries, kept short: `retry::with_retry` retries
/// whole operations (including streamed bodies) on top of these.
fn client_retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(30),
    }
}

/// The `kind::k=v;k=v;` options of a connection string.
struct Options {
    kind: String,
    values: BTreeMap<String, String>,
}

impl Options {
    fn parse(kind: &str, body: &str) -> Result<Self> {
        let mut values = BTreeMap::new();
        for part in body.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("expected key=value, found '{}'", redact_part(part))))?;
            values.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        Ok(Self {
            kind: kind.to_ascii_lowercase(),
            values,
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str, example: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| bad(format!("{} store needs {name}={example}", self.kind)))
    }

    /// Refuses options other than `known`.
    fn only(&self, known: &[&str]) -> Result<()> {
        match self.values.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(bad(format!(
                "unknown {} option '{k}' (known: {})",
                self.kind,
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    fn boolean(&self, name: &str) -> Result<bool> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(bad(format!("{name} must be true or false, not '{v}'"))),
        }
    }

    /// QuestDB's `root` (the folder inside the bucket); `prefix` is the older alias.
    fn prefix(&self) -> Result<Path> {
        match (self.get("root"), self.get("prefix")) {
            (Some(_), Some(_)) => Err(bad("set either root or prefix (the same thing), not both")),
            (Some(p), None) | (None, Some(p)) => Ok(Path::from(p)),
            (None, None) => Ok(Path::default()),
        }
    }
}

fn redact_part(part: &str) -> String {
    match part.split_once('=') {
        Some((k, _)) if SECRET_OPTIONS.contains(&k.trim().to_ascii_lowercase().as_str()) => format!("{k}=***"),
        _ => part.to_string(),
    }
}

/// The connection string with secret values replaced by `***`.
pub fn redact(conn: &str) -> String {
    match conn.split_once("::") {
        Some((kind, body)) => {
            let parts: Vec<String> = body
                .split(';')
                .filter(|p| !p.trim().is_empty())
                .map(redact_part)
                .collect();
            format!("{kind}::{};", parts.join(";"))
        }
        None => conn.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(conn: &str) -> String {
        match connect(conn, &redact(conn)) {
            Ok(_) => panic!("{conn} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn azure_and_gcs_strings_parse_and_their_secrets_never_show() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        let azure = format!(
            "azblob::endpoint=http://127.0.0.1:10000/devstoreaccount1;container=c;root=db1;account_name=devstoreaccount1;account_key={key};"
        );
        assert!(matches!(connect(&azure, "x"), Ok(Target::Remote { prefix, .. }) if prefix.as_ref() == "db1"));
        assert_eq!(
            redact(&azure),
            "azblob::endpoint=http://127.0.0.1:10000/devstoreaccount1;container=c;root=db1;account_name=devstoreaccount1;account_key=***;"
        );
        let err = refused("azblob::container=c;account_name=a;account_key=NOT-BASE64-SECRET;");
        assert!(
            err.contains("backup.object.store") && !err.contains("NOT-BASE64-SECRET"),
            "{err}"
        );
        assert!(refused("azblob::account_name=a;").contains("container="));

        let sa = r#"{"private_key":"k","private_key_id":"i","client_email":"e@x","disable_oauth":true,"gcs_base_url":"http://127.0.0.1:1"}"#;
        let encoded = base64::engine::general_purpose::STANDARD.encode(sa);
        assert!(connect(&format!("gcs::bucket=b;root=r;credential={encoded};"), "x").is_ok());
        assert!(redact(&format!("gcs::bucket=b;credential={encoded};")).ends_with("credential=***;"));
        let err = refused("gcs::bucket=b;credential=%%SECRET%%;");
        assert!(err.contains("base64") && !err.contains("SECRET"), "{err}");
        assert!(refused("gcs::bucket=b;credential=x;credential_path=/k.json;").contains("not both"));
        assert!(refused("gcs::bucket=b;colour=blue;").contains("unknown gcs option 'colour'"));
        assert!(refused("ftp::host=x;").contains("azblob or gcs"));
        assert!(refused("gs://").contains("without a bucket"));
    }
}
