//! Keeps the keys of rooms with local members alive: their TTL is refreshed while the room is
//! used here. (Away members are expired by the gateway's sweep, through the room rules.)

use std::sync::Arc;
use std::time::Duration;

use crate::store::RedisRooms;

/// Refreshes the TTL of the rooms with local members every 30 s until the node drains.
pub(crate) async fn sweep_task(store: Arc<RedisRooms>) {
    let Some(ctx) = store.shared.ctx.get().cloned() else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ttl = (ctx.config.reconnection.window_secs * 2).max(3600);
        let rooms = ctx.mirror.rooms();
        for chunk in rooms.chunks(256) {
            let mut pipe = redis::pipe();
            for r in chunk {
                for part in ["st", "d", "s"] {
                    pipe.cmd("EXPIRE")
                        .arg(store.shared.room_key(r, part))
                        .arg(ttl)
                        .ignore();
                }
            }
            let mut conn = store.shared.conn.clone();
            let _: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        }
    }
}
