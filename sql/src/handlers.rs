//! pgwire handlers: our statements first, everything else to datafusion-postgres.
//!
//! Both query protocols recognise our statements on the raw text (sqlparser
//! cannot parse them), run them through [`crate::execute`], and hand anything
//! else to `DfSessionService`. The extended protocol's statement type stays
//! exactly datafusion-postgres' `(String, Option<(Statement, LogicalPlan)>)`,
//! because its hooks downcast the portal store to it.
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser;
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::{DfSessionService, Parser as DfParser};
use engine::Database;
use futures::{Sink, SinkExt};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::response::NoticeResponse;

use crate::auth::Startup;
use crate::error::SqlError;
use crate::execute::{Outcome, execute, finish_copy};
use crate::readonly::{self, ReadonlyUser};
use crate::statements::{Command, CopyFrom, Parsed, split_and_parse};

/// datafusion-postgres' statement type (see module doc).
pub(crate) type DfStatement = (String, Option<(sqlparser::ast::Statement, LogicalPlan)>);

/// The per-connection COPY in progress, kept in the client's session extensions.
#[derive(Debug, Default)]
struct CopyState(Mutex<Option<(CopyFrom, Vec<u8>)>>);

pub(crate) struct Service {
    db: Arc<Database>,
    inner: Arc<DfSessionService>,
    parser: Arc<WrapParser>,
    readonly: ReadonlyUser,
}

impl Service {
    pub(crate) fn new(db: Arc<Database>, readonly: ReadonlyUser) -> Self {
        let inner = Arc::new(DfSessionService::new(db.context()));
        let parser = Arc::new(WrapParser {
            inner: <DfSessionService as ExtendedQueryHandler>::query_parser(&inner),
            readonly: readonly.clone(),
        });
        Self {
            db,
            inner,
            parser,
            readonly,
        }
    }

    async fn run<C>(&self, client: &mut C, cmd: &Command, format: &Format) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(user) = self.readonly.of(client) {
            readonly::check_command(user, cmd).map_err(SqlError::into_pg)?;
        }
        if let Command::Deallocate { name: Some(name) } = cmd {
            if client.portal_store().get_statement(name).is_none() {
                return Err(SqlError::new(
                    crate::error::sqlstate::INVALID_SQL_STATEMENT_NAME,
                    format!("prepared statement \"{name}\" does not exist"),
                )
                .into_pg());
            }
            client.portal_store().rm_statement(name);
        }
        // DEALLOCATE ALL leaves them: pgwire's store cannot list them, and they go
        // with the connection (clients name each new one afresh, and a Parse
        // under a taken name replaces it).
        match execute(&self.db, cmd).await.map_err(SqlError::into_pg)? {
            Outcome::Done { tag, notice } => {
                if let Some(n) = notice {
                    send_notice(client, n).await?;
                }
                Ok(Response::Execution(Tag::new(tag)))
            }
            Outcome::Rows { tag, batch } => {
                let df = self
                    .db
                    .context()
                    .read_batch(batch)
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                let mut resp = encode_dataframe(df, format, None).await?;
                resp.set_command_tag(tag);
                Ok(Response::Query(resp))
            }
            Outcome::CopyIn { columns } => {
                let Command::CopyFrom(copy) = cmd else {
                    return Err(SqlError::new(
                        crate::error::sqlstate::INTERNAL_ERROR,
                        "COPY outcome for another command",
                    )
                    .into_pg());
                };
                let state = client.session_extensions().get_or_insert_with(CopyState::default);
                *state.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((copy.clone(), Vec::new()));
                Ok(Response::CopyIn(CopyResponse::new(
                    0,
                    columns,
                    futures::stream::empty(),
                )))
            }
        }
    }
}

pub(crate) async fn send_notice<C>(client: &mut C, message: String) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let info = ErrorInfo::new("NOTICE".into(), "00000".into(), message);
    client
        .send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(info)))
        .await?;
    Ok(())
}

