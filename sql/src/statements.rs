//! Recognising the statements DataFusion does not know, on the raw SQL text.
//!
//! We tokenize with sqlparser (so quoting and comments behave like SQL),
//! split a query string into statements, and turn ours into [`Command`]s.
//! Anything else is handed to DataFusion unchanged.

use datafusion::sql::sqlparser;
use sqlparser::ast::{BinaryOperator, Expr, Value};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer, Word};
use storage::{Column, ColumnType, PartitionBy};

use crate::error::SqlError;

/// A statement Strata executes itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    CreateTable(CreateTable),
    DropTable {
        name: String,
        if_exists: bool,
    },
    Truncate {
        name: String,
    },
    DropPartitionList {
        table: String,
        partitions: Vec<String>,
    },
    DropPartitionWhere {
        table: String,
        bounds: TimeBounds,
    },
    CopyFrom(CopyFrom),
    CheckpointCreate,
    CheckpointRelease,
    /// `BACKUP DATABASE [WAIT]`
    BackupDatabase {
        wait: bool,
    },
    /// `BACKUP DATABASE ESTIMATE`
    BackupEstimate,
    BackupAbort,
    /// `DROP BACKUP 'ts'`
    DropBackup {
        timestamp: String,
    },
    /// `RESTORE TABLE t FROM BACKUP 'ts'|LATEST [AS t2] [WHERE ...] [WITH (policy = 'fail'|'replace')]`
    RestoreTable(RestoreTable),
    /// `VERIFY BACKUP 'ts'|LATEST`
    VerifyBackup {
        /// `None` for LATEST.
        timestamp: Option<String>,
    },
    /// `SAVEPOINT name`, `RELEASE [SAVEPOINT] name`, `ROLLBACK [WORK | TRANSACTION]
    /// TO [SAVEPOINT] name`: accepted and ignored, as `BEGIN`/`COMMIT` are, because
    /// every statement commits on its own; clients nest transactions (psycopg's
    /// `conn.transaction()` inside one, SQLAlchemy's `begin_nested()`) and fail on
    /// an error here. The tag is the command's (`SAVEPOINT`, `RELEASE`, `ROLLBACK`).
    Savepoint {
        tag: &'static str,
    },
    /// `DEALLOCATE [PREPARE] name | ALL`: drops a prepared statement of the
    /// connection (`None`: all of them). psycopg sends it after a ROLLBACK;
    /// DataFusion would look for a SQL-level `PREPARE` instead and fail.
    Deallocate {
        name: Option<String>,
    },
    /// `SHOW server_version` and the like, answered with our PostgreSQL version
    /// (datafusion-postgres answers `datafusion 55.2.0 on datafusion-postgres 0.19.0`,
    /// which clients cannot parse).
    ShowSetting {
        name: &'static str,
        value: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestoreTable {
    pub table: String,
    /// `None` for LATEST.
    pub timestamp: Option<String>,
    pub target: String,
    pub replace: bool,
    pub bounds: Option<TimeBounds>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    pub name: String,
    pub if_not_exists: bool,
    pub columns: Vec<Column>,
    pub timestamp: Option<String>,
    pub partition_by: PartitionBy,
}

/// `COPY t [(cols)] FROM STDIN [WITH] (FORMAT csv|text, HEADER b, DELIMITER 'c', NULL 's')`.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyFrom {
    pub table: String,
    pub columns: Option<Vec<String>>,
    pub csv: bool,
    pub header: bool,
    pub delimiter: u8,
    pub null: String,
}

/// A time interval on a column, from `col >= a AND col < b` style predicates (micros).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TimeBounds {
    pub column: String,
    /// `(value, inclusive)`
    pub lower: Option<(i64, bool)>,
    pub upper: Option<(i64, bool)>,
}

impl TimeBounds {
    /// True if some instant of `[start, end)` satisfies the bounds.
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        let last = end.saturating_sub(1);
        let lower_ok = match self.lower {
            None => true,
            Some((v, true)) => last >= v,
            Some((v, false)) => last > v,
        };
        let upper_ok = match self.upper {
            None => true,
            Some((v, true)) => start <= v,
            Some((v, false)) => start < v,
        };
        lower_ok && upper_ok
    }

    /// True if every instant of `[start, end)` satisfies the bounds.
    pub fn covers(&self, start: i64, end: i64) -> bool {
        let lower_ok = match self.lower {
            None => true,
            Some((v, true)) => start >= v,
            Some((v, false)) => start > v,
        };
        let last = end.saturating_sub(1);
        let upper_ok = match self.upper {
            None => true,
            Some((v, true)) => last <= v,
            Some((v, false)) => last < v,
        };
        lower_ok && upper_ok
    }
}

