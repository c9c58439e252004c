//! The Lua scripts. Room operations share one generic script, `commit`: a compare-and-set of
//! the room's state with the history append and the publication, decided entirely by the
//! gateway's room rules. The user scripts implement single socket.

use redis::Script;

/// Every script, compiled once per process (hashed for EVALSHA).
pub struct Scripts {
    pub commit: Script,
    pub claim_user: Script,
    pub release_user: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            commit: Script::new(include_str!("lua/commit.lua")),
            claim_user: Script::new(include_str!("lua/claim_user.lua")),
            release_user: Script::new(include_str!("lua/release_user.lua")),
        }
    }
}