/// The client-facing form of any error (SQLSTATEs decided in `SqlError`).
pub(crate) fn to_error_info(e: PgWireError) -> ErrorInfo {
    match e {
        PgWireError::UserError(info) => *info,
        PgWireError::ApiError(inner) => {
            let sql = if let Some(df) = inner.downcast_ref::<datafusion::error::DataFusionError>() {
                SqlError::from_datafusion(df)
            } else if inner.is::<sqlparser::parser::ParserError>() {
                SqlError::syntax(inner.to_string())
            } else {
                SqlError::new(crate::error::sqlstate::INTERNAL_ERROR, inner.to_string())
            };
            ErrorInfo::new("ERROR".into(), sql.code.into(), sql.message)
        }
        other => ErrorInfo::new(
            "ERROR".into(),
            crate::error::sqlstate::INTERNAL_ERROR.into(),
            other.to_string(),
        ),
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let parsed = split_and_parse(query).map_err(SqlError::into_pg)?;
        let mut responses = Vec::new();
        for stmt in parsed {
            // Stop at the first failure, as PostgreSQL does, keeping earlier results.
            let result = match &stmt {
                Parsed::Ours(cmd) => self.run(client, cmd, &Format::UnifiedText).await.map(|r| vec![r]),
                Parsed::Sql(text) => match self.readonly.of(client).map(|user| readonly::check_sql(user, text)) {
                    Some(Err(refused)) => Err(refused.into_pg()),
                    _ => <DfSessionService as SimpleQueryHandler>::do_query(&self.inner, client, text).await,
                },
            };
            match result {
                Ok(rs) => responses.extend(rs),
                Err(e) => {
                    responses.push(Response::Error(Box::new(to_error_info(e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

pub(crate) struct WrapParser {
    inner: Arc<DfParser>,
    readonly: ReadonlyUser,
}

/// Our command, if `sql` is exactly one of our statements.
fn single_command(sql: &str) -> Option<Command> {
    match split_and_parse(sql).ok()?.as_slice() {
        [Parsed::Ours(cmd)] => Some(cmd.clone()),
        _ => None,
    }
}

#[async_trait]
impl QueryParser for WrapParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        match split_and_parse(sql) {
            Ok(parts) if matches!(parts.as_slice(), [Parsed::Ours(_)]) => Ok(Some((sql.to_string(), None))),
            Err(e) => Err(e.into_pg()),
            Ok(_) => {
                if let Some(user) = self.readonly.of(client) {
                    readonly::check_sql(user, sql).map_err(SqlError::into_pg)?;
                }
                self.inner.parse_sql(client, sql, types).await
            }
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        if stmt.1.is_none() && single_command(&stmt.0).is_some() {
            return Ok(Vec::new());
        }
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        if stmt.1.is_none()
            && let Some(cmd) = single_command(&stmt.0)
        {
            return match crate::execute::result_schema(&cmd) {
                Some(schema) => arrow_schema_to_pg_fields(&schema, column_format.unwrap_or(&Format::UnifiedText), None),
                None => Ok(Vec::new()),
            };
        }
        self.inner.get_result_schema(stmt, column_format)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = DfStatement;
    type QueryParser = WrapParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (text, plan) = &portal.statement.statement;
        if plan.is_none()
            && let Some(cmd) = single_command(text)
        {
            return self.run(client, &cmd, &portal.result_column_format).await;
        }
        <DfSessionService as ExtendedQueryHandler>::do_query(&self.inner, client, portal, max_rows).await
    }
}

/// Receives COPY FROM STDIN data for the command recorded by `Service::run`.
pub(crate) struct Copier {
    db: Arc<Database>,
}

/// COPY data larger than this is refused rather than exhausting memory.
const MAX_COPY_BYTES: usize = 1 << 30;

#[async_trait]
impl CopyHandler for Copier {
    async fn on_copy_data<C>(&self, client: &mut C, data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = client.session_extensions().get_or_insert_with(CopyState::default);
        let mut guard = state.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some((_, buf)) = guard.as_mut() else {
            return Err(SqlError::new("08P01", "COPY data without a COPY command").into_pg());
        };
        if buf.len() + data.data.len() > MAX_COPY_BYTES {
            *guard = None;
            return Err(SqlError::new("54000", "COPY data exceeds 1 GiB; split the file into smaller loads").into_pg());
        }
        buf.extend_from_slice(&data.data);
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = client.session_extensions().get_or_insert_with(CopyState::default);
        let pending = state.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((copy, data)) = pending else {
            return Err(SqlError::new("08P01", "COPY done without a COPY command").into_pg());
        };
        let rows = finish_copy(&self.db, &copy, data).await.map_err(SqlError::into_pg)?;
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(rows as usize).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(state) = client.session_extensions().get::<CopyState>() {
            state.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        SqlError::new("57014", format!("COPY from stdin failed: {}", fail.message)).into_pg()
    }
}

/// Gives every error that reaches the client its proper SQLSTATE.
pub(crate) struct Errors;

impl ErrorHandler for Errors {
    fn on_error<C: ClientInfo>(&self, _client: &C, error: &mut PgWireError) {
        if matches!(error, PgWireError::ApiError(_)) {
            let taken = std::mem::replace(error, PgWireError::InvalidPassword(String::new()));
            *error = PgWireError::UserError(Box::new(to_error_info(taken)));
        }
    }
}

/// Everything pgwire asks for, per connection.
pub(crate) struct Handlers {
    pub(crate) service: Arc<Service>,
    pub(crate) copier: Arc<Copier>,
    pub(crate) startup: crate::auth::Auth,
    pub(crate) connections: Arc<ConnectionManager>,
    pub(crate) cancel: Arc<DefaultCancelHandler>,
}

impl Handlers {
    pub(crate) fn new(db: Arc<Database>, startup: crate::auth::Auth, readonly: ReadonlyUser) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        Self {
            service: Arc::new(Service::new(db.clone(), readonly)),
            copier: Arc::new(Copier { db }),
            startup,
            cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
            connections,
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::new(Startup::new(&self.startup, self.connections.clone()))
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.copier.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(Errors)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}
