//! The idle-connection pool both upstream clients keep per thread ([`crate::lean`]'s connections and hyper's
//! senders in [`crate::upstream`]): per [`PoolKey`] (upstream and identity), a stack of idle connections with the
//! time each was put back, most recent last. Per thread because each worker is a single-threaded runtime (`server::start`): a connection is
//! only ever used and woken on the thread that made it, so there is no lock and no cross-thread wake-up on the hot
//! path, like nginx's worker model.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// An idle connection is dropped after this long unused (as hyper-util's pool did), so connections a backend has
/// silently forgotten are not kept for ever.
pub const IDLE: Duration = Duration::from_secs(60);

/// At most this many idle connections are kept per upstream and thread.
pub const MAX_IDLE: usize = 512;

/// Which requests may share an upstream connection: those to the same upstream **on behalf of the same signed-in
/// user** (or all anonymous ones together). HTTP/1.1 reuse trusts the backend to frame every response exactly; one
/// that does not (a body after a HEAD, more bytes than its `Content-Length`, sent late) shifts the connection by a
/// response, and the next request on it gets the previous one's answer. No check before reuse can close that
/// window — bytes may arrive after any check — so the pool makes sure the shift can never cross from one person to
/// another: a user's authenticated response can only ever be misdelivered to that same user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The upstream's own key (`host:port` or `unix:/path`).
    pub upstream: Arc<str>,
    /// The local user id the request is made for; `None` for a request without a session.
    pub user: Option<i64>,
}

/// What a pool asks of a connection.
pub trait Pooled {
    /// Whether it may still carry a request: open, nothing unexpected pending on it. Asked only of the connections
    /// a [`Pool::take`] meets on its way and by [`Pool::sweep`], so it may cost a syscall.
    fn usable(&self) -> bool;

    /// Whether it can take a request right now. hyper's sender goes back to the pool as soon as a response head has
    /// arrived, and is ready again only once that response's body has been read.
    fn ready(&self) -> bool {
        true
    }
}

/// One thread's idle connections, per [`PoolKey`].
pub struct Pool<T> {
    idle: HashMap<PoolKey, Vec<(T, Instant)>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            idle: HashMap::new(),
        }
    }
}

/// The keep-or-drop rule, one place for [`Pool::take`] and [`Pool::sweep`]: not idle past the limit (checked
/// first: it costs nothing) and still usable.
fn keep<T: Pooled>(conn: &T, since: Instant, now: Instant) -> bool {
    now.duration_since(since) < IDLE && conn.usable()
}

