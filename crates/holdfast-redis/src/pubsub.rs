//! The pub/sub task: one connection per node; room channels are added and removed on demand.
//! Room messages are handed to the node's mirror, which delivers them in `seq` order and asks
//! for a range it missed; that range is read from the room's history. After an outage the task
//! reconnects with backoff, resubscribes, fences sessions that lost their user, and resyncs.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::{FutureExt, StreamExt};
use holdfast_gateway::auth::unix_now_ms;
use holdfast_gateway::room::fanout::{Held, Next};
use holdfast_gateway::room::presence::PresenceNote;
use holdfast_protocol::CloseCode;
use tokio::sync::mpsc;

use crate::store::RedisRooms;
use crate::SubCmd;

impl RedisRooms {
    /// Hands one pub/sub message (`seq epoch kick frame`) to the mirror.
    fn on_room_message(&self, room: &str, payload: &str) -> Next {
        let Some(ctx) = self.shared.ctx.get() else {
            return Next::Nothing;
        };
        let mut parts = payload.splitn(4, ' ');
        let (Some(seq), Some(epoch), Some(kick), Some(frame)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Next::Nothing;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            return Next::Nothing;
        };
        if seq == 0 {
            if let Ok(note) = serde_json::from_str::<PresenceNote>(frame) {
                ctx.mirror.presence(room, Some(epoch), &note);
            }
            return Next::Nothing;
        }
        if frame.starts_with("{\"type\":\"event\"") {
            if let Some(ts) = frame
                .split("\"ts\":")
                .nth(1)
                .and_then(|r| r.split([',', '}']).next())
                .and_then(|t| t.parse::<u64>().ok())
            {
                let lag = unix_now_ms().saturating_sub(ts) as f64 / 1000.0;
                self.shared.metrics.pubsub_lag.observe(lag);
            }
        }
        let held = Held {
            kick: (kick != "-").then(|| kick.to_owned()),
            text: Utf8Bytes::from(frame.to_owned()),
        };
        ctx.mirror.receive(room, seq, Some(epoch), held)
    }

    /// Fetches `from..=to` from the room's history and delivers it; a range that is gone
    /// closes the room's local members (they resume and get the exact gap).
    async fn fetch(&self, room: &str, from: u64, to: u64) {
        let Some(ctx) = self.shared.ctx.get() else {
            return;
        };
        self.shared.metrics.resyncs.inc();
        let entries = self.read_history(room, from, to).await.unwrap_or_default();
        for b in entries {
            let held = Held {
                kick: None,
                text: b.text,
            };
            let _ = ctx.mirror.receive(room, b.seq, None, held);
        }
        ctx.mirror.with(room, |lr| {
            lr.fetching = false;
            let behind = match lr.delivered() {
                Some(d) => to != u64::MAX && d < to,
                None => false,
            };
            if behind {
                tracing::warn!(
                    room,
                    from,
                    to,
                    "room history no longer holds a missed range"
                );
                lr.fail_all();
            }
            lr.drain_early();
        });
    }

    /// After the pub/sub connection came back: close local sessions whose user was claimed by
    /// a newer connection meanwhile (the kick may have been lost), check each room's epoch and
    /// fetch what was published meanwhile.
    async fn resync_all(&self) {
        let Some(ctx) = self.shared.ctx.get() else {
            return;
        };
        self.fence_sessions().await;
        for room in ctx.mirror.rooms() {
            let Some((epoch, delivered)) = ctx
                .mirror
                .with(&room, |v| (v.epoch().map(str::to_owned), v.position()))
            else {
                continue;
            };
            let mut conn = self.shared.conn.clone();
            // On a cluster, on the shard that holds the room (with that shard's run id).
            let answer: redis::RedisResult<(String, String, String)> = self
                .shared
                .scripts
                .room_check
                .key(self.shared.room_key(&room, "st"))
                .invoke_async(&mut conn)
                .await;
            // Unreadable: treated as lost, the members resume.
            let (version, writer, run) = answer.unwrap_or_default();
            let version = (!version.is_empty()).then_some(version);
            let writer = (!writer.is_empty()).then_some(writer);
            let run = (!run.is_empty()).then_some(run);
            let current = version.and_then(|v| v.split_once(':').map(|(e, _)| e.to_owned()));
            // Written by another run of Redis: restored from older data, so the stream may
            // have gone backwards. The next commit starts a new epoch; the members resume and
            // are told what was rolled back.
            let restored = run.is_some() && writer.is_some() && writer != run;
            if restored {
                tracing::warn!(room = %room, "room state restored by another Redis run; closing its local members to resume");
            }
            if current.is_none() || current != epoch || restored {
                ctx.mirror.with(&room, |lr| {
                    lr.fail_all();
                    if let Some(e) = &current {
                        lr.see_epoch(e);
                    }
                });
                continue;
            }
            if let Some(d) = delivered {
                self.fetch(&room, d + 1, u64::MAX).await;
            }
        }
    }