/// One statement of a query string: ours, or SQL text for DataFusion.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Ours(Command),
    Sql(String),
}

fn syntax(msg: impl Into<String>) -> SqlError {
    SqlError::syntax(msg)
}

fn tokenize(sql: &str) -> Result<Vec<Token>, SqlError> {
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| syntax(e.to_string()))
}

/// Splits a query string into statements and recognises ours.
pub fn split_and_parse(sql: &str) -> Result<Vec<Parsed>, SqlError> {
    let tokens = tokenize(sql)?;
    let mut out = Vec::new();
    for stmt in tokens.split(|t| *t == Token::SemiColon) {
        let significant: Vec<&Token> = stmt.iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect();
        if significant.is_empty() {
            continue;
        }
        match parse_command(&significant)? {
            Some(cmd) => out.push(Parsed::Ours(cmd)),
            None => out.push(Parsed::Sql(stmt.iter().map(ToString::to_string).collect())),
        }
    }
    Ok(out)
}

/// Every form `parse_command` accepts after `BACKUP`, for the syntax hint.
const BACKUP_FORMS: &str = "BACKUP DATABASE [WAIT], BACKUP DATABASE ESTIMATE or BACKUP ABORT";
/// The `RESTORE TABLE` grammar `parse_restore_table` accepts, for the syntax hint.
const RESTORE_FORM: &str =
    "RESTORE TABLE t FROM BACKUP '<timestamp>' | LATEST [AS t2] [WHERE ...] [WITH (policy = 'fail' | 'replace')]";
/// The `VERIFY BACKUP` grammar, for the syntax hint.
const VERIFY_FORM: &str = "VERIFY BACKUP '<timestamp>' | LATEST";
/// Every form accepted after `CHECKPOINT`, for the syntax hint.
const CHECKPOINT_FORMS: &str = "CHECKPOINT CREATE or CHECKPOINT RELEASE";

