//! Recent scheduled sends by unique id, so a producer's resend of a scheduled batch (after a
//! lost reply or a broker restart) is answered with the first one's place instead of holding
//! the batch twice. The id is the `UNIQ_KEY` property of the batch's first record (RocketMQ's
//! client-set message id; the native client sets one on every scheduled message).
//!
//! Pure and bounded: at most `capacity` ids, each for at most `window_ms` after it was
//! stored (times are passed in). A resend later than that, or past the capacity, is stored
//! again: duplicates are then possible, and carry the same id, so a consumer can drop them.

use std::collections::{HashMap, VecDeque};

/// The property holding a message's unique id (RocketMQ's `MessageConst.PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX`).
pub const PROPERTY_UNIQ_KEY: &str = "UNIQ_KEY";
/// Longer ids are not remembered (a resend of such a batch is stored again).
pub const MAX_ID_BYTES: usize = 128;

/// Ids seen in the last `window_ms`, at most `capacity` of them, each with a value.
#[derive(Debug)]
pub struct DedupWindow<V> {
    capacity: usize,
    window_ms: i64,
    map: HashMap<Box<[u8]>, (i64, V)>,
    /// Ids in the order they were remembered, with that time (oldest first).
    order: VecDeque<(Box<[u8]>, i64)>,
}

impl<V> DedupWindow<V> {
    pub fn new(capacity: usize, window_ms: u64) -> Self {
        DedupWindow {
            capacity,
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The value remembered for `id`, if it is still in the window at `now_ms`.
    pub fn get(&mut self, id: &[u8], now_ms: i64) -> Option<&V> {
        self.expire(now_ms);
        self.map.get(id).map(|(_, v)| v)
    }

    /// Remembers `id`, evicting the oldest past the capacity. An id already remembered gets
    /// the new value and keeps its time.
    /// Ids longer than [`MAX_ID_BYTES`] and a zero capacity remember nothing.
    pub fn insert(&mut self, id: &[u8], value: V, now_ms: i64) {
        if id.len() > MAX_ID_BYTES || self.capacity == 0 {
            return;
        }
        self.expire(now_ms);
        if let Some(slot) = self.map.get_mut(id) {
            slot.1 = value;
            return;
        }
        while self.map.len() >= self.capacity {
            self.evict_oldest();
        }
        let id: Box<[u8]> = id.into();
        self.order.push_back((id.clone(), now_ms));
        self.map.insert(id, (now_ms, value));
    }

    /// Forgets `id` (a send that failed before storing anything; rare, so linear).
    pub fn remove(&mut self, id: &[u8]) -> Option<V> {
        let (_, v) = self.map.remove(id)?;
        self.order.retain(|(o, _)| &o[..] != id);
        Some(v)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn expire(&mut self, now_ms: i64) {
        while let Some((_, at)) = self.order.front() {
            if now_ms.saturating_sub(*at) < self.window_ms {
                break;
            }
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((id, _)) = self.order.pop_front() {
            self.map.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_remembered_for_the_window_and_within_the_capacity() {
        let mut w = DedupWindow::new(2, 1_000);
        w.insert(b"a", 1, 0);
        w.insert(b"b", 2, 10);
        assert_eq!(w.get(b"a", 999), Some(&1));
        assert_eq!(w.get(b"a", 1_000), None, "the window is over for a");
        assert_eq!(w.get(b"b", 1_000), Some(&2));
        w.insert(b"c", 3, 1_001);
        w.insert(b"d", 4, 1_002);
        assert_eq!(w.get(b"b", 1_002), None, "the oldest is evicted past the capacity");
        assert_eq!(w.get(b"c", 1_002), Some(&3));
        assert_eq!(w.get(b"d", 1_002), Some(&4));
        assert_eq!(w.remove(b"c"), Some(3));
        assert_eq!(w.get(b"c", 1_002), None);
        w.insert(&[7; MAX_ID_BYTES + 1], 9, 1_003);
        assert_eq!(w.get(&[7; MAX_ID_BYTES + 1], 1_003), None, "too long to remember");
    }

    proptest! {
        /// Against a plain model of the rules (a list in insertion order: expire by time from
        /// the front, evict the oldest past the capacity, update in place): every lookup agrees.
        #[test]
        fn matches_a_model(
            ops in proptest::collection::vec((0u8..12, 0i64..300, any::<bool>()), 1..300),
            capacity in 1usize..6,
        ) {
            let window = 500;
            let mut w = DedupWindow::new(capacity, window as u64);
            let mut model: Vec<(u8, i64, u32)> = Vec::new(); // (id, time, value), oldest first
            let mut now = 0i64;
            for (i, (id, dt, remove)) in ops.into_iter().enumerate() {
                now += dt;
                model.retain(|e| now - e.1 < window);
                if remove {
                    w.remove(&[id]);
                    model.retain(|e| e.0 != id);
                } else {
                    w.insert(&[id], i as u32, now);
                    match model.iter_mut().find(|e| e.0 == id) {
                        Some(e) => e.2 = i as u32,
                        None => {
                            if model.len() >= capacity {
                                model.remove(0);
                            }
                            model.push((id, now, i as u32));
                        }
                    }
                }
                prop_assert!(w.len() <= capacity);
                for probe in 0u8..12 {
                    let want = model.iter().find(|e| e.0 == probe).map(|e| e.2);
                    prop_assert_eq!(w.get(&[probe], now).copied(), want, "id {}", probe);
                }
                prop_assert_eq!(w.len(), model.len());
            }
        }
    }
}