    /// Closes local sessions that no longer own their user in Redis.
    async fn fence_sessions(&self) {
        let Some(sink) = self.shared.sink.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let sessions = sink.sessions();
        let Some(node_id) = self.shared.ctx.get().map(|c| c.node_id.clone()) else {
            return;
        };
        for chunk in sessions.chunks(512) {
            // One group per user: on a cluster each user's key has its own hash tag.
            let groups = chunk
                .iter()
                .map(|(user, _)| {
                    let mut p = redis::pipe();
                    p.cmd("HMGET")
                        .arg(self.shared.user_key(user))
                        .arg("s")
                        .arg("t");
                    p
                })
                .collect();
            let owners = self.shared.query_groups(groups).await;
            for ((user, session), owner) in chunk.iter().zip(owners) {
                // Not answered: nothing is known; the next reconnect checks again.
                let Some(owner) = owner else { continue };
                let fields: Vec<Option<String>> = owner
                    .first()
                    .and_then(|v| redis::from_redis_value(v).ok())
                    .unwrap_or_default();
                let owner = fields.first().cloned().flatten();
                let owner_at = fields
                    .get(1)
                    .cloned()
                    .flatten()
                    .and_then(|t| t.parse::<u64>().ok());
                if owner.as_deref() == Some(&**session) {
                    continue;
                }
                let ours = self
                    .shared
                    .claimed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&**session)
                    .copied();
                match (owner, ours) {
                    // The record names an older claim than this live session's, or none: Redis
                    // came back with older data (or lost the record). The session is the newest
                    // this node knows of; claim again with its own claim time (the script
                    // still lets a newer claim from elsewhere win).
                    (None, Some(at)) => {
                        crate::broker::claim(&self.shared, &node_id, user, session, at).await;
                    }
                    (Some(_), Some(at)) if owner_at.is_some_and(|t| t < at) => {
                        tracing::info!(
                            user = %user,
                            "the user's ownership record is older than its live session here \
                             (Redis came back with older data); claiming it again"
                        );
                        crate::broker::claim(&self.shared, &node_id, user, session, at).await;
                    }
                    (Some(_), _) => {
                        sink.close_user(user, Some(session), CloseCode::Replaced);
                    }
                    (None, None) => {}
                }
            }
        }
    }

    /// Handles a message on this node's own channel.
    fn on_node_message(&self, payload: &str) {
        let Some(sink) = self.shared.sink.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        if let Some(rest) = payload.strip_prefix("kick ") {
            if let Some((session, user)) = rest.split_once(' ') {
                sink.close_user(user, Some(session), CloseCode::Replaced);
            }
        } else if let Some(rest) = payload.strip_prefix("disconnect ") {
            // The server API closed this user's session from another node.
            if let Some((session, user)) = rest.split_once(' ') {
                sink.close_user(user, Some(session), CloseCode::DisconnectedByServer);
            }
        } else if let Some(rest) = payload.strip_prefix("direct ") {
            let Some((len, rest)) = rest.split_once(' ') else {
                return;
            };
            let Ok(len) = len.parse::<usize>() else {
                return;
            };
            if rest.len() >= len && rest.is_char_boundary(len) {
                let (user, frame) = rest.split_at(len);
                sink.deliver_direct(user, Utf8Bytes::from(frame.to_owned()));
            }
        }
    }
}