/// Parses one statement's significant tokens; `None` if it is not one of ours.
pub fn parse_command(toks: &[&Token]) -> Result<Option<Command>, SqlError> {
    let mut c = Cursor { toks, pos: 0 };
    let cmd = if c.eat_words(&["CREATE", "TABLE"]) {
        Command::CreateTable(parse_create_table(&mut c)?)
    } else if c.eat_words(&["DROP", "BACKUP"]) {
        Command::DropBackup {
            timestamp: c.string("backup timestamp (as backups() shows it)")?,
        }
    } else if c.eat_words(&["DROP", "TABLE"]) {
        let if_exists = c.eat_words(&["IF", "EXISTS"]);
        let name = c.ident("table name")?;
        Command::DropTable { name, if_exists }
    } else if c.eat_word("TRUNCATE") {
        c.eat_word("TABLE");
        Command::Truncate {
            name: c.ident("table name")?,
        }
    } else if c.eat_words(&["ALTER", "TABLE"]) {
        let table = c.ident("table name")?;
        if !c.eat_words(&["DROP", "PARTITION"]) {
            return Err(syntax(
                "ALTER TABLE supports only DROP PARTITION LIST '...' or DROP PARTITION WHERE ...",
            ));
        }
        if c.eat_word("LIST") {
            let mut partitions = vec![c.string("partition name")?];
            while c.eat(&Token::Comma) {
                partitions.push(c.string("partition name")?);
            }
            Command::DropPartitionList { table, partitions }
        } else if c.eat_word("WHERE") {
            let bounds = where_bounds(&mut c, "DROP PARTITION WHERE")?;
            Command::DropPartitionWhere { table, bounds }
        } else {
            return Err(syntax("expected LIST or WHERE after DROP PARTITION"));
        }
    } else if c.eat_words(&["BACKUP", "DATABASE"]) {
        let cmd = if c.eat_word("ESTIMATE") {
            Command::BackupEstimate
        } else {
            Command::BackupDatabase {
                wait: c.eat_word("WAIT"),
            }
        };
        // A mistyped option (`BACKUP DATABASE ESTIMAT`) gets the list of forms.
        if let Some(t) = c.peek() {
            return Err(syntax(format!("expected {BACKUP_FORMS} but found '{t}'")));
        }
        cmd
    } else if c.eat_words(&["BACKUP", "ABORT"]) {
        Command::BackupAbort
    } else if c.eat_word("BACKUP") {
        return Err(syntax(format!("expected {BACKUP_FORMS}")));
    } else if c.eat_words(&["RESTORE", "TABLE"]) {
        Command::RestoreTable(parse_restore_table(&mut c)?)
    } else if c.eat_word("RESTORE") {
        return Err(syntax(format!(
            "expected {RESTORE_FORM} (a whole database is restored offline: `strata restore` or the _backup_restore trigger file)"
        )));
    } else if c.eat_words(&["VERIFY", "BACKUP"]) {
        Command::VerifyBackup {
            timestamp: backup_timestamp(&mut c)?,
        }
    } else if c.eat_word("VERIFY") {
        return Err(syntax(format!("expected {VERIFY_FORM}")));
    } else if c.eat_words(&["CHECKPOINT", "CREATE"]) {
        Command::CheckpointCreate
    } else if c.eat_words(&["CHECKPOINT", "RELEASE"]) {
        Command::CheckpointRelease
    } else if c.eat_word("CHECKPOINT") {
        return Err(syntax(format!("expected {CHECKPOINT_FORMS}")));
    } else if c.eat_word("SAVEPOINT") {
        c.ident("savepoint name")?;
        Command::Savepoint { tag: "SAVEPOINT" }
    } else if c.eat_word("RELEASE") {
        c.eat_word("SAVEPOINT");
        c.ident("savepoint name")?;
        Command::Savepoint { tag: "RELEASE" }
    } else if c.eat_word("ROLLBACK") {
        let _ = c.eat_word("WORK") || c.eat_word("TRANSACTION");
        if !c.eat_word("TO") {
            // A plain ROLLBACK ends the transaction: datafusion-postgres handles it.
            return Ok(None);
        }
        c.eat_word("SAVEPOINT");
        c.ident("savepoint name")?;
        Command::Savepoint { tag: "ROLLBACK" }
    } else if c.eat_word("DEALLOCATE") {
        c.eat_word("PREPARE");
        let name = if c.eat_word("ALL") {
            None
        } else {
            // Statement names are case-sensitive on the wire; quoted or not, keep them.
            match c.next() {
                Some(Token::Word(w)) => Some(w.value.clone()),
                other => {
                    return Err(syntax(format!(
                        "expected a prepared statement name or ALL but found {}",
                        describe(other)
                    )));
                }
            }
        };
        Command::Deallocate { name }
    } else if c.eat_word("SHOW") {
        match show_setting(&mut c) {
            Some(cmd) => cmd,
            None => return Ok(None),
        }
    } else if c.eat_word("COPY") {
        match parse_copy(&mut c)? {
            Some(copy) => Command::CopyFrom(copy),
            None => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    if let Some(t) = c.peek() {
        return Err(syntax(format!("unexpected '{t}' at the end of the statement")));
    }
    Ok(Some(cmd))
}

/// The settings `SHOW` answers from here rather than from datafusion-postgres.
fn show_setting(c: &mut Cursor<'_>) -> Option<Command> {
    let (name, value) = [
        ("server_version", crate::compat::PG_VERSION),
        ("server_version_num", crate::compat::PG_VERSION_NUM),
    ]
    .into_iter()
    .find(|(name, _)| c.word_at(0).is_some_and(|w| w.value.eq_ignore_ascii_case(name)) && c.toks.len() == c.pos + 1)?;
    c.pos += 1;
    Some(Command::ShowSetting { name, value })
}

struct Cursor<'a> {
    toks: &'a [&'a Token],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.toks.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<&'a Token> {
        let t = self.peek();
        self.pos += 1;
        t
    }

    fn rest(&self) -> &'a [&'a Token] {
        &self.toks[self.pos.min(self.toks.len())..]
    }

    fn word_at(&self, i: usize) -> Option<&'a Word> {
        match self.toks.get(self.pos + i)? {
            Token::Word(w) if w.quote_style.is_none() => Some(w),
            _ => None,
        }
    }

    fn eat_word(&mut self, kw: &str) -> bool {
        self.eat_words(&[kw])
    }

    fn eat_words(&mut self, kws: &[&str]) -> bool {
        let all = kws
            .iter()
            .enumerate()
            .all(|(i, kw)| self.word_at(i).is_some_and(|w| w.value.eq_ignore_ascii_case(kw)));
        if all {
            self.pos += kws.len();
        }
        all
    }

    fn eat(&mut self, t: &Token) -> bool {
        let yes = self.peek() == Some(t);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect(&mut self, t: &Token) -> Result<(), SqlError> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(syntax(format!("expected '{t}' but found {}", describe(self.peek()))))
        }
    }

    /// An identifier: unquoted ones are folded to lower case, as PostgreSQL does.
    fn ident(&mut self, what: &str) -> Result<String, SqlError> {
        match self.next() {
            Some(Token::Word(w)) if w.quote_style.is_some() => Ok(w.value.clone()),
            Some(Token::Word(w)) => Ok(w.value.to_ascii_lowercase()),
            other => Err(syntax(format!("expected {what} but found {}", describe(other)))),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, SqlError> {
        match self.next() {
            Some(Token::SingleQuotedString(s)) => Ok(s.clone()),
            other => Err(syntax(format!(
                "expected {what} as a quoted string but found {}",
                describe(other)
            ))),
        }
    }
}

fn describe(t: Option<&Token>) -> String {
    t.map_or("the end of the statement".to_string(), |t| format!("'{t}'"))
}

/// The time bounds of a `WHERE` condition running to the end of the statement or to a `WITH`.
fn where_bounds(c: &mut Cursor<'_>, what: &str) -> Result<TimeBounds, SqlError> {
    let rest = c.rest();
    let end = rest
        .iter()
        .position(|t| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("WITH")))
        .unwrap_or(rest.len());
    let text: String = rest[..end]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let expr = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| syntax(format!("{what}: {e}")))?;
    c.pos += end;
    time_bounds(&expr)
}

