//! The index that makes placement fast at thousands of nodes: a segment tree over the
//! nodes of one class, each inner entry holding the most free cpu, the most free
//! memory and the highest spread key of the nodes below it. A search skips every
//! subtree in which no node has enough cpu or enough memory, so finding a node is
//! about `log2(nodes)` steps instead of a scan.
//!
//! The maxima are upper bounds, not exact answers (the node with the most cpu may not
//! be the one with the most memory): a search still checks each node it reaches with
//! the caller's own test, and goes on when that fails.

/// Free resources of one node as the index sees them. A node that must get nothing
/// (down) is [`Free::NONE`]: below every request, even one of zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Free {
    pub cpu: i64,
    pub mem: i64,
    /// Higher = emptier (see `ClusterState::spread_key`).
    pub key: i64,
}

impl Free {
    /// What a node that takes nothing shows.
    pub const NONE: Free = Free { cpu: -1, mem: -1, key: i64::MIN };

    fn max(self, other: Free) -> Free {
        Free { cpu: self.cpu.max(other.cpu), mem: self.mem.max(other.mem), key: self.key.max(other.key) }
    }

    fn holds(self, cpu: i64, mem: i64) -> bool {
        self.cpu >= cpu && self.mem >= mem
    }
}

/// See the module docs. Positions are `0..len`, in the order nodes should be tried
/// first-fit.
#[derive(Debug, Clone)]
pub(super) struct FreeIndex {
    /// Number of leaves (a power of two, at least 1).
    leaves: usize,
    /// `tree[1]` is the root; the children of `i` are `2i` and `2i + 1`; leaves start
    /// at `leaves`.
    tree: Vec<Free>,
}

impl FreeIndex {
    /// An index of `len` positions, all [`Free::NONE`].
    pub fn new(len: usize) -> Self {
        let leaves = len.max(1).next_power_of_two();
        Self { leaves, tree: vec![Free::NONE; 2 * leaves] }
    }

    /// Sets what position `pos` has free.
    pub fn set(&mut self, pos: usize, free: Free) {
        let mut i = self.leaves + pos;
        self.tree[i] = free;
        while i > 1 {
            i /= 2;
            self.tree[i] = self.tree[2 * i].max(self.tree[2 * i + 1]);
        }
    }

    /// Builds all positions at once (`free[pos]`), in linear time.
    pub fn fill(&mut self, free: impl IntoIterator<Item = Free>) {
        for (pos, f) in free.into_iter().enumerate() {
            self.tree[self.leaves + pos] = f;
        }
        for i in (1..self.leaves).rev() {
            self.tree[i] = self.tree[2 * i].max(self.tree[2 * i + 1]);
        }
    }

    /// Calls `visit` on every position that may hold `cpu` and `mem`, in position
    /// order, until it returns `false`.
    pub fn first_fits(&self, cpu: i64, mem: i64, mut visit: impl FnMut(usize) -> bool) {
        if !self.tree[1].holds(cpu, mem) {
            return;
        }
        // Depth-first, left before right; the stack never exceeds the tree's depth + 1.
        let mut stack = Vec::with_capacity(32);
        stack.push(1usize);
        while let Some(i) = stack.pop() {
            if !self.tree[i].holds(cpu, mem) {
                continue;
            }
            if i >= self.leaves {
                if !visit(i - self.leaves) {
                    return;
                }
            } else {
                stack.push(2 * i + 1);
                stack.push(2 * i);
            }
        }
    }

    /// The position with the highest key among those `score` accepts, searching only
    /// where `cpu` and `mem` may fit. `score(pos)` gives the position's real key, or
    /// None to refuse it; a real key must not exceed the key the index holds. Of equal
    /// keys the first reached wins (higher-key subtrees first, left before right on
    /// ties): deterministic, and equal subtrees are not searched twice.
    pub fn best(&self, cpu: i64, mem: i64, mut score: impl FnMut(usize) -> Option<i64>) -> Option<(usize, i64)> {
        let mut best: Option<(usize, i64)> = None;
        let mut stack = Vec::with_capacity(32);
        stack.push(1usize);
        while let Some(i) = stack.pop() {
            let here = self.tree[i];
            if !here.holds(cpu, mem) || best.is_some_and(|(_, k)| here.key <= k) {
                continue;
            }
            if i >= self.leaves {
                let pos = i - self.leaves;
                if let Some(k) = score(pos)
                    && best.is_none_or(|(_, b)| k > b)
                {
                    best = Some((pos, k));
                }
            } else {
                // The child with the higher key is searched first (pushed last).
                let (l, r) = (2 * i, 2 * i + 1);
                if self.tree[l].key >= self.tree[r].key {
                    stack.push(r);
                    stack.push(l);
                } else {
                    stack.push(l);
                    stack.push(r);
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn free(cpu: i64, mem: i64, key: i64) -> Free {
        Free { cpu, mem, key }
    }

    proptest! {
        /// first_fits visits exactly the positions that hold the request, in order;
        /// best finds one with the highest key among them.
        #[test]
        fn searches_agree_with_a_scan(
            nodes in proptest::collection::vec((0i64..10, 0i64..10, 0i64..5, any::<bool>()), 1..70),
            cpu in 0i64..10,
            mem in 0i64..10,
        ) {
            let frees: Vec<Free> = nodes.iter()
                .map(|&(c, m, k, up)| if up { free(c, m, k) } else { Free::NONE })
                .collect();
            let mut index = FreeIndex::new(frees.len());
            // Half by fill, half by set: both must build the same tree.
            index.fill(frees.iter().copied());
            let mut by_set = FreeIndex::new(frees.len());
            for (p, f) in frees.iter().enumerate() { by_set.set(p, *f); }
            prop_assert_eq!(&index.tree, &by_set.tree);

            let want: Vec<usize> = (0..frees.len()).filter(|&p| frees[p].holds(cpu, mem)).collect();
            let mut seen = vec![];
            index.first_fits(cpu, mem, |p| { seen.push(p); true });
            prop_assert_eq!(&seen, &want);

            let top = want.iter().map(|&p| frees[p].key).max();
            let found = index.best(cpu, mem, |p| Some(frees[p].key));
            prop_assert_eq!(found.map(|(_, k)| k), top);
            if let Some((p, k)) = found {
                prop_assert!(want.contains(&p) && frees[p].key == k);
            }
        }
    }

    #[test]
    fn first_fits_stops_when_told() {
        let mut index = FreeIndex::new(5);
        index.fill((0..5).map(|_| free(1, 1, 0)));
        let mut seen = vec![];
        index.first_fits(1, 1, |p| {
            seen.push(p);
            seen.len() < 2
        });
        assert_eq!(seen, [0, 1]);
        let mut none = vec![];
        index.first_fits(2, 0, |p| {
            none.push(p);
            true
        });
        assert!(none.is_empty());
    }
}
