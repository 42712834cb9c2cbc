//! The slot's changes streamed over the replication protocol (a walsender session, the way
//! PostgreSQL's own subscriber reads them), by the `pgwire-replication` client.
//!
//! Why: the SQL interface (`pg_logical_slot_peek_binary_changes`, then
//! `pg_replication_slot_advance`) decodes the slot's WAL from its restart point at every call,
//! and the restart point moves only every so often, so a busy stream decodes each change several
//! times, and nothing is decoded while a batch is applied. A walsender decodes each change once,
//! and keeps sending while barge applies the batch before (the client buffers what it receives).
//!
//! ```text
//!  START_REPLICATION SLOT barge_<stream> LOGICAL <target's position> (proto_version 1, …)
//!   Begin / XLogData (Relation, Insert, Update, Delete, Truncate) / Commit → Decoder
//!   Keepalive(w) → every transaction committed before w was sent: the read covered w
//!  confirm(p): the standby status update reports p applied (the slot frees what is before it)
//! ```
//!
//! The session starts at the position the target holds (the server starts at the slot's
//! confirmed position when that is later), so a new session, after a crash or an error, sends
//! again what the target may not have. Without TLS support in the client, a URL asking for TLS
//! reads through the SQL interface, as does a server that refuses the session (no free walsender,
//! no replication entry in `pg_hba.conf`): same changes, slower.

use std::time::{Duration, Instant};

