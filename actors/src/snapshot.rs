//! Owner writes, everyone reads.
//!
//! State that request handlers only read (key sets, limits, the current address of a supervisor)
//! is owned by one actor, which publishes each new version as an immutable [`Arc`] snapshot.
//! Handlers read the latest snapshot with one atomic load: no mailbox, no lock, no waiting on the
//! owner. The snapshot outlives the actor that writes it, so when a crashed owner is restarted the
//! readers keep the last good value until the new instance publishes.

use std::sync::Arc;

use arc_swap::ArcSwap;

/// A published value: the owner calls [`Snapshot::publish`], readers call [`Snapshot::load`].
///
/// Cloning a `Snapshot` clones the handle, not the value: every clone sees the same publications.
pub struct Snapshot<T> {
    cell: Arc<ArcSwap<T>>,
}

impl<T> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Self {
            cell: Arc::clone(&self.cell),
        }
    }
}

impl<T> Snapshot<T> {
    /// A snapshot that starts with `initial`.
    pub fn new(initial: T) -> Self {
        Self {
            cell: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    /// Replace the published value. Readers that already hold the old `Arc` keep it.
    pub fn publish(&self, value: T) {
        self.cell.store(Arc::new(value));
    }

    /// Replace the published value with one derived from the current one.
    pub fn update(&self, f: impl Fn(&T) -> T) {
        self.cell.rcu(|current| f(current));
    }

    /// The latest published value.
    pub fn load(&self) -> Arc<T> {
        self.cell.load_full()
    }
}

impl<T: Default> Default for Snapshot<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> std::fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_publications_and_keep_old_values() {
        let owner = Snapshot::new(1u32);
        let reader = owner.clone();
        let held = reader.load();
        owner.publish(2);
        assert_eq!(*reader.load(), 2);
        assert_eq!(*held, 1, "a reader keeps the value it loaded");
        owner.update(|v| v + 1);
        assert_eq!(*reader.load(), 3);
    }
}