/// What the pub/sub connection brought.
enum Incoming {
    Message(String, Vec<u8>),
    /// The connection (or, on a cluster, one shard's) was lost.
    Lost,
    Other,
}

/// The node's pub/sub connection: on one instance a RESP2 pub/sub connection; on a cluster a
/// RESP3 cluster connection whose pushes arrive on a channel, with room channels subscribed as
/// shard channels (`SSUBSCRIBE`) on the shard of their slot.
enum PubSub {
    Single(redis::aio::PubSubSink, redis::aio::PubSubStream),
    Cluster(
        redis::cluster_async::ClusterConnection,
        mpsc::UnboundedReceiver<redis::PushInfo>,
    ),
}

/// Room channels subscribed at once on a cluster, one command each (they hash to many slots).
const SUBSCRIBES_IN_FLIGHT: usize = 32;

impl PubSub {
    async fn open(store: &RedisRooms) -> redis::RedisResult<PubSub> {
        let sh = &store.shared;
        match &sh.target {
            crate::Target::Single(url) => {
                let client = crate::conn::single_client(url, &sh.tls)?;
                let (sink, stream) = client.get_async_pubsub().await?.split();
                Ok(PubSub::Single(sink, stream))
            }
            crate::Target::Sentinel(t) => {
                // Whoever is master now; the command connection follows too.
                sh.follow_master().await;
                let client = crate::conn::sentinel_master(t, &sh.tls).await?;
                let (sink, stream) = client.get_async_pubsub().await?.split();
                Ok(PubSub::Single(sink, stream))
            }
            crate::Target::Cluster(nodes) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let client = crate::conn::cluster_client(nodes, &sh.tls, Some(tx))?;
                Ok(PubSub::Cluster(client.get_async_connection().await?, rx))
            }
        }
    }

    async fn subscribe_node(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            PubSub::Single(sink, _) => sink.subscribe(channel).await,
            // Kicks come on the plain channel (published by the ownership script, broadcast
            // to every shard), directed messages and disconnects on the shard channel.
            PubSub::Cluster(conn, _) => {
                conn.subscribe(channel).await?;
                conn.ssubscribe(channel).await
            }
        }
    }

    async fn subscribe_rooms(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            PubSub::Single(sink, _) => {
                if channels.is_empty() {
                    Ok(())
                } else {
                    sink.subscribe(channels).await
                }
            }
            PubSub::Cluster(conn, _) => {
                let each: Vec<_> = channels
                    .iter()
                    .map(|c| {
                        let (mut conn, c) = (conn.clone(), c.clone());
                        async move { conn.ssubscribe(c).await }.boxed()
                    })
                    .collect();
                let results: Vec<redis::RedisResult<()>> = futures_util::stream::iter(each)
                    .buffer_unordered(SUBSCRIBES_IN_FLIGHT)
                    .collect()
                    .await;
                results.into_iter().collect()
            }
        }
    }

    async fn unsubscribe_room(&mut self, channel: &str) {
        let _ = match self {
            PubSub::Single(sink, _) => sink.unsubscribe(channel).await,
            PubSub::Cluster(conn, _) => conn.sunsubscribe(channel).await,
        };
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            PubSub::Single(sink, _) => sink.ping::<redis::Value>().await.map(|_| ()),
            // Every shard answers.
            PubSub::Cluster(conn, _) => redis::cmd("PING")
                .query_async::<redis::Value>(conn)
                .await
                .map(|_| ()),
        }
    }

    async fn next(&mut self) -> Incoming {
        match self {
            PubSub::Single(_, stream) => match stream.next().await {
                Some(msg) => Incoming::Message(
                    msg.get_channel_name().to_owned(),
                    msg.get_payload_bytes().to_vec(),
                ),
                None => Incoming::Lost,
            },
            PubSub::Cluster(_, rx) => match rx.recv().await {
                None => Incoming::Lost,
                Some(push) => match push.kind {
                    redis::PushKind::Disconnection => Incoming::Lost,
                    redis::PushKind::Message | redis::PushKind::SMessage => {
                        let mut data = push.data.into_iter();
                        let channel: Option<String> =
                            data.next().and_then(|v| redis::from_redis_value(&v).ok());
                        let payload: Option<Vec<u8>> =
                            data.next().and_then(|v| redis::from_redis_value(&v).ok());
                        match (channel, payload) {
                            (Some(c), Some(p)) => Incoming::Message(c, p),
                            _ => Incoming::Other,
                        }
                    }
                    _ => Incoming::Other,
                },
            },
        }
    }
}