use barge_core::{Change, ChangeBatch, Error, Result, TableInfo};
use pgwire_replication::{FeedbackObserver, Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use tokio_postgres::config::Host;

use crate::changes::Decoder;
use crate::conn::{TlsMode, runtime};

/// How long a read waits for more when nothing arrives and it has something to give back (or no
/// `upto` to reach): the stream is quiet, or decoding a transaction not yet committed.
const QUIET: Duration = Duration::from_millis(100);

/// How often applied positions are reported to the server, at most.
const STATUS_EVERY: Duration = Duration::from_millis(100);

/// Events the client buffers while a batch is applied.
const BUFFER_EVENTS: usize = 65_536;

/// A replication session on a stream's slot, and what it received but did not give yet.
pub(crate) struct Streaming {
    name: String,
    client: ReplicationClient,
    decoder: Decoder,
    /// A transaction past the `upto` of the read that received it: the next read's first.
    held: Option<(Vec<Change>, u64, i64)>,
}

/// The streaming state of a source.
pub(crate) enum StreamState {
    /// Not tried yet, or ended (a new read opens a session).
    Closed,
    Open(Box<Streaming>),
    /// The server or the URL does not allow a replication session: the SQL interface reads.
    Unavailable,
}

/// The replication session's settings for `url`, or why there is none (TLS asked for).
fn config_of(url: &crate::conn::PgUrl, slot: &str, start: u64) -> Option<ReplicationConfig> {
    if matches!(url.tls, TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull) {
        return None;
    }
    let config = &url.config;
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = match config.get_hosts().first()? {
        Host::Tcp(name) => name.clone(),
        Host::Unix(path) => path.display().to_string(),
    };
    let password = config.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
    let user = config.get_user().unwrap_or("postgres");
    let database = config.get_dbname().unwrap_or(user);
    let tls = pgwire_replication::TlsConfig::disabled();
    Some(
        ReplicationConfig::new(host, user, password, database, slot, slot)
            .with_port(port)
            .with_tls(tls)
            .with_start_lsn(Lsn::from_u64(start))
            .with_ack_lsn(Lsn::from_u64(start))
            .with_status_interval(STATUS_EVERY)
            .with_wakeup_interval(Duration::from_secs(1))
            .with_buffer_size(BUFFER_EVENTS)
            .with_application_name("barge")
            // Values in the text the SQL sessions read them back in (keys become literals).
            .with_options(crate::conn::REPLICATION_OPTIONS)
            // Lets `close` see that the last confirmation reached the server.
            .with_feedback_observer(FeedbackObserver::new(|_| {})),
    )
}

/// A session's failure; transient where a new session may do (a lost connection, a server
/// shutting down or starting, the slot still held by the session before).
fn stream_error(e: pgwire_replication::PgWireError) -> Error {
    use pgwire_replication::PgWireError;
    let transient = match &e {
        PgWireError::Io(_) | PgWireError::Task(_) => true,
        PgWireError::Server(message) => {
            ["SQLSTATE 08", "SQLSTATE 57P0", "SQLSTATE 55006"].iter().any(|code| message.contains(code))
        }
        _ => false,
    };
    Error::driver("streaming the source's changes", e.to_string(), transient)
}

impl Streaming {
    /// Opens a session on the slot of stream `name` from `start`; `None` when the URL or the
    /// server allows none (said in the log); an error when the server cannot be reached now.
    pub(crate) fn open(
        url: &crate::conn::PgUrl,
        name: &str,
        slot: &str,
        start: u64,
        tables: &[TableInfo],
    ) -> Result<Option<Streaming>> {
        let Some(config) = config_of(url, slot, start) else {
            tracing::info!("the source URL asks for TLS: changes are read through the SQL interface");
            return Ok(None);
        };
        // Connecting, signing in and START_REPLICATION run in the client's worker: the session
        // is open once the server accepted the last.
        let connected = runtime().block_on(async {
            let mut client = ReplicationClient::connect(config).await?;
            tokio::time::timeout(Duration::from_secs(30), client.wait_started()).await.map_err(|_| {
                pgwire_replication::PgWireError::Task("no answer to START_REPLICATION in 30 s".into())
            })??;
            Ok::<_, pgwire_replication::PgWireError>(client)
        });
        match connected {
            Ok(client) => Ok(Some(Streaming {
                name: name.into(),
                client,
                decoder: Decoder::new(&url.schema, tables),
                held: None,
            })),
            Err(e) => {
                let error = stream_error(e);
                if error.is_transient() {
                    return Err(error);
                }
                tracing::warn!(
                    "no replication session on the source ({error}): changes are read through the SQL interface"
                );
                Ok(None)
            }
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Changes of whole transactions received: about `max` at most, those committed before
    /// `upto` when it is set; waits for them as the SQL read would have found them (until a
    /// keepalive shows everything before `upto` was sent).
    pub(crate) fn read(&mut self, tables: &[TableInfo], upto: Option<u64>, max: usize) -> Result<ChangeBatch> {
        self.decoder.set_tables(tables);
        if let Some((changes, end, micros)) = self.held.take() {
            if upto.is_some_and(|u| end > u) {
                self.held = Some((changes, end, micros));
                return Ok(ChangeBatch { scanned: upto, ..ChangeBatch::default() });
            }
            self.decoder.add(changes, end, micros);
        }
        let mut scanned = None;
        let mut last_event = Instant::now();
        loop {
            if self.decoder.batch.changes.len() >= max {
                break;
            }
            let quiet_for = QUIET.saturating_sub(last_event.elapsed());
            // Nothing for a while: give what there is, unless `upto` is still to be reached.
            if quiet_for.is_zero() && (upto.is_none() || self.decoder.batch.end.is_some()) {
                break;
            }
            let wait =
                if upto.is_some() && self.decoder.batch.end.is_none() { Duration::from_secs(1) } else { quiet_for };
            let event = match runtime().block_on(async { tokio::time::timeout(wait, self.client.recv()).await }) {
                Err(_) => continue,
                Ok(Err(e)) => return Err(stream_error(e)),
                Ok(Ok(None)) => {
                    return Err(Error::driver("streaming the source's changes", "the server ended the session", true));
                }
                Ok(Ok(Some(event))) => event,
            };
            last_event = Instant::now();
            match event {
                ReplicationEvent::Begin { .. } => self.decoder.begin(),
                ReplicationEvent::XLogData { data, .. } => self.decoder.message(&data)?,
                ReplicationEvent::Commit { end_lsn, commit_time_micros, .. } => {
                    let end = end_lsn.as_u64();
                    let changes = self.decoder.commit(end);
                    if upto.is_some_and(|u| end > u) {
                        self.held = Some((changes, end, commit_time_micros));
                        scanned = upto;
                        break;
                    }
                    self.decoder.add(changes, end, commit_time_micros);
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    // Every transaction committed before `wal_end` was sent before this.
                    let at = wal_end.as_u64();
                    scanned = Some(upto.map_or(at, |u| at.min(u)));
                    if upto.is_none_or(|u| at >= u) {
                        break;
                    }
                }
                _ => {}
            }
        }
        let mut batch = std::mem::take(&mut self.decoder.batch);
        tracing::debug!(changes = batch.changes.len(), ?scanned, "stream read");
        batch.scanned = scanned;
        Ok(batch)
    }

    /// The target holds every change up to `position`: the next status update says so.
    pub(crate) fn confirm(&self, position: u64) {
        self.client.update_applied_lsn(Lsn::from_u64(position));
    }

    /// Ends the session once the last confirmation reached the server (a second at most).
    pub(crate) fn close(mut self) {
        let until = Instant::now() + Duration::from_secs(1);
        while self.client.feedback_pending_since().is_some() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ =
            runtime().block_on(async { tokio::time::timeout(Duration::from_secs(2), self.client.shutdown()).await });
    }
}