impl<T: Pooled> Pool<T> {
    /// The most recently returned ready connection for `key`; the unusable and long-idle ones met on the way are
    /// dropped (closing them).
    pub fn take(&mut self, key: &PoolKey) -> Option<T> {
        let idle = self.idle.get_mut(key)?;
        let now = Instant::now();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let (conn, since) = &idle[i];
            if !keep(conn, *since, now) {
                idle.remove(i);
            } else if conn.ready() {
                return Some(idle.remove(i).0);
            }
        }
        None
    }

    /// Returns `conn` to the pool under `key`, unless `key` already holds [`MAX_IDLE`] (then it is closed).
    pub fn put(&mut self, key: &PoolKey, conn: T) {
        let idle = match self.idle.get_mut(key) {
            Some(v) => v,
            None => self.idle.entry(key.clone()).or_default(),
        };
        let now = Instant::now();
        // take() starts from the most recent, so the oldest can sit at the front unused: drop them once they are
        // past the idle limit (one comparison when none is).
        if idle
            .first()
            .is_some_and(|(_, t)| now.duration_since(*t) >= IDLE)
        {
            idle.retain(|(_, t)| now.duration_since(*t) < IDLE);
        }
        if idle.len() < MAX_IDLE {
            idle.push((conn, now));
        }
    }

    /// Drops every connection [`keep`] rejects, and the upstreams left with none. take() and put() only prune the
    /// upstream they are used for, so without this the connections to a machine nobody visits again
    /// (decommissioned, its route removed) would hold their sockets for the life of the process. Each worker's
    /// accept loop runs it periodically (`server::serve`).
    pub fn sweep(&mut self) {
        let now = Instant::now();
        self.idle.retain(|_, idle| {
            idle.retain(|(c, t)| keep(c, *t, now));
            !idle.is_empty()
        });
    }

    /// How many idle connections this pool holds for `key`.
    #[cfg(test)]
    pub fn len(&self, key: &PoolKey) -> usize {
        self.idle.get(key).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A stand-in connection: its usability and readiness are set by the test; `asked` counts `usable` calls.
    struct Fake {
        id: u32,
        usable: bool,
        ready: bool,
        asked: Rc<Cell<u32>>,
    }

    impl Pooled for Fake {
        fn usable(&self) -> bool {
            self.asked.set(self.asked.get() + 1);
            self.usable
        }
        fn ready(&self) -> bool {
            self.ready
        }
    }

    fn key(upstream: &str, user: Option<i64>) -> PoolKey {
        PoolKey {
            upstream: upstream.into(),
            user,
        }
    }

    fn fake(id: u32, usable: bool, ready: bool, asked: &Rc<Cell<u32>>) -> Fake {
        Fake {
            id,
            usable,
            ready,
            asked: asked.clone(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn take_returns_the_most_recent_ready_one_and_drops_only_the_unusable_it_meets() {
        let asked = Rc::new(Cell::new(0));
        let key = key("k", None);
        let mut pool = Pool::default();
        for (id, usable, ready) in [
            (1, true, true),
            (2, false, true),
            (3, true, true),
            (4, true, false),
            (5, false, true),
        ] {
            pool.put(&key, fake(id, usable, ready, &asked));
        }
        // From the top: 5 is dropped, 4 is busy and stays, 3 is taken; 1 and 2 are not even asked.
        assert_eq!(pool.take(&key).map(|c| c.id), Some(3));
        assert_eq!(asked.get(), 3);
        assert_eq!(pool.len(&key), 3, "1, 2 and the busy 4 remain");
        // Next: 4 busy, 2 dropped, 1 taken; then only the busy one is left, and nothing is taken.
        assert_eq!(pool.take(&key).map(|c| c.id), Some(1));
        assert!(pool.take(&key).is_none());
        assert_eq!(pool.len(&key), 1);
        assert!(pool.take(&self::key("other", None)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_only_ever_taken_for_the_same_upstream_and_the_same_user() {
        let asked = Rc::new(Cell::new(0));
        let mut pool = Pool::default();
        pool.put(&key("up", Some(1)), fake(1, true, true, &asked));
        pool.put(&key("up", None), fake(2, true, true, &asked));
        for other in [
            key("up", Some(2)),
            key("up", Some(-1)),
            key("up ", Some(1)),
            key("other", None),
        ] {
            assert!(pool.take(&other).is_none(), "{other:?}");
        }
        assert_eq!(pool.take(&key("up", None)).map(|c| c.id), Some(2));
        assert!(
            pool.take(&key("up", None)).is_none(),
            "anonymous got user 1's"
        );
        assert_eq!(pool.take(&key("up", Some(1))).map(|c| c.id), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_past_the_limit_is_never_taken_and_the_sweep_drops_it_and_its_key() {
        let asked = Rc::new(Cell::new(0));
        let (a, b) = (key("a", None), key("b", Some(7)));
        let mut pool = Pool::default();
        pool.put(&a, fake(1, true, true, &asked));
        pool.put(&b, fake(2, false, true, &asked));
        pool.sweep();
        assert_eq!((pool.len(&a), pool.len(&b)), (1, 0), "the unusable one");
        assert!(!pool.idle.contains_key(&b), "a key left empty is removed");
        tokio::time::advance(IDLE).await;
        let before = asked.get();
        assert!(pool.take(&a).is_none(), "idle past the limit");
        assert_eq!(
            asked.get(),
            before,
            "the age is checked before the (costly) usability"
        );
        pool.put(&a, fake(3, true, true, &asked));
        tokio::time::advance(IDLE).await;
        pool.sweep();
        assert!(pool.idle.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn put_drops_the_expired_front_and_keeps_at_most_max_idle() {
        let asked = Rc::new(Cell::new(0));
        let key = key("k", Some(3));
        let mut pool = Pool::default();
        pool.put(&key, fake(0, true, true, &asked));
        tokio::time::advance(IDLE).await;
        for id in 1..=(MAX_IDLE as u32 + 10) {
            pool.put(&key, fake(id, true, true, &asked));
        }
        assert_eq!(pool.len(&key), MAX_IDLE);
        assert_eq!(
            asked.get(),
            0,
            "put never asks usability (a syscall for lean connections)"
        );
        assert_eq!(pool.take(&key).map(|c| c.id), Some(MAX_IDLE as u32));
    }
}