/// `'2024-08-24T12:34:56.789123Z'` or `LATEST` (`None`).
fn backup_timestamp(c: &mut Cursor<'_>) -> Result<Option<String>, SqlError> {
    if c.eat_word("LATEST") {
        return Ok(None);
    }
    c.string("backup timestamp (or LATEST)").map(Some)
}

fn parse_restore_table(c: &mut Cursor<'_>) -> Result<RestoreTable, SqlError> {
    let table = c.ident("table name")?;
    if !c.eat_words(&["FROM", "BACKUP"]) {
        return Err(syntax(format!(
            "expected FROM BACKUP '<timestamp>' | LATEST but found {} (the form is {RESTORE_FORM})",
            describe(c.peek())
        )));
    }
    let timestamp = backup_timestamp(c)?;
    let target = if c.eat_word("AS") {
        c.ident("target table name")?
    } else {
        table.clone()
    };
    let bounds = if c.eat_word("WHERE") {
        Some(where_bounds(c, "RESTORE TABLE ... WHERE")?)
    } else {
        None
    };
    let mut replace = false;
    if c.eat_word("WITH") {
        c.expect(&Token::LParen)?;
        let key = c.ident("option name")?;
        if key != "policy" {
            return Err(SqlError::unsupported(format!(
                "RESTORE TABLE option '{key}' is not supported (known: policy)"
            )));
        }
        c.expect(&Token::Eq)?;
        replace = match c.string("policy")?.to_ascii_lowercase().as_str() {
            "fail" => false,
            "replace" => true,
            other => {
                return Err(SqlError::invalid_value(format!(
                    "policy '{other}' is not one of 'fail', 'replace'"
                )));
            }
        };
        c.expect(&Token::RParen)?;
    }
    Ok(RestoreTable {
        table,
        timestamp,
        target,
        replace,
        bounds,
    })
}

fn parse_create_table(c: &mut Cursor<'_>) -> Result<CreateTable, SqlError> {
    let if_not_exists = c.eat_words(&["IF", "NOT", "EXISTS"]);
    let name = c.ident("table name")?;
    if c.eat_word("AS") {
        return Err(SqlError::unsupported(
            "CREATE TABLE ... AS SELECT is not supported; CREATE TABLE first, then INSERT INTO ... SELECT",
        ));
    }
    c.expect(&Token::LParen)?;
    let mut columns = Vec::new();
    loop {
        let col = c.ident("column name")?;
        let ty_word = c.ident("column type")?;
        let mut ty_name = ty_word.to_ascii_uppercase();
        if ty_name == "DOUBLE" {
            c.eat_word("PRECISION");
        }
        if c.eat(&Token::LParen) {
            // Length or precision, e.g. VARCHAR(32): accepted and ignored.
            while !c.eat(&Token::RParen) {
                if c.next().is_none() {
                    return Err(syntax("unclosed '(' in column type"));
                }
            }
        }
        if ty_name == "TIMESTAMP" && c.eat_words(&["WITHOUT", "TIME", "ZONE"]) {
            ty_name = "TIMESTAMP".into();
        }
        let ty = ColumnType::parse(&ty_name).ok_or_else(|| {
            SqlError::unsupported(format!(
                "column '{col}': unknown type {ty_word}; use TIMESTAMP, SYMBOL, VARCHAR, STRING, BOOLEAN, INT, LONG, BIGINT, FLOAT, DOUBLE or DATE"
            ))
        })?;
        columns.push(Column { name: col.clone(), ty });
        if c.eat(&Token::Comma) {
            continue;
        }
        if c.eat(&Token::RParen) {
            break;
        }
        return Err(syntax(format!(
            "column '{col}': expected ',' or ')' after the type but found {} (column constraints are not supported)",
            describe(c.peek())
        )));
    }
    let mut timestamp = None;
    if c.eat_word("TIMESTAMP") {
        c.expect(&Token::LParen)?;
        timestamp = Some(c.ident("designated timestamp column")?);
        c.expect(&Token::RParen)?;
    }
    let mut partition_by = PartitionBy::None;
    if c.eat_words(&["PARTITION", "BY"]) {
        let unit = c.ident("partition unit")?;
        partition_by = PartitionBy::parse(&unit).ok_or_else(|| {
            syntax(format!(
                "unknown PARTITION BY '{unit}': use HOUR, DAY, WEEK, MONTH, YEAR or NONE"
            ))
        })?;
    }
    Ok(CreateTable {
        name,
        if_not_exists,
        columns,
        timestamp,
        partition_by,
    })
}

