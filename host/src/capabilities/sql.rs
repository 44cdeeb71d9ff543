//! SQL databases: PostgreSQL through a `deadpool-postgres` pool of
//! `tokio-postgres` connections, or an embedded SQLite file through
//! `rusqlite`. Both take positional parameters `$1`, `$2`, …, cache prepared
//! statements per connection, and cancel a statement still running at the
//! caller's deadline.

use super::CapabilityError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::{StreamExt, pin_mut};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// Most rows a query may return.
pub const MAX_ROWS: usize = 10_000;
/// Most bytes of values a query may return.
pub const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;

/// A parameter or a column value.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    /// SQL `NULL`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (any SQL integer type, as 64 bits).
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Text(String),
    /// Binary data.
    Bytes(Vec<u8>),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
}

impl SqlValue {
    fn kind(&self) -> &'static str {
        match self {
            SqlValue::Null => "null",
            SqlValue::Bool(_) => "boolean",
            SqlValue::Int(_) => "int",
            SqlValue::Float(_) => "float",
            SqlValue::Text(_) => "text",
            SqlValue::Bytes(_) => "bytes",
            SqlValue::Timestamp(_) => "timestamp",
        }
    }

    /// What the value counts against [`MAX_RESULT_BYTES`].
    fn size(&self) -> usize {
        match self {
            SqlValue::Text(s) => s.len() + 8,
            SqlValue::Bytes(b) => b.len() + 8,
            _ => 8,
        }
    }
}

/// The rows a query returned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SqlRows {
    /// The column names, in order.
    pub columns: Vec<String>,
    /// Each row's values, in column order.
    pub rows: Vec<Vec<SqlValue>>,
}

/// Collects rows up to the limits.
#[derive(Default)]
struct RowCollector {
    rows: Vec<Vec<SqlValue>>,
    bytes: usize,
}

impl RowCollector {
    fn push(&mut self, row: Vec<SqlValue>) -> Result<(), CapabilityError> {
        self.bytes += row.iter().map(SqlValue::size).sum::<usize>();
        if self.rows.len() == MAX_ROWS || self.bytes > MAX_RESULT_BYTES {
            return Err(CapabilityError::Limit(format!(
                "results are limited to {MAX_ROWS} rows and {MAX_RESULT_BYTES} bytes"
            )));
        }
        self.rows.push(row);
        Ok(())
    }
}

/// One named database.
pub enum Database {
    /// A PostgreSQL server, through a pool.
    Postgres(PgDatabase),
    /// An SQLite file in this process.
    Sqlite(SqliteDatabase),
}

impl Database {
    /// Runs a statement that returns rows, giving up (and cancelling it) at `deadline`.
    pub async fn query(&self, sql: &str, params: Vec<SqlValue>, deadline: Instant) -> Result<SqlRows, CapabilityError> {
        match self {
            Database::Postgres(pg) => pg.query(sql, &params, deadline).await,
            Database::Sqlite(lite) => {
                let sql = sql.to_string();
                lite.with_connection(deadline, move |conn| lite_query(conn, &sql, &params))
                    .await
            }
        }
    }

    /// Runs a statement for its effect; the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: Vec<SqlValue>, deadline: Instant) -> Result<u64, CapabilityError> {
        match self {
            Database::Postgres(pg) => pg.execute(sql, &params, deadline).await,
            Database::Sqlite(lite) => {
                let sql = sql.to_string();
                lite.with_connection(deadline, move |conn| lite_execute(conn, &sql, &params))
                    .await
            }
        }
    }

    /// Runs `statements` in one transaction: all take effect or none does.
    pub async fn transaction(
        &self,
        statements: Vec<(String, Vec<SqlValue>)>,
        deadline: Instant,
    ) -> Result<Vec<u64>, CapabilityError> {
        match self {
            Database::Postgres(pg) => pg.transaction(&statements, deadline).await,
            Database::Sqlite(lite) => {
                lite.with_connection(deadline, move |conn| {
                    let tx = conn.transaction().map_err(lite_error)?;
                    let counts = statements
                        .iter()
                        .map(|(sql, params)| lite_execute(&tx, sql, params))
                        .collect::<Result<Vec<_>, _>>()?;
                    tx.commit().map_err(lite_error)?;
                    Ok(counts)
                })
                .await
            }
        }
    }
}

