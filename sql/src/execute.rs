//! Running our own statements against the engine.
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use engine::{CopyFormat, Database};
use storage::TableMeta;

use crate::error::SqlError;
use crate::statements::{Command, CopyFrom};

/// What a command produced, before it is put on the wire.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// A command tag such as `CREATE TABLE`, with an optional notice for the client.
    Done { tag: &'static str, notice: Option<String> },
    /// Rows shaped as [`result_schema`], plus a tag.
    Rows { tag: &'static str, batch: RecordBatch },
    /// COPY FROM STDIN accepted: the client may now send `columns` columns of data.
    CopyIn { columns: usize },
}

fn done(tag: &'static str) -> Outcome {
    Outcome::Done { tag, notice: None }
}

/// Executes everything except the data phase of COPY (see [`finish_copy`]).
pub(crate) async fn execute(db: &Database, cmd: &Command) -> Result<Outcome, SqlError> {
    match cmd {
        Command::CreateTable(ct) => {
            let meta = TableMeta::new(&ct.name, ct.columns.clone(), ct.timestamp.clone(), ct.partition_by)
                .map_err(|e| SqlError::from(&e))?;
            let created = db.create_table(meta, ct.if_not_exists).await?;
            Ok(Outcome::Done {
                tag: "CREATE TABLE",
                notice: (!created).then(|| format!("relation \"{}\" already exists, skipping", ct.name)),
            })
        }
        Command::DropTable { name, if_exists } => {
            let dropped = db.drop_table(name, *if_exists).await?;
            Ok(Outcome::Done {
                tag: "DROP TABLE",
                notice: (!dropped).then(|| format!("table \"{name}\" does not exist, skipping")),
            })
        }
        Command::Truncate { name } => {
            db.truncate(name).await?;
            Ok(done("TRUNCATE TABLE"))
        }
        Command::DropPartitionList { table, partitions } => {
            let n = db.drop_partitions(table, partitions.clone()).await?;
            Ok(dropped_partitions(n))
        }
        Command::DropPartitionWhere { table, bounds } => {
            let n = db
                .drop_partitions_where(table, &bounds.column, |start, end| bounds.covers(start, end))
                .await?;
            Ok(dropped_partitions(n))
        }
        Command::CheckpointCreate => {
            db.checkpoint_create().await?;
            Ok(done("CHECKPOINT CREATE"))
        }
        Command::CheckpointRelease => {
            let released = db.checkpoint_release().await?;
            Ok(Outcome::Done {
                tag: "CHECKPOINT RELEASE",
                notice: (!released).then(|| "no checkpoint is in progress; nothing to release".to_string()),
            })
        }
        Command::BackupDatabase { wait } => {
            let ts = db.backup_start(*wait).await?;
            rows(cmd, "BACKUP", vec![text(&ts)])
        }
        Command::BackupEstimate => {
            let e = db.backup_estimate().await?;
            rows(
                cmd,
                "BACKUP",
                vec![
                    int(e.files_to_upload),
                    int(e.bytes_to_upload),
                    int(e.files_reused),
                    int(e.bytes_reused),
                ],
            )
        }
        Command::DropBackup { timestamp } => {
            let report = db.drop_backup(timestamp).await?;
            rows(
                cmd,
                "DROP BACKUP",
                vec![
                    text(timestamp),
                    int(report.objects_deleted as u64),
                    int(report.bytes_deleted),
                ],
            )
        }
        Command::BackupAbort => {
            let aborted = db.backup_abort();
            Ok(Outcome::Done {
                tag: "BACKUP ABORT",
                notice: (!aborted).then(|| "no backup is running; nothing to abort".to_string()),
            })
        }
        Command::RestoreTable(r) => {
            let request = backup::TableRequest {
                table: r.table.clone(),
                target: r.target.clone(),
                replace: r.replace,
                partitions: r.bounds.clone().map(|b| backup::PartitionFilter {
                    column: b.column.clone(),
                    accept: Arc::new(move |start, end| b.overlaps(start, end)),
                }),
            };
            let report = db.restore_table(r.timestamp.clone(), request).await?;
            rows(
                cmd,
                "RESTORE",
                vec![
                    text(&r.target),
                    text(&report.backup_timestamp),
                    int(report.files),
                    int(report.rows),
                    int(report.bytes),
                    int(report.fetched_bytes),
                ],
            )
        }
        Command::VerifyBackup { timestamp } => {
            let report = db.verify_backup(timestamp.clone()).await?;
            let details: Vec<String> = report
                .problems
                .iter()
                .map(|p| format!("{}/{} ({}): {}", p.table, p.path, p.object, p.reason))
                .collect();
            rows(
                cmd,
                "VERIFY",
                vec![
                    text(&report.backup_timestamp),
                    text(if report.ok() { "ok" } else { "corrupt" }),
                    int(report.tables),
                    int(report.files),
                    int(report.bytes),
                    int(report.problems.len() as u64),
                    text(&details.join("\n")),
                ],
            )
        }
        Command::Savepoint { tag } => Ok(done(tag)),
        // The statement itself is dropped by the wire layer, which owns them.
        Command::Deallocate { name } => Ok(done(if name.is_some() { "DEALLOCATE" } else { "DEALLOCATE ALL" })),
        Command::ShowSetting { value, .. } => rows(cmd, "SHOW", vec![text(value)]),
        Command::CopyFrom(copy) => {
            let table = db
                .storage()
                .table(&copy.table)
                .ok_or_else(|| SqlError::from(&storage::StorageError::TableNotFound(copy.table.clone())))?;
            let columns = copy.columns.as_ref().map_or(table.meta().columns.len(), Vec::len);
            Ok(Outcome::CopyIn { columns })
        }
    }
}

fn int(v: u64) -> ArrayRef {
    Arc::new(Int64Array::from(vec![i64::try_from(v).unwrap_or(i64::MAX)]))
}

fn text(v: &str) -> ArrayRef {
    Arc::new(StringArray::from(vec![v]))
}

fn rows(cmd: &Command, tag: &'static str, columns: Vec<ArrayRef>) -> Result<Outcome, SqlError> {
    let schema = result_schema(cmd)
        .ok_or_else(|| SqlError::new(crate::error::sqlstate::INTERNAL_ERROR, "command has no result columns"))?;
    let batch = RecordBatch::try_new(schema, columns)
        .map_err(|e| SqlError::new(crate::error::sqlstate::INTERNAL_ERROR, e.to_string()))?;
    Ok(Outcome::Rows { tag, batch })
}

fn dropped_partitions(n: usize) -> Outcome {
    Outcome::Done {
        tag: "ALTER TABLE",
        notice: Some(format!("dropped {n} partition{}", if n == 1 { "" } else { "s" })),
    }
}

/// Loads the data received for a COPY FROM STDIN; returns the row count.
pub(crate) async fn finish_copy(db: &Database, copy: &CopyFrom, data: Vec<u8>) -> Result<u64, SqlError> {
    let format = CopyFormat {
        columns: copy.columns.clone(),
        header: copy.header,
        delimiter: copy.delimiter,
        null: copy.null.clone(),
    };
    Ok(db.copy_in(&copy.table, format, data).await?)
}

/// The columns of the rows `cmd` returns (also sent before it runs, when a
/// client asks to describe it); `None` for a plain command tag. Beside the code
/// that fills them, so the two cannot drift apart.
pub(crate) fn result_schema(cmd: &Command) -> Option<SchemaRef> {
    let fields = match cmd {
        Command::BackupDatabase { .. } => vec![Field::new("backup_timestamp", DataType::Utf8, false)],
        Command::BackupEstimate => int_fields(&["files_to_upload", "bytes_to_upload", "files_reused", "bytes_reused"]),
        Command::DropBackup { .. } => {
            let mut f = vec![Field::new("backup_timestamp", DataType::Utf8, false)];
            f.extend(int_fields(&["files_deleted", "bytes_freed"]));
            f
        }
        Command::RestoreTable(_) => {
            let mut f = vec![
                Field::new("table_name", DataType::Utf8, false),
                Field::new("backup_timestamp", DataType::Utf8, false),
            ];
            f.extend(int_fields(&["files", "rows", "bytes", "fetched_bytes"]));
            f
        }
        Command::VerifyBackup { .. } => {
            let mut f = vec![
                Field::new("backup_timestamp", DataType::Utf8, false),
                Field::new("status", DataType::Utf8, false),
            ];
            f.extend(int_fields(&["tables", "files", "bytes", "problems"]));
            f.push(Field::new("details", DataType::Utf8, false));
            f
        }
        Command::ShowSetting { name, .. } => vec![Field::new(*name, DataType::Utf8, false)],
        _ => return None,
    };
    Some(Arc::new(Schema::new(fields)))
}

fn int_fields(names: &[&str]) -> Vec<Field> {
    names.iter().map(|n| Field::new(*n, DataType::Int64, false)).collect()
}
