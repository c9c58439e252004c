//! Publish dedupe: the recent client message ids of one room member, with the `seq` each
//! publish got, so a retried publish is answered with its original ack instead of being
//! delivered again. The window belongs to the membership, so it survives a resume.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The recent publish ids of one member, oldest first; bounded by the window given to
/// [`DedupeWindow::insert`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DedupeWindow {
    recent: VecDeque<(String, u64)>,
}

impl DedupeWindow {
    /// The seq a publish with this id got, if it is still remembered.
    pub fn lookup(&self, id: &str) -> Option<u64> {
        self.recent
            .iter()
            .rev()
            .find(|(k, _)| k == id)
            .map(|(_, s)| *s)
    }

    /// Remembers `id` → `seq`, forgetting the oldest ids beyond `window`.
    pub fn insert(&mut self, id: &str, seq: u64, window: usize) {
        while self.recent.len() >= window.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back((id.to_owned(), seq));
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_window_is_bounded() {
        let mut d = DedupeWindow::default();
        for i in 0..10u64 {
            d.insert(&format!("id{i}"), i, 4);
        }
        assert_eq!(d.lookup("id9"), Some(9));
        assert_eq!(d.lookup("id6"), Some(6));
        assert_eq!(d.lookup("id5"), None);
        assert_eq!(d.len(), 4);
    }
}