/// Recognises `COPY t FROM STDIN ...`; other COPY forms go to DataFusion (which rejects them).
fn parse_copy(c: &mut Cursor<'_>) -> Result<Option<CopyFrom>, SqlError> {
    let table = c.ident("table name")?;
    let columns = if c.eat(&Token::LParen) {
        let mut cols = vec![c.ident("column name")?];
        while c.eat(&Token::Comma) {
            cols.push(c.ident("column name")?);
        }
        c.expect(&Token::RParen)?;
        Some(cols)
    } else {
        None
    };
    if !c.eat_words(&["FROM", "STDIN"]) {
        return Err(SqlError::unsupported(
            "only COPY ... FROM STDIN is supported (use psql's \\copy for files)",
        ));
    }
    let mut copy = CopyFrom {
        table,
        columns,
        csv: false,
        header: false,
        delimiter: b'\t',
        null: "\\N".into(),
    };
    let with = c.eat_word("WITH");
    if c.eat(&Token::LParen) {
        loop {
            let opt = c.ident("COPY option")?;
            apply_copy_option(&mut copy, &opt, c)?;
            if c.eat(&Token::RParen) {
                break;
            }
            c.expect(&Token::Comma)?;
        }
    } else if with || c.peek().is_some() {
        // Pre-9.0 syntax: WITH CSV HEADER DELIMITER ',' NULL ''
        while c.peek().is_some() {
            let opt = c.ident("COPY option")?;
            apply_copy_option(&mut copy, &opt, c)?;
        }
    }
    Ok(Some(copy))
}

fn apply_copy_option(copy: &mut CopyFrom, opt: &str, c: &mut Cursor<'_>) -> Result<(), SqlError> {
    match opt.to_ascii_lowercase().as_str() {
        "format" => {
            let f = c.ident("format")?;
            match f.as_str() {
                "csv" => set_csv(copy),
                "text" => {}
                other => {
                    return Err(SqlError::unsupported(format!(
                        "COPY format '{other}' is not supported; use csv or text"
                    )));
                }
            }
        }
        "csv" => set_csv(copy),
        "header" => {
            copy.header = match c.peek() {
                Some(Token::Word(w))
                    if ["true", "on", "false", "off"].contains(&w.value.to_ascii_lowercase().as_str()) =>
                {
                    c.pos += 1;
                    matches!(w.value.to_ascii_lowercase().as_str(), "true" | "on")
                }
                Some(Token::Number(n, _)) => {
                    c.pos += 1;
                    n != "0"
                }
                _ => true,
            }
        }
        "delimiter" => {
            let d = c.string("delimiter")?;
            copy.delimiter = match d.as_bytes() {
                [b] => *b,
                _ => return Err(syntax("COPY delimiter must be a single one-byte character")),
            };
        }
        "null" => copy.null = c.string("NULL string")?,
        other => return Err(SqlError::unsupported(format!("COPY option '{other}' is not supported"))),
    }
    Ok(())
}

fn set_csv(copy: &mut CopyFrom) {
    copy.csv = true;
    if copy.delimiter == b'\t' {
        copy.delimiter = b',';
    }
    if copy.null == "\\N" {
        copy.null = String::new();
    }
}

/// Turns `col >= 'a' AND col < 'b'` (or BETWEEN) into bounds; anything else is refused.
fn time_bounds(expr: &Expr) -> Result<TimeBounds, SqlError> {
    let mut b = TimeBounds::default();
    add_bounds(expr, &mut b)?;
    Ok(b)
}

