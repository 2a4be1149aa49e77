//! The SQLite statements behind the operators' controls: dead letters, replay, retention.
//! Each runs on the writer thread, inside a batch transaction (see `sqlite.rs`).

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::body::StoredBody;
use super::sqlite_identities::{Identities, count_prune};
use super::{
    DeadLetter, DeadSelector, PruneReport, ReplayQuery, ReplayUpdate, StoredEmission, StoredEvent,
    StoredWebhook,
};

/// Adds an outbox event: source, event_id, rule, insert_id, payload, created time, request_id,
/// webhook_id, then lease owner and lease end — both NULL for an event due at once; with a
/// lease, it is due when the lease runs out, as after `lease`.
pub(super) const INSERT_OUTBOX: &str = "INSERT INTO outbox (source, event_id, rule, insert_id,
    payload, next_attempt_at, created_at, updated_at, request_id, webhook_id, lease_owner,
    lease_until)
    VALUES (?1, ?2, ?3, ?4, ?5, COALESCE(?10, ?6), ?6, ?6, ?7, ?8, ?9, ?10)";

const OUTBOX_COLUMNS: &str = "id, source, event_id, rule, insert_id, state, attempts, last_status, last_error, created_at, updated_at, payload";

fn outbox_row(r: &Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        source: r.get(1)?,
        event_id: r.get(2)?,
        rule: r.get(3)?,
        insert_id: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        last_status: r.get(7)?,
        last_error: r.get(8)?,
        created_at_ms: r.get(9)?,
        updated_at_ms: r.get(10)?,
        payload: r.get(11)?,
    })
}

pub(super) fn dead_letters(
    conn: &Connection,
    source: Option<&str>,
) -> rusqlite::Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE state = 'dead' AND (?1 IS NULL OR source = ?1)
         ORDER BY updated_at DESC, id DESC"
    ))?;
    let rows = stmt.query_map(params![source], outbox_row)?;
    rows.collect()
}

pub(super) fn outbox_event(conn: &Connection, id: i64) -> rusqlite::Result<Option<DeadLetter>> {
    conn.prepare_cached(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1"
    ))?
    .query_row(params![id], outbox_row)
    .optional()
}

pub(super) fn retry_dead(
    conn: &Connection,
    which: &DeadSelector,
    now_ms: i64,
) -> rusqlite::Result<u64> {
    // The give-up clock restarts from the operator's decision, hence created_at = now.
    let set =
        "UPDATE outbox SET state = 'pending', next_attempt_at = ?1, attempts = 0, created_at = ?1,
               updated_at = ?1, lease_owner = NULL, lease_until = NULL WHERE state = 'dead'";
    let n = match which {
        DeadSelector::All => conn.execute(set, params![now_ms])?,
        DeadSelector::Source(source) => {
            conn.execute(&format!("{set} AND source = ?2"), params![now_ms, source])?
        }
        DeadSelector::Ids(ids) => {
            let mut n = 0;
            for id in ids {
                n += conn.execute(&format!("{set} AND id = ?2"), params![now_ms, id])?;
            }
            n
        }
    };
    Ok(n as u64)
}

pub(super) fn drop_dead(conn: &Connection, ids: &[i64], now_ms: i64) -> rusqlite::Result<u64> {
    let mut n = 0;
    for id in ids {
        n += conn.execute(
            "UPDATE outbox SET state = 'dropped', updated_at = ?2 WHERE id = ?1 AND state = 'dead'",
            params![id, now_ms],
        )?;
    }
    Ok(n as u64)
}

