//! The broker's counters, gathered from every shard over the control mesh.

use super::*;

impl<L: ShardLog> Shard<L> {
    pub(super) async fn gather_stats(&self) -> Vec<ShardStats> {
        let mut out = vec![self.stats()];
        for peer in ShardId::all(self.shard_count).filter(|&p| p != self.id) {
            let (reply, rx) = oneshot::channel();
            if self.control_mesh.send(peer, Control::Stats { reply }).await.is_ok() {
                if let Ok(s) = rx.await {
                    out.push(s);
                }
            }
        }
        out.sort_by_key(|s| s.shard);
        out
    }
}