/// Settings of a PostgreSQL database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgSettings {
    /// `postgres://user:pass@host:port/db` or `host=… user=… dbname=…`.
    pub url: String,
    /// Most connections open at once.
    pub pool_size: usize,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// How long to wait for a new connection.
    pub connect_timeout: Duration,
}

/// A pool of connections to one PostgreSQL database.
pub struct PgDatabase {
    pool: Pool,
    idle_timeout: Duration,
}

fn pg_error(e: tokio_postgres::Error) -> CapabilityError {
    match e.as_db_error() {
        // Syntax, data and constraint errors are the statement's fault.
        Some(db)
            if ["22", "23", "42"]
                .iter()
                .any(|class| db.code().code().starts_with(class)) =>
        {
            CapabilityError::Invalid(format!("{}: {}", db.code().code(), db.message()))
        }
        Some(db) => CapabilityError::Backend(format!("{}: {}", db.code().code(), db.message())),
        None => CapabilityError::Backend(format!("postgres: {e}")),
    }
}

impl ToSql for SqlValue {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (SqlValue::Null, _) => Ok(IsNull::Yes),
            (SqlValue::Bool(b), &Type::BOOL) => b.to_sql(ty, out),
            (SqlValue::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (SqlValue::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (SqlValue::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (SqlValue::Int(i), &Type::FLOAT4) => (*i as f32).to_sql(ty, out),
            (SqlValue::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (SqlValue::Float(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (SqlValue::Float(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (SqlValue::Text(s), &Type::UUID) => uuid::Uuid::parse_str(s)?.to_sql(ty, out),
            (SqlValue::Text(s), &Type::JSON | &Type::JSONB) => {
                serde_json::from_str::<serde_json::Value>(s)?.to_sql(ty, out)
            }
            (SqlValue::Text(s), _) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            (SqlValue::Bytes(b), &Type::BYTEA) => b.to_sql(ty, out),
            (SqlValue::Timestamp(us), &Type::TIMESTAMPTZ) => timestamp(*us)?.to_sql(ty, out),
            (SqlValue::Timestamp(us), &Type::TIMESTAMP) => timestamp(*us)?.naive_utc().to_sql(ty, out),
            (value, ty) => Err(format!("a {} parameter does not fit a {ty} column", value.kind()).into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn timestamp(micros: i64) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::from_timestamp_micros(micros).ok_or_else(|| format!("timestamp {micros} is out of range"))
}

/// Column `i` of a PostgreSQL row as a value.
fn pg_value(row: &tokio_postgres::Row, i: usize) -> Result<SqlValue, CapabilityError> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
        wrap: impl FnOnce(T) -> SqlValue,
    ) -> Result<SqlValue, CapabilityError> {
        let value: Option<T> = row.try_get(i).map_err(|e| CapabilityError::Invalid(e.to_string()))?;
        Ok(value.map_or(SqlValue::Null, wrap))
    }
    let column = &row.columns()[i];
    let ty = column.type_();
    match *ty {
        Type::BOOL => get(row, i, SqlValue::Bool),
        Type::INT2 => get(row, i, |v: i16| SqlValue::Int(v.into())),
        Type::INT4 => get(row, i, |v: i32| SqlValue::Int(v.into())),
        Type::INT8 => get(row, i, SqlValue::Int),
        Type::OID => get(row, i, |v: u32| SqlValue::Int(v.into())),
        Type::FLOAT4 => get(row, i, |v: f32| SqlValue::Float(v.into())),
        Type::FLOAT8 => get(row, i, SqlValue::Float),
        Type::BYTEA => get(row, i, SqlValue::Bytes),
        Type::TIMESTAMPTZ => get(row, i, |v: chrono::DateTime<chrono::Utc>| {
            SqlValue::Timestamp(v.timestamp_micros())
        }),
        Type::TIMESTAMP => get(row, i, |v: chrono::NaiveDateTime| {
            SqlValue::Timestamp(v.and_utc().timestamp_micros())
        }),
        Type::UUID => get(row, i, |v: uuid::Uuid| SqlValue::Text(v.to_string())),
        Type::JSON | Type::JSONB => get(row, i, |v: serde_json::Value| SqlValue::Text(v.to_string())),
        _ if <String as tokio_postgres::types::FromSql>::accepts(ty) => get(row, i, SqlValue::Text),
        _ => Err(CapabilityError::Invalid(format!(
            "column {:?} has type {ty}, which has no value case; cast it in SQL (e.g. {}::text)",
            column.name(),
            column.name()
        ))),
    }
}

impl PgDatabase {
    /// A pool for these settings; connections are made on first use.
    pub fn new(settings: &PgSettings) -> Result<PgDatabase, String> {
        let mut config: tokio_postgres::Config = settings.url.parse().map_err(|e| format!("url: {e}"))?;
        config.connect_timeout(settings.connect_timeout);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(PgDatabase {
            pool,
            idle_timeout: settings.idle_timeout,
        })
    }

    /// A pooled connection, after closing the ones idle too long.
    async fn client(&self, deadline: Instant) -> Result<deadpool_postgres::Object, CapabilityError> {
        let idle_timeout = self.idle_timeout;
        self.pool.retain(|_, metrics| metrics.last_used() < idle_timeout);
        match tokio::time::timeout_at(deadline.into(), self.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(deadpool_postgres::PoolError::Backend(e))) => Err(pg_error(e)),
            Ok(Err(e)) => Err(CapabilityError::Backend(format!("postgres: {e}"))),
            Err(_) => Err(CapabilityError::Timeout),
        }
    }

    /// Runs `call` with a pooled connection, cancelling its statement on
    /// the server if `deadline` passes first.
    async fn run<T, F>(
        &self,
        deadline: Instant,
        call: impl FnOnce(deadpool_postgres::Object) -> F,
    ) -> Result<T, CapabilityError>
    where
        F: Future<Output = Result<T, CapabilityError>>,
    {
        let client = self.client(deadline).await?;
        let cancel = client.cancel_token();
        let guard = CancelOnDrop::new(move || {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = cancel.cancel_query(NoTls).await {
                        tracing::warn!(error = %e, "could not cancel a PostgreSQL statement past its deadline");
                    }
                });
            }
        });
        let result = tokio::time::timeout_at(deadline.into(), call(client))
            .await
            .map_err(|_| CapabilityError::Timeout)?;
        guard.disarm();
        result
    }

    async fn query(&self, sql: &str, params: &[SqlValue], deadline: Instant) -> Result<SqlRows, CapabilityError> {
        self.run(deadline, |client| async move {
            let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
            let columns = statement.columns().iter().map(|c| c.name().to_string()).collect();
            let stream = client.query_raw(&statement, params).await.map_err(pg_error)?;
            pin_mut!(stream);
            let mut collected = RowCollector::default();
            while let Some(row) = stream.next().await {
                let row = row.map_err(pg_error)?;
                collected.push((0..row.len()).map(|i| pg_value(&row, i)).collect::<Result<_, _>>()?)?;
            }
            Ok(SqlRows {
                columns,
                rows: collected.rows,
            })
        })
        .await
    }

    async fn execute(&self, sql: &str, params: &[SqlValue], deadline: Instant) -> Result<u64, CapabilityError> {
        self.run(deadline, |client| async move {
            let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
            client.execute(&statement, &pg_params(params)).await.map_err(pg_error)
        })
        .await
    }

    async fn transaction(
        &self,
        statements: &[(String, Vec<SqlValue>)],
        deadline: Instant,
    ) -> Result<Vec<u64>, CapabilityError> {
        self.run(deadline, |mut client| async move {
            let tx = client.transaction().await.map_err(pg_error)?;
            let mut counts = Vec::with_capacity(statements.len());
            for (sql, params) in statements {
                let statement = tx.prepare_cached(sql).await.map_err(pg_error)?;
                counts.push(tx.execute(&statement, &pg_params(params)).await.map_err(pg_error)?);
            }
            tx.commit().await.map_err(pg_error)?;
            Ok(counts)
        })
        .await
    }
}

fn pg_params(params: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Idle SQLite connections kept open.
const SQLITE_IDLE: usize = 8;

/// An embedded SQLite database file (WAL mode), used from the blocking pool
/// through a few reusable connections.
pub struct SqliteDatabase {
    path: PathBuf,
    idle: Arc<Mutex<Vec<rusqlite::Connection>>>,
}

fn lite_error(e: rusqlite::Error) -> CapabilityError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::OperationInterrupted => {
            CapabilityError::Timeout
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::DatabaseCorrupt
            ) =>
        {
            CapabilityError::Backend(format!("sqlite: {e}"))
        }
        _ => CapabilityError::Invalid(format!("sqlite: {e}")),
    }
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            SqlValue::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            SqlValue::Bool(b) => ToSqlOutput::Owned(Value::Integer((*b).into())),
            SqlValue::Int(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            SqlValue::Float(f) => ToSqlOutput::Owned(Value::Real(*f)),
            SqlValue::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            SqlValue::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            // SQLite's date functions read "YYYY-MM-DD HH:MM:SS.SSS" text.
            SqlValue::Timestamp(us) => {
                let t = timestamp(*us).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
                ToSqlOutput::Owned(Value::Text(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()))
            }
        })
    }
}

