//! What the read-only user (`pg.readonly.user`) may run: queries and the
//! statements that only look. Everything else is refused with SQLSTATE 42501
//! before it runs, naming the user and the statement.
//!
//! An allow-list, so a statement kind nobody thought of is refused, not run.
use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::{Set, SetExpr, Statement};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use pgwire::api::{ClientInfo, METADATA_USER};

use crate::error::{SqlError, sqlstate};
use crate::statements::Command;

/// The read-only user's name, if one is configured.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadonlyUser(pub(crate) Option<String>);

impl ReadonlyUser {
    /// The user's name when `client` logged in as the read-only user.
    pub(crate) fn of(&self, client: &impl ClientInfo) -> Option<&str> {
        let name = self.0.as_deref()?;
        (client.metadata().get(METADATA_USER).map(String::as_str) == Some(name)).then_some(name)
    }
}

/// What a read-only user may do, for the refusal message.
const ALLOWED: &str = "queries, backups(), checkpoint_status(), BACKUP DATABASE ESTIMATE and VERIFY BACKUP";

/// The refusal for `statement` (its name, e.g. `INSERT`) run by `user`.
fn refused(user: &str, statement: &str) -> SqlError {
    SqlError::new(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        format!("permission denied for read-only user \"{user}\": {statement} is not allowed; it may run {ALLOWED}"),
    )
}

/// Refuses one of our statements that changes data or state.
pub(crate) fn check_command(user: &str, cmd: &Command) -> Result<(), SqlError> {
    let name = match cmd {
        Command::BackupEstimate
        | Command::VerifyBackup { .. }
        | Command::Savepoint { .. }
        | Command::Deallocate { .. }
        | Command::ShowSetting { .. } => return Ok(()),
        Command::CreateTable(_) => "CREATE TABLE",
        Command::DropTable { .. } => "DROP TABLE",
        Command::Truncate { .. } => "TRUNCATE",
        Command::DropPartitionList { .. } | Command::DropPartitionWhere { .. } => "ALTER TABLE DROP PARTITION",
        Command::CopyFrom(_) => "COPY",
        Command::CheckpointCreate => "CHECKPOINT CREATE",
        Command::CheckpointRelease => "CHECKPOINT RELEASE",
        Command::BackupDatabase { .. } => "BACKUP DATABASE",
        Command::BackupAbort => "BACKUP ABORT",
        Command::DropBackup { .. } => "DROP BACKUP",
        Command::RestoreTable(_) => "RESTORE TABLE",
    };
    Err(refused(user, name))
}

/// The parser datafusion-postgres runs statements through (with its rewrites),
/// so the statements checked are exactly those that would run.
static PARSER: LazyLock<PostgresCompatibilityParser> = LazyLock::new(PostgresCompatibilityParser::new);

/// Refuses SQL for DataFusion unless every statement in it only reads. Text
/// that does not parse is refused too: what is not checked must not run.
pub(crate) fn check_sql(user: &str, sql: &str) -> Result<(), SqlError> {
    let statements = PARSER
        .parse(sql)
        .map_err(|e| SqlError::syntax(format!("{e} (read-only user \"{user}\")")))?;
    match statements.iter().find(|s| !reads_only(s)) {
        Some(writes) => Err(refused(user, &statement_name(&writes.to_string()))),
        None => Ok(()),
    }
}

/// Session settings datafusion-postgres keeps per connection; any other `SET`
/// changes the state every session shares.
const CONNECTION_SETTINGS: &[&str] = &[
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
];

fn reads_only(statement: &Statement) -> bool {
    match statement {
        Statement::Query(q) => !creates_table(&q.body),
        Statement::Explain { statement, .. } => reads_only(statement),
        Statement::Set(Set::SingleAssignment {
            scope: None,
            hivevar: false,
            variable,
            ..
        }) => CONNECTION_SETTINGS.contains(&variable.to_string().to_lowercase().as_str()),
        Statement::Set(Set::SetTimeZone { local: false, .. }) => true,
        // Prepared statements live in the state all sessions share: EXECUTE
        // could run another user's INSERT. (The wire protocol's own prepared
        // statements are checked when parsed.)
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowViews { .. }
        | Statement::ExplainTable { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Discard { .. }
        | Statement::Close { .. } => true,
        _ => false,
    }
}

/// `SELECT ... INTO t` anywhere in a query body (it creates a table).
fn creates_table(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => s.into.is_some(),
        SetExpr::Query(q) => creates_table(&q.body),
        SetExpr::SetOperation { left, right, .. } => creates_table(left) || creates_table(right),
        _ => false,
    }
}

/// `INSERT`, `CREATE VIEW`, ... : the statement's leading keywords, upper-cased.
fn statement_name(sql: &str) -> String {
    let mut words = sql
        .split_whitespace()
        .map(|w| w.trim_start_matches('(').to_ascii_uppercase());
    let first = words.next().unwrap_or_default();
    match (first.as_str(), words.next()) {
        ("CREATE" | "DROP" | "ALTER", Some(second)) => format!("{first} {second}"),
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_session_statements_pass() {
        for sql in [
            "SELECT 1",
            "select * from trades where ts > now() - interval '1 hour'",
            "WITH x AS (SELECT 1) SELECT * FROM x UNION ALL SELECT 2",
            "EXPLAIN SELECT 1",
            "SHOW server_version",
            "SET extra_float_digits = 3",
            "SET application_name = 'psql'",
            "SET TIME ZONE 'UTC'",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SELECT 1; SELECT 2",
        ] {
            check_sql("user", sql).unwrap_or_else(|e| panic!("{sql}: {}", e.message));
        }
        let garbled = check_sql("user", "not sql at all").expect_err("unparsed SQL does not run");
        assert_eq!(garbled.code, "42601");
    }

    #[test]
    fn writes_are_refused_naming_the_user_and_statement() {
        for (sql, name) in [
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("insert into t select * from u", "INSERT"),
            ("UPDATE t SET a = 1", "UPDATE"),
            ("DELETE FROM t", "DELETE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("COPY (SELECT 1) TO '/tmp/out.csv'", "COPY"),
            ("SELECT 1 INTO t2", "SELECT"),
            ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "EXPLAIN"),
            ("SELECT 1; DROP VIEW v", "DROP VIEW"),
            ("(SELECT 1 INTO t2)", "SELECT"),
            ("SELECT 1 UNION SELECT 2 INTO t2", "SELECT"),
            ("SET datafusion.runtime.memory_limit = '1K'", "SET"),
            ("RESET datafusion.execution.batch_size", "RESET"),
            ("PREPARE ins AS INSERT INTO t VALUES ($1)", "PREPARE"),
            ("EXECUTE ins(1)", "EXECUTE"),
        ] {
            let err = check_sql("analyst", sql).expect_err(sql);
            assert_eq!(err.code, "42501", "{sql}");
            assert!(
                err.message.contains("\"analyst\"") && err.message.contains(&format!(": {name} is not allowed")),
                "{sql}: {}",
                err.message
            );
        }
    }
}
