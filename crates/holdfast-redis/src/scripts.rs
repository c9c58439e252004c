//! The Lua scripts: each room operation is one script, so seq allocation, history append,
//! membership change and publication happen atomically in Redis.

use redis::Script;

macro_rules! room_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/room_prelude.lua"),
            "\n",
            include_str!($file)
        ))
    };
}

/// Every script, compiled once per process (hashed for EVALSHA).
pub struct Scripts {
    pub join: Script,
    pub leave: Script,
    pub publish: Script,
    pub claim: Script,
    pub release: Script,
    pub away: Script,
    pub resume: Script,
    pub expire: Script,
    pub claim_user: Script,
    pub release_user: Script,
    pub direct: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            join: room_script!("lua/join.lua"),
            leave: room_script!("lua/leave.lua"),
            publish: room_script!("lua/publish.lua"),
            claim: room_script!("lua/claim.lua"),
            release: room_script!("lua/release.lua"),
            away: room_script!("lua/away.lua"),
            resume: room_script!("lua/resume.lua"),
            expire: room_script!("lua/expire.lua"),
            claim_user: Script::new(include_str!("lua/claim_user.lua")),
            release_user: Script::new(include_str!("lua/release_user.lua")),
            direct: Script::new(include_str!("lua/direct.lua")),
        }
    }
}