fn lite_value(value: rusqlite::types::ValueRef<'_>) -> SqlValue {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Int(i),
        ValueRef::Real(f) => SqlValue::Float(f),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Bytes(b.to_vec()),
    }
}

/// Binds `params` to the statement's `$N` / `?N` / `?` placeholders by position.
fn bind(statement: &mut rusqlite::CachedStatement<'_>, params: &[SqlValue]) -> Result<(), CapabilityError> {
    let mut highest = 0;
    for index in 1..=statement.parameter_count() {
        let position = match statement.parameter_name(index) {
            None => index,
            Some(name) => name
                .strip_prefix(['$', '?'])
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| CapabilityError::Invalid(format!("parameter {name}: use positional $1, $2, …")))?,
        };
        highest = highest.max(position);
        let value = params.get(position - 1).ok_or_else(|| {
            CapabilityError::Invalid(format!(
                "the statement uses ${position} but {} parameters were given",
                params.len()
            ))
        })?;
        statement.raw_bind_parameter(index, value).map_err(lite_error)?;
    }
    if params.len() > highest {
        return Err(CapabilityError::Invalid(format!(
            "{} parameters given for a statement with {highest}",
            params.len()
        )));
    }
    Ok(())
}

/// Cancels a statement when dropped before [`CancelOnDrop::disarm`]: when
/// the deadline passes here, and also when the plugin call itself is dropped
/// at its deadline while the statement runs.
struct CancelOnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> CancelOnDrop<F> {
    fn new(cancel: F) -> Self {
        CancelOnDrop(Some(cancel))
    }

