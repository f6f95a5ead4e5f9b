//! Who is in which thread, cached: membership of a two-person thread never changes,
//! so checking it on every send must not cost a query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::domain::{ThreadId, User};

/// A bound so the cache cannot grow with the number of threads ever touched; when
/// it is reached the cache starts over, which costs one query per thread again.
const MAX_THREADS: usize = 100_000;

#[derive(Debug, Default)]
pub(super) struct Members {
    by_thread: Mutex<HashMap<ThreadId, Arc<[User]>>>,
}

impl Members {
    pub(super) fn get(&self, thread: ThreadId) -> Option<Arc<[User]>> {
        self.by_thread.lock().unwrap_or_else(PoisonError::into_inner).get(&thread).cloned()
    }

    pub(super) fn insert(&self, thread: ThreadId, users: Vec<User>) -> Arc<[User]> {
        let users: Arc<[User]> = users.into();
        let mut map = self.by_thread.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_THREADS {
            map.clear();
        }
        map.insert(thread, users.clone());
        users
    }
}
