//! One commit of a batch of room operations: load the room's state (and the dedupe windows of
//! the batch's publishers), run the gateway's room rules on it operation by operation, and
//! commit the result with the compare-and-set script (`lua/commit.lua`), which also appends the
//! emitted frames to the room's history and publishes them. Nothing of a room's rules is here.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use holdfast_gateway::room::presence::PresenceNote;
use holdfast_gateway::room::rules::{self, Op, Outcome, Rules};
use holdfast_gateway::room::state::{Emitted, RoomState};
use holdfast_gateway::room::stream::Buffered;
use holdfast_gateway::store::{Applied, StoreError};
use holdfast_gateway::tokens::random_epoch;
use redis::Value as RValue;

use crate::store::{lock, RedisRooms};

/// A room's state as loaded: its version (`epoch:counter`, empty when it does not exist) and
/// the run id of the Redis that wrote it.
pub(crate) struct Loaded {
    version: String,
    state: Option<RoomState>,
    run: Option<String>,
}

/// What one operation of a batch gave, before the commit's answer.
pub(crate) struct Step {
    outcome: Outcome,
    seq: u64,
    epoch: String,
    emitted: usize,
    presence: u64,
    /// The replay range asked for, inclusive.
    replay: Option<(u64, u64)>,
}

pub(crate) type BatchResult = Vec<Result<Applied, StoreError>>;

/// How one commit attempt ended.
pub(crate) enum Attempt {
    /// Committed (or nothing to commit).
    Done(BatchResult),
    /// Another node changed the room first.
    Conflict,
    /// The state was written by another run of Redis (restored from older data): retry with
    /// a new epoch for this run id.
    Rebase(String),
}

impl RedisRooms {
    pub(crate) async fn load(&self, room: &str, dedupe_of: &[&str]) -> Result<Loaded, StoreError> {
        let sh = &self.shared;
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(sh.room_key(room, "st"))
            .arg("v")
            .arg("s")
            .arg("r");
        if !dedupe_of.is_empty() {
            pipe.cmd("HMGET").arg(sh.room_key(room, "d")).arg(dedupe_of);
        }
        let mut conn = sh.conn.clone();
        let r: redis::RedisResult<Vec<RValue>> = pipe.query_async(&mut conn).await;
        let v = r.map_err(|e| {
            sh.metrics.errors.inc();
            tracing::warn!(error = %e, room, "loading a room from Redis failed");
            StoreError::Unavailable
        })?;
        let (version, state, run): (Option<String>, Option<String>, Option<String>) = v
            .first()
            .and_then(|x| redis::from_redis_value(x).ok())
            .unwrap_or((None, None, None));
        let mut state = match state {
            Some(s) => Some(serde_json::from_str::<RoomState>(&s).map_err(|e| {
                tracing::error!(error = %e, room, "unreadable room state in Redis");
                StoreError::Unavailable
            })?),
            None => None,
        };
        if let Some(st) = state.as_mut() {
            st.name = room.to_owned();
            let windows: Vec<Option<String>> = v
                .get(1)
                .and_then(|x| redis::from_redis_value(x).ok())
                .unwrap_or_default();
            for (p, raw) in dedupe_of.iter().zip(windows) {
                if let Some(w) = raw.and_then(|raw| serde_json::from_str(&raw).ok()) {
                    st.dedupe.insert((*p).to_owned(), w);
                }
            }
        }
        Ok(Loaded {
            version: version.unwrap_or_default(),
            state,
            run,
        })
    }

    /// The run id of the Redis holding `room` (on a cluster, the room's shard).
    async fn current_run(&self, room: &str) -> Result<String, StoreError> {
        let mut conn = self.shared.conn.clone();
        let r: redis::RedisResult<(String, String, String)> = self
            .shared
            .scripts
            .room_check
            .key(self.shared.room_key(room, "st"))
            .invoke_async(&mut conn)
            .await;
        r.map(|(_, _, run)| run).map_err(|e| {
            self.shared.metrics.errors.inc();
            tracing::warn!(error = %e, room, "reading Redis's run id failed");
            StoreError::Unavailable
        })
    }