fn add_bounds(expr: &Expr, b: &mut TimeBounds) -> Result<(), SqlError> {
    let unsupported = || {
        SqlError::unsupported(
            "WHERE on partitions supports comparisons of the designated timestamp with timestamp literals \
             (<, <=, >, >=, BETWEEN), joined by AND",
        )
    };
    match expr {
        Expr::Nested(e) => add_bounds(e, b),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            add_bounds(left, b)?;
            add_bounds(right, b)
        }
        Expr::BinaryOp { left, op, right } => {
            let (col, lit, op) = match (column_name(left), column_name(right)) {
                (Some(c), None) => (c, timestamp_literal(right)?, op.clone()),
                (None, Some(c)) => (c, timestamp_literal(left)?, flip(op).ok_or_else(unsupported)?),
                _ => return Err(unsupported()),
            };
            set_column(b, col)?;
            match op {
                BinaryOperator::Lt => tighten_upper(b, lit, false),
                BinaryOperator::LtEq => tighten_upper(b, lit, true),
                BinaryOperator::Gt => tighten_lower(b, lit, false),
                BinaryOperator::GtEq => tighten_lower(b, lit, true),
                _ => return Err(unsupported()),
            }
            Ok(())
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } => {
            set_column(b, column_name(expr).ok_or_else(unsupported)?)?;
            tighten_lower(b, timestamp_literal(low)?, true);
            tighten_upper(b, timestamp_literal(high)?, true);
            Ok(())
        }
        _ => Err(unsupported()),
    }
}

fn flip(op: &BinaryOperator) -> Option<BinaryOperator> {
    Some(match op {
        BinaryOperator::Lt => BinaryOperator::Gt,
        BinaryOperator::LtEq => BinaryOperator::GtEq,
        BinaryOperator::Gt => BinaryOperator::Lt,
        BinaryOperator::GtEq => BinaryOperator::LtEq,
        _ => return None,
    })
}

fn set_column(b: &mut TimeBounds, col: String) -> Result<(), SqlError> {
    if !b.column.is_empty() && b.column != col {
        return Err(SqlError::unsupported("WHERE on partitions may compare only one column"));
    }
    b.column = col;
    Ok(())
}

fn tighten_lower(b: &mut TimeBounds, v: i64, inclusive: bool) {
    if b.lower.is_none_or(|(cur, _)| v > cur) {
        b.lower = Some((v, inclusive));
    }
}

fn tighten_upper(b: &mut TimeBounds, v: i64, inclusive: bool) {
    if b.upper.is_none_or(|(cur, _)| v < cur) {
        b.upper = Some((v, inclusive));
    }
}

fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) if id.quote_style.is_some() => Some(id.value.clone()),
        Expr::Identifier(id) => Some(id.value.to_ascii_lowercase()),
        _ => None,
    }
}

fn timestamp_literal(e: &Expr) -> Result<i64, SqlError> {
    let text = match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.clone(),
            _ => None.ok_or_else(|| SqlError::unsupported("expected a timestamp literal such as '2024-01-15'"))?,
        },
        Expr::TypedString(ts) => match &ts.value.value {
            Value::SingleQuotedString(s) => s.clone(),
            _ => None.ok_or_else(|| SqlError::unsupported("expected a timestamp literal such as '2024-01-15'"))?,
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => return timestamp_literal(expr),
        _ => {
            return Err(SqlError::unsupported(
                "expected a timestamp literal such as '2024-01-15'",
            ));
        }
    };
    parse_timestamp_micros(&text).ok_or_else(|| SqlError::invalid_value(format!("'{text}' is not a timestamp")))
}