    /// The statement finished: nothing to cancel.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for CancelOnDrop<F> {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel();
        }
    }
}

impl SqliteDatabase {
    /// The database file at `path` (created on first use).
    pub fn new(path: PathBuf) -> SqliteDatabase {
        SqliteDatabase {
            path,
            idle: Arc::default(),
        }
    }

    fn open(&self) -> Result<rusqlite::Connection, CapabilityError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CapabilityError::Backend(format!("sqlite: {}: {e}", dir.display())))?;
        }
        let conn = rusqlite::Connection::open(&self.path).map_err(lite_error)?;
        conn.pragma_update(None, "journal_mode", "wal").map_err(lite_error)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `work` on a connection on the blocking pool, interrupting it at `deadline`.
    async fn with_connection<T: Send + 'static>(
        &self,
        deadline: Instant,
        work: impl FnOnce(&mut rusqlite::Connection) -> Result<T, CapabilityError> + Send + 'static,
    ) -> Result<T, CapabilityError> {
        let idle_conn = self.idle.lock().expect("sqlite pool").pop();
        let mut conn = match idle_conn {
            Some(conn) => conn,
            None => self.open()?,
        };
        let interrupt = conn.get_interrupt_handle();
        let idle = self.idle.clone();
        let task = tokio::task::spawn_blocking(move || {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = conn
                .busy_timeout(remaining)
                .map_err(lite_error)
                .and_then(|()| work(&mut conn));
            let mut idle = idle.lock().expect("sqlite pool");
            if idle.len() < SQLITE_IDLE {
                idle.push(conn);
            }
            result
        });
        let guard = CancelOnDrop::new(move || interrupt.interrupt());
        let joined = tokio::time::timeout_at(deadline.into(), task)
            .await
            .map_err(|_| CapabilityError::Timeout)?;
        guard.disarm();
        joined.map_err(|e| CapabilityError::Backend(format!("sqlite task: {e}")))?
    }
}

fn lite_execute(conn: &rusqlite::Connection, sql: &str, params: &[SqlValue]) -> Result<u64, CapabilityError> {
    let mut statement = conn.prepare_cached(sql).map_err(lite_error)?;
    bind(&mut statement, params)?;
    statement.raw_execute().map(|n| n as u64).map_err(lite_error)
}

