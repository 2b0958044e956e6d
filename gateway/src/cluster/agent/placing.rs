//! The Agent's placement of new Rooms: the candidates (serving, not this node while it drains,
//! the preferred region when a node there serves), the score as this node sees it (its own recent
//! placements count) and the pick, over the registrations as the store has them now. The
//! arithmetic is `placement`'s (pure functions); this file only feeds it.

use std::time::{Duration, Instant};

use super::{Agent, PlaceError, lock};
use crate::cluster::config::Region;
use crate::cluster::placement;
use crate::cluster::store::{NodeInfo, NodeState};

impl Agent {
    /// The placement score of `n` as this node sees it (its own recent placements there count).
    pub(crate) fn score(&self, n: &NodeInfo) -> f64 {
        let now = Instant::now();
        let window = Duration::from_secs(self.cfg.rampup_secs);
        let mine = lock(&self.placed).get(&n.id).map_or(0, |q| {
            q.iter()
                .filter(|t| now.duration_since(**t) <= window)
                .count() as u32
        });
        placement::score(
            &n.load,
            n.workers,
            n.load.recent_rooms + mine,
            self.cfg.rampup_penalty,
        )
    }

    /// Chooses the node for a new Room: live, serving, in `region` (without one, in this node's
    /// own `cluster.region`) when a node there is serving, else anywhere; power of two choices
    /// over the score, on the registrations as the store has them now.
    pub(crate) async fn place(&self, region: Option<&Region>) -> Result<NodeInfo, PlaceError> {
        let fresh = self.store.list_nodes().await?;
        lock(&self.view).nodes = fresh.clone();
        let serving: Vec<NodeInfo> = fresh
            .into_iter()
            .filter(|n| n.state == NodeState::Serving)
            .filter(|n| n.id != self.node_id || !self.is_draining())
            .collect();
        let region = region
            .map(Region::as_str)
            .or((!self.cfg.region.is_empty()).then_some(self.cfg.region.as_str()));
        let regions: Vec<&str> = serving.iter().map(|n| n.region.as_str()).collect();
        let nodes: Vec<&NodeInfo> = placement::in_region(&regions, region)
            .into_iter()
            .map(|i| &serving[i])
            .collect();
        let scores: Vec<f64> = nodes.iter().map(|n| self.score(n)).collect();
        let i = placement::pick(&scores, &mut *lock(&self.rng)).ok_or(PlaceError::NoNode)?;
        let chosen = nodes[i].clone();
        let now = Instant::now();
        let window = Duration::from_secs(self.cfg.rampup_secs);
        let mut placed = lock(&self.placed);
        placed.retain(|_, q| {
            while q.front().is_some_and(|t| now.duration_since(*t) > window) {
                q.pop_front();
            }
            !q.is_empty()
        });
        placed.entry(chosen.id.clone()).or_default().push_back(now);
        Ok(chosen)
    }
}