/// The pub/sub task of one node.
pub(crate) async fn pubsub_task(store: Arc<RedisRooms>, mut cmds: mpsc::Receiver<SubCmd>) {
    let Some(ctx) = store.shared.ctx.get().cloned() else {
        return;
    };
    let node_channel = format!("{}{}", store.shared.node_channel_prefix(), ctx.node_id);
    let mut delay = Duration::from_millis(100);
    let mut first = true;
    loop {
        let conn = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            c = tokio::time::timeout(Duration::from_secs(5), PubSub::open(&store)) => {
                c.unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::IoError, "connect timed out"))))
            }
        };
        let mut ps = match conn {
            Ok(c) => c,
            Err(e) => {
                store.shared.set_healthy(false);
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis pub/sub connection failed; retrying");
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let channels: Vec<String> = ctx
            .mirror
            .rooms()
            .iter()
            .map(|r| store.shared.room_channel(r))
            .collect();
        let subscribed = tokio::time::timeout(Duration::from_secs(5), async {
            ps.subscribe_node(&node_channel).await?;
            ps.subscribe_rooms(&channels).await
        })
        .await;
        if !matches!(subscribed, Ok(Ok(()))) {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
            continue;
        }
        delay = Duration::from_millis(100);
        store.shared.set_healthy(true);
        if !first {
            tracing::info!("Redis pub/sub reconnected; resyncing rooms");
            store.resync_all().await;
        }
        first = false;
        // A connection that stops answering (a partition drops no packet and closes nothing)
        // is found by a bounded PING, and replaced.
        let mut ping = tokio::time::interval(Duration::from_secs(1));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(Duration::from_millis(1500), ps.ping()).await;
                    if !matches!(pong, Ok(Ok(()))) {
                        tracing::warn!("Redis pub/sub connection does not answer PING");
                        break;
                    }
                }
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(SubCmd::Subscribe(room, ack)) => {
                        let channel = [store.shared.room_channel(&room)];
                        let ok = matches!(
                            tokio::time::timeout(Duration::from_secs(5), ps.subscribe_rooms(&channel)).await,
                            Ok(Ok(()))
                        );
                        let _ = ack.send(ok);
                    }
                    Some(SubCmd::Unsubscribe(room)) => {
                        // A view created again meanwhile keeps its subscription.
                        if ctx.mirror.get(&room).is_none() {
                            ps.unsubscribe_room(&store.shared.room_channel(&room)).await;
                        }
                    }
                },
                msg = ps.next() => {
                    let (channel, payload) = match msg {
                        Incoming::Message(c, p) => (c, p),
                        Incoming::Lost => break,
                        Incoming::Other => continue,
                    };
                    let payload = String::from_utf8_lossy(&payload);
                    if channel == node_channel {
                        store.on_node_message(&payload);
                    } else if let Some(room) = store.shared.room_of_channel(&channel) {
                        match store.on_room_message(room, &payload) {
                            Next::Fetch(from, to) => store.fetch(room, from, to).await,
                            Next::Forked(seq) => {
                                store.shared.metrics.forks.inc();
                                tracing::error!(room, seq, "a delivered room message arrived again with other contents; the room's members were closed to resume");
                            }
                            Next::Nothing => {}
                        }
                    }
                }
            }
        }
        store.shared.set_healthy(false);
        tracing::warn!("Redis pub/sub connection lost; reconnecting");
    }
}
