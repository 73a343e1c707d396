//! What a `cormorant serve` connection runs: datafusion-postgres's handlers (simple and
//! extended query protocol, pg_catalog, SET/SHOW, cursors, transactions) with Cormorant's SQL
//! in front — `VERSION AS OF` / `TIMESTAMP AS OF` resolved before the PostgreSQL parser sees
//! the text (it cannot parse them) — and nothing that writes.
//!
//! Invariants:
//! - read-only twice over: a hook refuses every statement but queries, EXPLAIN, SET/SHOW,
//!   transactions and cursors (SQLSTATE 25006), and every extended-protocol plan is verified
//!   with DDL and DML disallowed;
//! - a named prepared statement is planned again at each execution, so it sees the commits
//!   made since it was prepared (psycopg prepares a statement after five executions);
//! - the lake schema answers table lookups at their latest version ([`LakeSchema`]).
//!
//! [`LakeSchema`]: crate::query::lake_schema::LakeSchema

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{FieldInfo, Response};
use datafusion_postgres::pgwire::api::stmt::{QueryParser, StoredStatement};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, Type};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::{DfSessionService, Parser};

use crate::query::lake_schema::LakeSchema;

/// datafusion-postgres's statement type (its cursor hook downcasts the portal store to it).
type DfStatement = (String, Option<(Statement, LogicalPlan)>);

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

/// Resolves time travel in `sql` (registering the versions it names) and refreshes the table
/// list when a catalog query may list tables.
async fn prepare(ctx: &SessionContext, schema: &LakeSchema, sql: &str) -> PgWireResult<String> {
    let lower = sql.to_ascii_lowercase();
    let lists_tables = ["pg_catalog", "information_schema", "pg_class"]
        .iter()
        .any(|c| lower.contains(c));
    if lists_tables && let Err(e) = schema.refresh_names().await {
        tracing::warn!(error = %e, "could not list the lake's tables");
    }
    if !lower.contains(" as of") {
        return Ok(sql.to_string());
    }
    crate::query::prepare_time_travel(ctx, sql)
        .await
        .map_err(|e| user_error("42P01", format!("{e:#}")))
}

/// Refuses plans that would write (INSERT through a Delta provider, CREATE/DROP, COPY TO).
fn verify_read_only(plan: &LogicalPlan) -> PgWireResult<()> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .verify_plan(plan)
        .map_err(|e| user_error("25006", format!("cormorant serve is read-only: {e}")))
}

/// The statements a read-only server runs.
fn allowed(statement: &Statement) -> bool {
    match statement {
        Statement::Query(q) => !matches!(q.body.as_ref(), SetExpr::Select(s) if s.into.is_some()),
        Statement::Explain { statement, .. } => allowed(statement),
        Statement::Set(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowStatus { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. } => true,
        _ => false,
    }
}

fn refused(statement: &Statement) -> PgWireError {
    let verb: String = statement
        .to_string()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    user_error(
        "25006",
        format!("cormorant serve is read-only: {verb} is not allowed (the worker writes the tables)"),
    )
}

/// First of the query hooks: refuses what a read-only server must not run.
pub struct ReadOnlyHook;

#[async_trait]
impl QueryHook for ReadOnlyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        (!allowed(statement)).then(|| Err(refused(statement)))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        (!allowed(statement)).then(|| Err(refused(statement)))
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

/// The extended protocol's parser: time travel resolved, plans verified read-only.
pub struct CormorantParser {
    inner: Arc<Parser>,
    ctx: Arc<SessionContext>,
    schema: Arc<LakeSchema>,
}

#[async_trait]
impl QueryParser for CormorantParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<DfStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = prepare(&self.ctx, &self.schema, sql).await?;
        let parsed = self.inner.parse_sql(client, &sql, types).await?;
        if let Some((_, Some((_, plan)))) = &parsed {
            verify_read_only(plan)?;
        }
        Ok(parsed)
    }

    fn get_parameter_types(&self, stmt: &DfStatement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(&self, stmt: &DfStatement, column_format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(stmt, column_format)
    }
}

/// One connection's query handlers (simple and extended) over its own session.
pub struct CormorantService {
    inner: DfSessionService,
    parser: Arc<CormorantParser>,
    ctx: Arc<SessionContext>,
    schema: Arc<LakeSchema>,
}

impl CormorantService {
    pub fn new(ctx: Arc<SessionContext>, schema: Arc<LakeSchema>) -> Self {
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ReadOnlyHook),
            Arc::new(datafusion_postgres::hooks::cursor::CursorStatementHook),
            Arc::new(datafusion_postgres::hooks::set_show::SetShowHook),
            Arc::new(datafusion_postgres::hooks::transactions::TransactionStatementHook),
        ];
        let inner = DfSessionService::new_with_hooks(ctx.clone(), hooks);
        let parser = Arc::new(CormorantParser {
            inner: inner.query_parser(),
            ctx: ctx.clone(),
            schema: schema.clone(),
        });
        Self {
            inner,
            parser,
            ctx,
            schema,
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for CormorantService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = prepare(&self.ctx, &self.schema, query).await?;
        SimpleQueryHandler::do_query(&self.inner, client, &sql).await
    }
}

#[async_trait]
impl ExtendedQueryHandler for CormorantService {
    type Statement = DfStatement;
    type QueryParser = CormorantParser;

    fn query_parser(&self) -> Arc<CormorantParser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<DfStatement>, max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let stored = &portal.statement;
        if stored.id.is_empty() || stored.id == DEFAULT_NAME {
            // an unnamed statement was planned just now, by its Parse
            return ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows).await;
        }
        // a named statement's plan holds the table versions of its Parse: plan it again
        let text = stored.statement.0.clone();
        let Some(fresh) = self.parser.parse_sql(&*client, &text, &stored.parameter_types).await? else {
            return Ok(Response::EmptyQuery);
        };
        let statement = Arc::new(StoredStatement::new(
            stored.id.clone(),
            fresh,
            stored.parameter_types.clone(),
        ));
        let mut replanned = Portal::new_cursor(portal.name.clone(), statement);
        replanned.parameter_format = portal.parameter_format.clone();
        replanned.parameters = portal.parameters.clone();
        replanned.result_column_format = portal.result_column_format.clone();
        ExtendedQueryHandler::do_query(&self.inner, client, &replanned, max_rows).await
    }
}
