//! The Lua scripts. Room operations share one generic script, `commit`: a compare-and-set of
//! the room's state with the history append and the publication, decided entirely by the
//! gateway's room rules. The user scripts implement single socket.

use redis::Script;

const ROOM_CHECK: &str = r"
local st = redis.call('HMGET', KEYS[1], 'v', 'r')
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
return {st[1] or '', st[2] or '', run}
";

/// Every script, compiled once per process (hashed for EVALSHA).
pub struct Scripts {
    pub commit: Script,
    pub claim_user: Script,
    pub release_user: Script,
    /// A room's version and writer, and the run id of the Redis holding it. KEYS 1 the
    /// room's state hash (so a cluster routes it to the room's shard).
    pub room_check: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            commit: Script::new(include_str!("lua/commit.lua")),
            claim_user: Script::new(include_str!("lua/claim_user.lua")),
            release_user: Script::new(include_str!("lua/release_user.lua")),
            room_check: Script::new(ROOM_CHECK),
        }
    }
}