pub(super) fn stored_webhooks(
    conn: &Connection,
    query: &ReplayQuery,
) -> rusqlite::Result<Vec<StoredWebhook>> {
    // With `since`, reading starts at the smallest id of a webhook received in its minute or
    // later (see `webhook_minutes` in sqlite.rs); nothing is read when there is none.
    let mut webhooks_stmt = conn.prepare_cached(
        "SELECT id, received_at, headers, body, body_encoding FROM webhooks
         WHERE id >= CASE WHEN ?2 IS NULL THEN 0
                     ELSE (SELECT MIN(first_id) FROM webhook_minutes WHERE minute >= ?2 / 60000) END
           AND source = ?1 AND (?2 IS NULL OR received_at >= ?2) AND (?3 IS NULL OR received_at < ?3)
         ORDER BY received_at, id",
    )?;
    let rows =
        webhooks_stmt.query_map(params![query.source, query.since_ms, query.until_ms], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                StoredBody::decode(&r.get::<_, String>(4)?, r.get(3)?).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        3,
                        rusqlite::types::Type::Blob,
                        Box::new(e),
                    )
                })?,
            ))
        })?;
    let mut events_stmt = conn.prepare_cached(
        "SELECT event_id, status FROM provider_events WHERE webhook_id = ?1 ORDER BY event_id",
    )?;
    let mut outbox_stmt = conn.prepare_cached(
        "SELECT rule, insert_id, payload FROM outbox WHERE webhook_id = ?1 AND event_id = ?2 ORDER BY id",
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (id, received_at_ms, headers_json, body) = row?;
        let mut events = Vec::new();
        let found = events_stmt.query_map(params![id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for event in found {
            let (event_id, status) = event?;
            if !query.statuses.is_empty() && !query.statuses.contains(&status) {
                continue;
            }
            let emitted = outbox_stmt
                .query_map(params![id, event_id], |r| {
                    Ok(StoredEmission {
                        rule: r.get(0)?,
                        insert_id: r.get(1)?,
                        payload: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            events.push(StoredEvent {
                event_id,
                status,
                emitted,
            });
        }
        if !events.is_empty() {
            out.push(StoredWebhook {
                id,
                received_at_ms,
                headers_json,
                body: Bytes::from(body),
                events,
            });
        }
    }
    Ok(out)
}

pub(super) fn record_replay(
    conn: &Connection,
    identities: &Identities,
    source: &str,
    updates: &[ReplayUpdate],
    now_ms: i64,
) -> rusqlite::Result<()> {
    let mut status =
        conn.prepare_cached("UPDATE provider_events SET status = ?2, detail = ?3 WHERE id = ?1")?;
    let mut webhook = conn.prepare_cached(
        "SELECT w.request_id, w.id FROM provider_events p JOIN webhooks w ON w.id = p.webhook_id
         WHERE p.id = ?1",
    )?;
    let mut insert = conn.prepare_cached(INSERT_OUTBOX)?;
    for update in updates {
        let (request_id, webhook_id): (String, i64) =
            match identities.find(conn, source, &update.event_id)? {
                Some(id) => {
                    status.execute(params![id, update.status, update.detail])?;
                    webhook
                        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?
                        .unwrap_or_default()
                }
                None => Default::default(),
            };
        for out in &update.outbox {
            insert.execute(params![
                source,
                update.event_id,
                out.rule,
                out.insert_id,
                out.payload,
                now_ms,
                request_id,
                webhook_id,
                None::<&str>,
                None::<i64>,
            ])?;
        }
    }
    Ok(())
}

/// Webhook ids examined per prune step. Each step is one writer job, so this bounds how long
/// webhooks queued behind retention wait (a single statement over a week of rows held every
/// accept for seconds).
pub(super) const PRUNE_WINDOW: i64 = 128;

/// Retention's deletes, in order, for webhook ids in `?1..?2` and rows older than `?3`:
/// finished deliveries (pending and dead events are never pruned); identities (dedupe) once
/// nothing of them is left to do, mapping failures being kept for replay; raw bodies no
/// identity needs.
pub(super) const PRUNE: [&str; 3] = [
    "DELETE FROM outbox WHERE webhook_id >= ?1 AND webhook_id < ?2
     AND state IN ('delivered', 'dry_run', 'dropped') AND updated_at < ?3",
    "DELETE FROM provider_events WHERE webhook_id >= ?1 AND webhook_id < ?2
     AND received_at < ?3 AND status IN ('mapped', 'ignored')
     AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.webhook_id = provider_events.webhook_id
                     AND o.event_id = provider_events.event_id)",
    "DELETE FROM webhooks WHERE id >= ?1 AND id < ?2 AND received_at < ?3
     AND NOT EXISTS (SELECT 1 FROM provider_events p WHERE p.webhook_id = webhooks.id)",
];
/// Where retention's next step starts: the first webhook from `?1` on.
pub(super) const NEXT_TO_PRUNE: &str =
    "SELECT id, received_at FROM webhooks WHERE id >= ?1 ORDER BY id LIMIT 1";

/// Keeps `webhook_minutes` as small as the webhooks left need, after retention deleted some.
/// Rows whose first id is below the oldest webhook left give way to one row, at the latest of
/// their minutes, pointing at that webhook: any webhook left that was received in one of their
/// minutes is still found from there (its id is at least the oldest's).
pub(super) fn fold_minutes(conn: &Connection) -> rusqlite::Result<()> {
    let oldest: Option<i64> = conn.query_row("SELECT MIN(id) FROM webhooks", [], |r| r.get(0))?;
    let Some(oldest) = oldest else {
        return Ok(());
    };
    let latest: Option<i64> = conn.query_row(
        "SELECT MAX(minute) FROM webhook_minutes WHERE first_id < ?1",
        [oldest],
        |r| r.get(0),
    )?;
    if let Some(minute) = latest {
        conn.execute("DELETE FROM webhook_minutes WHERE first_id < ?1", [oldest])?;
        conn.execute(
            "INSERT OR REPLACE INTO webhook_minutes (minute, first_id) VALUES (?1, ?2)",
            [minute, oldest],
        )?;
    }
    Ok(())
}

/// One step of retention: what is done among webhooks with ids in `from..from + PRUNE_WINDOW`
/// and everything hanging off them, older than `before_ms`. Returns where the next step starts,
/// or `None` once the next webhook is too young to prune (ids grow with arrival time, so every
/// later one is too). A step that deletes provider events counts as one of the store's prunes,
/// which the dedupe index compares itself with. Statements reach rows
/// through the webhook id — the rowid, or an index led by it — so a step reads its window,
/// never a whole table.
pub(super) fn prune_step(
    conn: &Connection,
    from: i64,
    before_ms: i64,
) -> rusqlite::Result<(PruneReport, Option<i64>)> {
    let to = from.saturating_add(PRUNE_WINDOW);
    let [outbox, identities, webhooks] = PRUNE;
    let finished = conn
        .prepare_cached(outbox)?
        .execute(params![from, to, before_ms])?;
    let identities = conn
        .prepare_cached(identities)?
        .execute(params![from, to, before_ms])?;
    let bodies = conn
        .prepare_cached(webhooks)?
        .execute(params![from, to, before_ms])?;
    if identities > 0 {
        count_prune(conn)?;
    }
    let deleted = [finished as u64, identities as u64, bodies as u64];
    let next: Option<(i64, i64)> = conn
        .prepare_cached(NEXT_TO_PRUNE)?
        .query_row(params![to], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok((
        PruneReport::deleted(deleted),
        next.filter(|&(_, at)| at < before_ms).map(|(id, _)| id),
    ))
}
