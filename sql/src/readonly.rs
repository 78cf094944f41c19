//! What the read-only user (`pg.readonly.user`) may run: queries and the
//! statements that only look. Everything else is refused with SQLSTATE 42501
//! before it runs, naming the user and the statement.
//!
//! An allow-list, so a statement kind nobody thought of is refused, not run.
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

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

/// Refuses SQL for DataFusion unless every statement in it only reads.
/// Text that does not parse passes: DataFusion reports the syntax error.
pub(crate) fn check_sql(user: &str, sql: &str) -> Result<(), SqlError> {
    let Ok(statements) = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}) else {
        return Ok(());
    };
    match statements.iter().find(|s| !reads_only(s)) {
        Some(writes) => Err(refused(user, &statement_name(&writes.to_string()))),
        None => Ok(()),
    }
}

fn reads_only(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Statement(s) => sql_reads_only(s),
        DfStatement::Explain(e) => reads_only(&e.statement),
        DfStatement::Reset(_) => true,
        DfStatement::CreateExternalTable(_) | DfStatement::CopyTo(_) => false,
    }
}

fn sql_reads_only(statement: &Statement) -> bool {
    match statement {
        // `SELECT ... INTO t` creates a table.
        Statement::Query(q) => !matches!(&*q.body, SetExpr::Select(s) if s.into.is_some()),
        Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => sql_reads_only(statement),
        Statement::Set(_)
        | Statement::ShowVariable { .. }
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
        | Statement::Execute { .. }
        | Statement::Deallocate { .. }
        | Statement::Discard { .. }
        | Statement::Close { .. }
        | Statement::Reset(_) => true,
        _ => false,
    }
}

/// `INSERT`, `CREATE VIEW`, ... : the statement's leading keywords, upper-cased.
fn statement_name(sql: &str) -> String {
    let mut words = sql.split_whitespace().map(str::to_ascii_uppercase);
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
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SELECT 1; SELECT 2",
            "not sql at all",
        ] {
            check_sql("user", sql).unwrap_or_else(|e| panic!("{sql}: {}", e.message));
        }
    }

    #[test]
    fn writes_are_refused_naming_the_user_and_statement() {
        for (sql, name) in [
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("insert into t select * from u", "INSERT"),
            ("UPDATE t SET a = 1", "UPDATE"),
            ("DELETE FROM t", "DELETE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            (
                "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/tmp/x.csv'",
                "CREATE EXTERNAL",
            ),
            ("COPY (SELECT 1) TO '/tmp/out.csv'", "COPY"),
            ("SELECT 1 INTO t2", "SELECT"),
            ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "EXPLAIN"),
            ("SELECT 1; DROP VIEW v", "DROP VIEW"),
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