fn lite_query(conn: &rusqlite::Connection, sql: &str, params: &[SqlValue]) -> Result<SqlRows, CapabilityError> {
    let mut statement = conn.prepare_cached(sql).map_err(lite_error)?;
    bind(&mut statement, params)?;
    let columns = statement.column_names().into_iter().map(String::from).collect();
    let width = statement.column_count();
    let mut rows = statement.raw_query();
    let mut collected = RowCollector::default();
    while let Some(row) = rows.next().map_err(lite_error)? {
        let values = (0..width)
            .map(|i| row.get_ref(i).map(lite_value))
            .collect::<Result<_, _>>()
            .map_err(lite_error)?;
        collected.push(values)?;
    }
    Ok(SqlRows {
        columns,
        rows: collected.rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn sqlite_round_trip_with_positional_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::Sqlite(SqliteDatabase::new(dir.path().join("data/test.db")));
        db.execute(
            "CREATE TABLE users (email TEXT PRIMARY KEY, quota INTEGER, seen TEXT)",
            vec![],
            soon(),
        )
        .await
        .unwrap();
        let changed = db
            .execute(
                "INSERT INTO users VALUES ($1, $2, $3), ($4, NULL, NULL)",
                vec![
                    SqlValue::Text("a@example.com".into()),
                    SqlValue::Int(10),
                    SqlValue::Timestamp(0),
                    SqlValue::Text("b@example.com".into()),
                ],
                soon(),
            )
            .await
            .unwrap();
        assert_eq!(changed, 2);
        let rows = db
            .query(
                "SELECT email, quota, seen FROM users WHERE quota > $2 OR email = $1 ORDER BY email",
                vec![SqlValue::Text("b@example.com".into()), SqlValue::Int(5)],
                soon(),
            )
            .await
            .unwrap();
        assert_eq!(rows.columns, ["email", "quota", "seen"]);
        assert_eq!(
            rows.rows,
            vec![
                vec![
                    SqlValue::Text("a@example.com".into()),
                    SqlValue::Int(10),
                    SqlValue::Text("1970-01-01 00:00:00.000000".into())
                ],
                vec![SqlValue::Text("b@example.com".into()), SqlValue::Null, SqlValue::Null],
            ]
        );
        let exists = db
            .query(
                "SELECT EXISTS(SELECT 1 FROM users WHERE email = $1)",
                vec![SqlValue::Text("nobody@example.com".into())],
                soon(),
            )
            .await
            .unwrap();
        assert_eq!(exists.rows, vec![vec![SqlValue::Int(0)]]);
        let insert = "INSERT INTO users (email) VALUES ($1)";
        let failed = db
            .transaction(
                vec![
                    (insert.into(), vec![SqlValue::Text("c@example.com".into())]),
                    (insert.into(), vec![SqlValue::Text("a@example.com".into())]),
                ],
                soon(),
            )
            .await;
        assert!(matches!(failed, Err(CapabilityError::Invalid(_))), "{failed:?}");
        let count = db.query("SELECT count(*) FROM users", vec![], soon()).await.unwrap();
        assert_eq!(
            count.rows,
            vec![vec![SqlValue::Int(2)]],
            "the failed transaction left nothing"
        );
    }

    #[tokio::test]
    async fn sqlite_errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::Sqlite(SqliteDatabase::new(dir.path().join("test.db")));
        let missing = db.query("SELECT $1, $2", vec![SqlValue::Int(1)], soon()).await;
        assert!(matches!(missing, Err(CapabilityError::Invalid(_))), "{missing:?}");
        let extra = db
            .query("SELECT $1", vec![SqlValue::Int(1), SqlValue::Int(2)], soon())
            .await;
        assert!(matches!(extra, Err(CapabilityError::Invalid(_))), "{extra:?}");
        let syntax = db.query("SELEKT 1", vec![], soon()).await;
        assert!(matches!(syntax, Err(CapabilityError::Invalid(_))), "{syntax:?}");
        let too_many = db
            .query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) SELECT i FROM n",
                vec![],
                soon(),
            )
            .await;
        assert!(matches!(too_many, Err(CapabilityError::Limit(_))), "{too_many:?}");
        let endless = db
            .query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
                vec![],
                Instant::now() + Duration::from_millis(200),
            )
            .await;
        assert_eq!(endless, Err(CapabilityError::Timeout));
        let after = db.query("SELECT 1", vec![], soon()).await.unwrap();
        assert_eq!(
            after.rows,
            vec![vec![SqlValue::Int(1)]],
            "the interrupted connection is reusable"
        );
    }
}
