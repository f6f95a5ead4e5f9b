//! Who is in which thread, cached: membership of a two-person thread never changes,
//! and neither does which thread is a pair's direct one, so checking them on every
//! send must not cost a query.

use std::sync::{Arc, Mutex, PoisonError};

use foldhash::{HashMap, HashMapExt};

use crate::domain::{ThreadId, User, UserId, UserRef};

/// A bound so the cache cannot grow with the number of threads ever touched; when
/// it is reached the cache starts over, which costs one query per thread again.
const MAX_THREADS: usize = 100_000;

/// A thread's participants, as its messages name them (built once, shared by
/// every message), with their ids ready to address events.
#[derive(Debug)]
pub(super) struct ThreadMembers {
    pub(super) users: Vec<UserRef>,
    pub(super) ids: Arc<[UserId]>,
}

impl ThreadMembers {
    pub(super) fn contains(&self, user: UserId) -> bool {
        self.ids.contains(&user)
    }

    /// Everyone but `user`: typing and read events go to the other participants only.
    pub(super) fn others(&self, user: UserId) -> Arc<[UserId]> {
        self.ids.iter().copied().filter(|id| *id != user).collect()
    }
}

#[derive(Debug, Default)]
pub(super) struct Members {
    by_thread: Mutex<HashMap<ThreadId, Arc<ThreadMembers>>>,
    /// The direct thread of each pair, the lower id first.
    direct: Mutex<HashMap<(UserId, UserId), ThreadId>>,
}

impl Members {
    pub(super) fn get(&self, thread: ThreadId) -> Option<Arc<ThreadMembers>> {
        self.by_thread.lock().unwrap_or_else(PoisonError::into_inner).get(&thread).cloned()
    }

    pub(super) fn insert(&self, thread: ThreadId, users: Vec<User>) -> Arc<ThreadMembers> {
        let ids = users.iter().map(|u| u.id).collect();
        let users = users.iter().map(UserRef::from).collect();
        let members = Arc::new(ThreadMembers { users, ids });
        let mut map = self.by_thread.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_THREADS {
            map.clear();
        }
        map.insert(thread, members.clone());
        members
    }

    /// Drops the threads of a user whose name or role changed (the host updated
    /// them), so the next send renders them as they are now. Rare, so a scan.
    pub(super) fn forget_user(&self, user: UserId) {
        self.by_thread.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, m| !m.contains(user));
    }

    /// Forgets everything, with the maps' memory: called when the node goes quiet
    /// after load, so entries made during it do not pin the allocator's pages (each
    /// is read back with one query when next needed).
    pub(super) fn clear(&self) {
        *self.by_thread.lock().unwrap_or_else(PoisonError::into_inner) = HashMap::new();
        *self.direct.lock().unwrap_or_else(PoisonError::into_inner) = HashMap::new();
    }

    pub(super) fn direct(&self, a: UserId, b: UserId) -> Option<ThreadId> {
        self.direct.lock().unwrap_or_else(PoisonError::into_inner).get(&pair(a, b)).copied()
    }

    pub(super) fn remember_direct(&self, a: UserId, b: UserId, thread: ThreadId) {
        let mut map = self.direct.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_THREADS {
            map.clear();
        }
        map.insert(pair(a, b), thread);
    }
}

fn pair(a: UserId, b: UserId) -> (UserId, UserId) {
    if a <= b { (a, b) } else { (b, a) }
}