    /// One load → rules → commit attempt for a batch of operations on one room. On a conflict
    /// or a rebase nothing was applied: the caller retries the whole batch. `rebase_for`: the
    /// run id of the Redis that must see this room start a new epoch (see
    /// [`Attempt::Rebase`]).
    pub(crate) async fn attempt(
        &self,
        room: &str,
        ops: &[Op],
        rules: &Rules,
        rebase_for: Option<&str>,
    ) -> Result<Attempt, StoreError> {
        let ctx = self.ctx()?;
        let mut publishers: Vec<&str> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Publish { player, .. } => Some(player.as_str()),
                Op::ServerPublish { .. } => Some(rules::SERVER_DEDUPE),
                _ => None,
            })
            .collect();
        publishers.sort_unstable();
        publishers.dedup();
        let loaded = self.load(room, &publishers).await?;
        // Another node may have started the new epoch for this run between the `rebase` answer
        // and this load: the room is then this run's already, and one new epoch is enough.
        let rebase_for = rebase_for.filter(|run| loaded.run.as_deref() != Some(*run));
        let opts = rules.options(room);
        let mut st = loaded.state;
        if let (Some(state), Some(_)) = (st.as_mut(), rebase_for) {
            let epoch = random_epoch();
            tracing::warn!(
                room,
                seq = state.seq,
                old_epoch = %state.epoch,
                new_epoch = %epoch,
                "room state was written by another Redis run (restored from older data); starting a new epoch"
            );
            self.shared.metrics.rollbacks.inc();
            state.rebase(epoch);
        }
        let seq_before = st.as_ref().map_or(0, |s| s.seq);
        let base = st.as_ref().map_or(0, |s| s.base);
        let mut steps: Vec<Result<Step, StoreError>> = Vec::with_capacity(ops.len());
        let mut frames: Vec<Emitted> = Vec::new();
        let mut note: Option<PresenceNote> = None;
        let mut changed = rebase_for.is_some();
        // Nodes that place members in the room with this commit: the room joins their sets.
        let mut placing: Vec<&str> = Vec::new();
        for op in ops {
            let state = match st.as_mut() {
                Some(state) => state,
                None if rules::creates(op) => st.insert(RoomState::new(room, random_epoch())),
                None => {
                    steps.push(match rules::on_missing(op) {
                        Ok(outcome) => Ok(Step {
                            outcome,
                            seq: 0,
                            epoch: String::new(),
                            emitted: 0,
                            presence: 0,
                            replay: None,
                        }),
                        Err(e) => Err(StoreError::Refused(e)),
                    });
                    continue;
                }
            };
            let outcome = match rules::apply(state, op, rules) {
                Ok(o) => o,
                Err(e) => {
                    steps.push(Err(StoreError::Refused(e)));
                    continue;
                }
            };
            if let Op::Join { who, .. } | Op::Resume { who, .. } = op {
                let start = rules::start_of(&who.session);
                if !placing.contains(&start) {
                    placing.push(start);
                }
            }
            let out = std::mem::take(&mut state.out);
            // Every membership change records a presence change, whatever the presence mode.
            let membership = !state.changes.is_empty() || state.kick.is_some();
            if let Some(n) = state.take_presence(opts.presence) {
                match note.as_mut() {
                    Some(all) => all.merge(n),
                    None => note = Some(n),
                }
            }
            changed |= !out.is_empty()
                || membership
                || !state.dedupe_dirty.is_empty()
                || matches!(op, Op::Join { .. } | Op::Resume { .. });
            steps.push(Ok(Step {
                replay: rules::replay_range(op, &outcome),
                outcome,
                seq: state.seq,
                epoch: state.epoch.clone(),
                emitted: out.len(),
                presence: state.presence_version,
            }));
            frames.extend(out);
            if state.is_empty() {
                // The room is dropped with this operation: the rest of the batch waits for the
                // next commit (one commit never both drops and recreates a room).
                st = None;
                break;
            }
        }
        let finish = |steps: Vec<Result<Step, StoreError>>, held: &[Buffered]| -> BatchResult {
            steps
                .into_iter()
                .map(|r| {
                    r.map(|s| {
                        let replay = s
                            .replay
                            .map(|(from, to)| {
                                held.iter()
                                    .filter(|b| b.seq >= from && b.seq <= to.min(seq_before))
                                    .cloned()
                                    .chain(
                                        frames
                                            .iter()
                                            .filter(|f| f.seq > seq_before && f.seq <= to)
                                            .map(|f| Buffered {
                                                seq: f.seq,
                                                text: f.text.clone(),
                                            }),
                                    )
                                    .collect()
                            })
                            .unwrap_or_default();
                        Applied {
                            outcome: s.outcome,
                            seq: s.seq,
                            epoch: s.epoch,
                            emitted: s.emitted,
                            presence: s.presence,
                            replay,
                        }
                    })
                })
                .collect()
        };
        if !changed {
            // Nothing changed (refusals, a repeated claim, a duplicate publish, a read). A
            // refusal may come from a state restored from older data that no commit has
            // noticed yet (a resume whose token was issued after the snapshot): it is given
            // only once the state is known to be this Redis run's; otherwise the batch goes
            // again on a new epoch, as a commit would have made it.
            let refused = steps.iter().any(Result::is_err);
            if refused && rebase_for.is_none() {
                if let Some(written_by) = loaded.run.as_deref() {
                    let run = self.current_run(room).await?;
                    if !run.is_empty() && run != written_by {
                        return Ok(Attempt::Rebase(run));
                    }
                }
            }
            return Ok(Attempt::Done(finish(steps, &[])));
        }
        // The replay ranges of the batch's resumes, as far as the stream held them before.
        let (from, to) = steps
            .iter()
            .filter_map(|s| s.as_ref().ok().and_then(|s| s.replay))
            .filter(|(from, _)| *from <= seq_before)
            .fold((u64::MAX, 0), |(a, b), (f, t)| {
                (a.min(f), b.max(t.min(seq_before)))
            });
        let replay = (to > 0).then_some((from, to));
        let counter = loaded
            .version
            .rsplit_once(':')
            .and_then(|(_, c)| c.parse::<u64>().ok())
            .unwrap_or(0);
        let (epoch, body, next_due, mut dirty, dedupe) = match st.as_mut() {
            Some(state) => (
                state.epoch.clone(),
                serde_json::to_string(&*state).unwrap_or_default(),
                state.members.iter().filter_map(|m| m.away_until).min(),
                std::mem::take(&mut state.dedupe_dirty),
                std::mem::take(&mut state.dedupe),
            ),
            None => (
                steps
                    .iter()
                    .rev()
                    .find_map(|s| s.as_ref().ok().map(|s| s.epoch.clone()))
                    .unwrap_or_default(),
                String::new(),
                None,
                Vec::new(),
                HashMap::new(),
            ),
        };
        let away_now = st
            .as_ref()
            .map_or(0, |s| s.members.iter().filter(|m| !m.online()).count());
        let version = format!("{epoch}:{}", counter + 1);
        let rc = &ctx.config.reconnection;
        let ttl = (rc.window_secs * 2).max(3600);
        let sh = &self.shared;
        let mut inv = sh.scripts.commit.prepare_invoke();
        let b = crate::bucket(room);
        inv.key(sh.room_key(room, "st"))
            .key(sh.room_key(room, "d"))
            .key(sh.room_key(room, "s"))
            .key(sh.away_key(b))
            .key(sh.rooms_key(b));
        if st.is_some() {
            for n in &placing {
                inv.key(sh.node_rooms_key(b, n));
            }
        }
        inv.arg(&loaded.version)
            .arg(&version)
            .arg(&body)
            .arg(ttl)
            .arg(opts.history_size)
            .arg(sh.room_channel(room))
            .arg(room)
            .arg(next_due.map(|d| d.to_string()).unwrap_or_default())
            .arg(replay.map_or(0, |r| r.0))
            .arg(replay.map_or(0, |r| r.1))
            .arg(&epoch)
            .arg(
                note.as_ref()
                    .map(|n| serde_json::to_string(n).unwrap_or_default())
                    .unwrap_or_default(),
            )
            .arg(rebase_for.unwrap_or(""))
            .arg(base)
            .arg(sh.publish_command());
        dirty.sort();
        dirty.dedup();
        inv.arg(dirty.len());
        for p in &dirty {
            let w = dedupe
                .get(p)
                .map(|w| serde_json::to_string(w).unwrap_or_default())
                .unwrap_or_default();
            inv.arg(p).arg(w);
        }
        for e in &frames {
            inv.arg(e.seq).arg(e.text.as_str());
        }
        let started = Instant::now();
        let mut conn = sh.conn.clone();
        let r: redis::RedisResult<Vec<RValue>> = inv.invoke_async(&mut conn).await;
        sh.metrics
            .op_seconds
            .observe(started.elapsed().as_secs_f64());
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                sh.metrics.errors.inc();
                tracing::warn!(error = %e, room, "room commit failed in Redis");
                return Err(StoreError::Unknown);
            }
        };
        let status: String = v
            .first()
            .and_then(|x| redis::from_redis_value(x).ok())
            .unwrap_or_default();
        match status.as_str() {
            "conflict" => return Ok(Attempt::Conflict),
            "rebase" => {
                let run: String = v
                    .get(1)
                    .and_then(|x| redis::from_redis_value(x).ok())
                    .unwrap_or_default();
                return Ok(Attempt::Rebase(run));
            }
            _ => {}
        }
        let mut held = Vec::new();
        for pair in v[1..].chunks(2) {
            let (Some(id), Some(f)) = (pair.first(), pair.get(1)) else {
                continue;
            };
            let id: String = redis::from_redis_value(id).unwrap_or_default();
            let f: String = redis::from_redis_value(f).unwrap_or_default();
            if let Some(seq) = id.split('-').next().and_then(|s| s.parse::<u64>().ok()) {
                held.push(Buffered {
                    seq,
                    text: Utf8Bytes::from(f),
                });
            }
        }
        {
            let mut away = lock(&self.away);
            if away_now == 0 {
                away.remove(room);
            } else {
                away.insert(room.to_owned(), away_now);
            }
        }
        if rc.enabled {
            ctx.metrics
                .reconnection_events_buffered
                .inc_by(frames.len() as u64);
        }
        Ok(Attempt::Done(finish(steps, &held)))
    }
}