/// Parses `2024-01-15`, `2024-01-15 10:00:00[.ffffff]`, `2024-01-15T10:00:00[.ffffff][Z]` as UTC micros.
pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    let s = s.trim_end_matches('Z');
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Command {
        match split_and_parse(sql).unwrap().remove(0) {
            Parsed::Ours(c) => c,
            Parsed::Sql(s) => panic!("not ours: {s}"),
        }
    }

    #[test]
    fn create_table_with_questdb_suffix() {
        let Command::CreateTable(ct) = one(
            "CREATE TABLE IF NOT EXISTS Trades (ts TIMESTAMP, symbol SYMBOL, price DOUBLE, amount DOUBLE PRECISION, note VARCHAR(20)) \
             timestamp(ts) PARTITION BY day;",
        ) else {
            panic!()
        };
        assert_eq!(ct.name, "trades");
        assert!(ct.if_not_exists);
        assert_eq!(ct.timestamp.as_deref(), Some("ts"));
        assert_eq!(ct.partition_by, PartitionBy::Day);
        let types: Vec<ColumnType> = ct.columns.iter().map(|c| c.ty).collect();
        use ColumnType::*;
        assert_eq!(types, vec![Timestamp, Symbol, Double, Double, Varchar]);
    }

    #[test]
    fn create_table_errors() {
        for bad in [
            "CREATE TABLE t (a BLOB)",
            "CREATE TABLE t (a INT NOT NULL)",
            "CREATE TABLE t (ts TIMESTAMP) TIMESTAMP(ts) PARTITION BY FORTNIGHT",
            "CREATE TABLE t (a INT) extra",
            "CREATE TABLE t AS SELECT 1",
            "CREATE TABLE t (a INT",
        ] {
            assert!(split_and_parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_statements() {
        assert_eq!(
            one("drop table if exists x"),
            Command::DropTable {
                name: "x".into(),
                if_exists: true
            }
        );
        assert_eq!(one("TRUNCATE TABLE x"), Command::Truncate { name: "x".into() });
        assert_eq!(
            one("ALTER TABLE t DROP PARTITION LIST '2024-01-15', '2024-01-16'"),
            Command::DropPartitionList {
                table: "t".into(),
                partitions: vec!["2024-01-15".into(), "2024-01-16".into()]
            }
        );
        let Command::DropPartitionWhere { bounds, .. } = one("ALTER TABLE t DROP PARTITION WHERE ts < '2024-01-16'")
        else {
            panic!()
        };
        assert_eq!(bounds.column, "ts");
        assert_eq!(
            bounds.upper,
            Some((parse_timestamp_micros("2024-01-16").unwrap(), false))
        );
        assert!(split_and_parse("ALTER TABLE t DROP PARTITION WHERE price > 3").is_err());
    }

    #[test]
    fn bounds_cover_whole_partitions_only() {
        let day = 86_400_000_000i64;
        let b = TimeBounds {
            column: "ts".into(),
            lower: None,
            upper: Some((day + day / 2, false)),
        };
        assert!(b.covers(0, day));
        assert!(!b.covers(day, 2 * day));
    }

    #[test]
    fn copy_forms() {
        let Command::CopyFrom(c) = one("COPY t FROM STDIN WITH (FORMAT csv, HEADER true)") else {
            panic!()
        };
        assert!(c.csv && c.header && c.delimiter == b',');
        let Command::CopyFrom(c) = one("copy t (a, b) from stdin") else {
            panic!()
        };
        assert!(!c.csv && c.delimiter == b'\t');
        assert_eq!(c.columns, Some(vec!["a".into(), "b".into()]));
        let Command::CopyFrom(c) = one("COPY t FROM STDIN WITH CSV HEADER DELIMITER ';'") else {
            panic!()
        };
        assert!(c.csv && c.header && c.delimiter == b';');
        assert!(split_and_parse("COPY t FROM '/etc/passwd'").is_err());
    }

    #[test]
    fn backup_statements() {
        assert_eq!(one("BACKUP DATABASE;"), Command::BackupDatabase { wait: false });
        assert_eq!(one("backup database wait"), Command::BackupDatabase { wait: true });
        assert_eq!(one("BACKUP ABORT"), Command::BackupAbort);
        assert_eq!(
            one("DROP BACKUP '2024-08-24T12:34:56.789123Z'"),
            Command::DropBackup {
                timestamp: "2024-08-24T12:34:56.789123Z".into()
            }
        );
        assert!(split_and_parse("DROP BACKUP LATEST").is_err());
        assert_eq!(one("BACKUP DATABASE ESTIMATE"), Command::BackupEstimate);
        assert!(split_and_parse("BACKUP TABLE t").is_err());
        assert!(split_and_parse("BACKUP DATABASE now").is_err());
    }

    /// The message of the syntax error `sql` gives.
    fn syntax_hint(sql: &str) -> String {
        let e = split_and_parse(sql).expect_err(sql);
        assert_eq!(e.code, crate::error::sqlstate::SYNTAX_ERROR, "{sql}");
        e.message
    }

    /// Each hint names every form the parser accepts, and each form it names parses.
    #[test]
    fn syntax_hints_list_every_accepted_form() {
        for bad in [
            "BACKUP",
            "BACKUP TABLE t",
            "BACKUP DATABASE now",
            "BACKUP DATABASE ESTIMAT",
        ] {
            let hint = syntax_hint(bad);
            for form in ["BACKUP DATABASE [WAIT],", "BACKUP DATABASE ESTIMATE", "BACKUP ABORT"] {
                assert!(hint.contains(form), "{bad}: {hint}");
            }
        }
        for form in [
            "BACKUP DATABASE",
            "BACKUP DATABASE WAIT",
            "BACKUP DATABASE ESTIMATE",
            "BACKUP ABORT",
        ] {
            one(form);
        }

        for bad in ["CHECKPOINT", "CHECKPOINT START"] {
            let hint = syntax_hint(bad);
            assert!(
                hint.contains("CHECKPOINT CREATE or CHECKPOINT RELEASE"),
                "{bad}: {hint}"
            );
        }

        for bad in [
            "RESTORE t",
            "RESTORE DATABASE",
            "RESTORE TABLE t",
            "RESTORE TABLE t BACKUP LATEST",
        ] {
            let hint = syntax_hint(bad);
            for part in [
                "RESTORE TABLE t FROM BACKUP '<timestamp>' | LATEST",
                "[AS t2]",
                "[WHERE ...]",
                "policy = 'fail' | 'replace'",
            ] {
                assert!(hint.contains(part), "{bad}: {hint}");
            }
        }
        for form in [
            "RESTORE TABLE t FROM BACKUP '2024-08-24T12:34:56.789123Z'",
            "RESTORE TABLE t FROM BACKUP LATEST AS t2 WHERE ts < '2024-06-01' WITH (policy = 'fail')",
            "RESTORE TABLE t FROM BACKUP LATEST WITH (policy = 'replace')",
        ] {
            one(form);
        }

        for bad in ["VERIFY", "VERIFY LATEST"] {
            let hint = syntax_hint(bad);
            assert!(hint.contains("VERIFY BACKUP '<timestamp>' | LATEST"), "{bad}: {hint}");
        }
        one("VERIFY BACKUP LATEST");
        one("VERIFY BACKUP '2024-08-24T12:34:56.789123Z'");
    }

    #[test]
    fn savepoints_are_ours_plain_rollback_is_not() {
        for (sql, tag) in [
            ("SAVEPOINT \"_pg3_1\"", "SAVEPOINT"),
            ("savepoint sa_savepoint_1", "SAVEPOINT"),
            ("RELEASE \"_pg3_1\"", "RELEASE"),
            ("RELEASE SAVEPOINT sp", "RELEASE"),
            ("ROLLBACK TO \"_pg3_1\"", "ROLLBACK"),
            ("ROLLBACK TO SAVEPOINT sp", "ROLLBACK"),
            ("rollback work to savepoint sp", "ROLLBACK"),
            ("ROLLBACK TRANSACTION TO sp", "ROLLBACK"),
        ] {
            assert_eq!(one(sql), Command::Savepoint { tag }, "{sql}");
        }
        for other in ["ROLLBACK", "rollback work", "ROLLBACK TRANSACTION"] {
            assert!(
                matches!(split_and_parse(other).unwrap().as_slice(), [Parsed::Sql(_)]),
                "{other}"
            );
        }
        for bad in ["SAVEPOINT", "RELEASE", "ROLLBACK TO", "SAVEPOINT a b"] {
            assert!(split_and_parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deallocate_forms() {
        assert_eq!(one("DEALLOCATE ALL"), Command::Deallocate { name: None });
        assert_eq!(one("deallocate prepare all"), Command::Deallocate { name: None });
        assert_eq!(
            one("DEALLOCATE _pg3_0"),
            Command::Deallocate {
                name: Some("_pg3_0".into())
            }
        );
        assert_eq!(
            one("DEALLOCATE PREPARE \"S_1\""),
            Command::Deallocate {
                name: Some("S_1".into())
            }
        );
        assert!(split_and_parse("DEALLOCATE").is_err());
        assert!(split_and_parse("DEALLOCATE a b").is_err());
    }

    #[test]
    fn show_server_version_is_ours_other_settings_are_not() {
        assert_eq!(
            one("SHOW server_version"),
            Command::ShowSetting {
                name: "server_version",
                value: crate::compat::PG_VERSION
            }
        );
        assert_eq!(
            one("show SERVER_VERSION_NUM;"),
            Command::ShowSetting {
                name: "server_version_num",
                value: crate::compat::PG_VERSION_NUM
            }
        );
        for other in ["SHOW search_path", "SHOW ALL", "SHOW server_version extra", "SHOW"] {
            assert!(
                matches!(split_and_parse(other).unwrap().as_slice(), [Parsed::Sql(_)]),
                "{other}"
            );
        }
    }

    #[test]
    fn checkpoint_statements() {
        assert_eq!(one("checkpoint create;"), Command::CheckpointCreate);
        assert_eq!(one("CHECKPOINT RELEASE"), Command::CheckpointRelease);
        assert!(split_and_parse("CHECKPOINT").is_err());
        assert!(split_and_parse("CHECKPOINT CREATE now").is_err());
    }

    #[test]
    fn splits_and_passes_through() {
        let parts = split_and_parse("select 1; TRUNCATE t; select ';'").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], Parsed::Sql("select 1".into()));
        assert!(matches!(parts[1], Parsed::Ours(Command::Truncate { .. })));
        assert_eq!(parts[2], Parsed::Sql(" select ';'".into()));
    }
}
