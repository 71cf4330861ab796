//! The dependency graph of streams: validation order, readiness, who is
//! blocked by a failure.
//!
//! Edges point from a stream to the streams in its `depends_on`. Ids that
//! name no stream are ignored here (config refuses them before a plan is
//! ever made); a duplicate id resolves to its first stream.
//!
//! The graph is over (id, deps) only, through [`Node`]: plan knows nothing
//! of the swarm file, so config (which uses it to find cycles) can depend on
//! it without a circle.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A vertex of the graph: an id and the ids it depends on.
pub trait Node {
    fn id(&self) -> &str;
    /// In `depends_on` order; repeats and unknown ids are allowed.
    fn deps(&self) -> &[String];
}

/// `(id, deps)`: a graph without any stream attached.
impl Node for (String, Vec<String>) {
    fn id(&self) -> &str {
        &self.0
    }
    fn deps(&self) -> &[String] {
        &self.1
    }
}

/// For each stream (by index), the indexes of its known dependencies,
/// without repeats, in `depends_on` order.
fn dep_indexes<N: Node>(streams: &[N]) -> Vec<Vec<usize>> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, s) in streams.iter().enumerate() {
        index.entry(s.id()).or_insert(i);
    }
    streams
        .iter()
        .map(|s| {
            let mut deps: Vec<usize> = Vec::new();
            for d in s.deps() {
                if let Some(&j) = index.get(d.as_str()) {
                    if !deps.contains(&j) {
                        deps.push(j);
                    }
                }
            }
            deps
        })
        .collect()
}

/// Kahn's algorithm with the earliest ready stream (file order) first.
/// Returns the order of indexes and whether every stream was placed.
fn kahn(deps: &[Vec<usize>]) -> (Vec<usize>, bool) {
    let n = deps.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut unmet: Vec<usize> = vec![0; n];
    for (i, ds) in deps.iter().enumerate() {
        unmet[i] = ds.len();
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| unmet[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &dependents[i] {
            unmet[d] -= 1;
            if unmet[d] == 0 {
                ready.insert(d);
            }
        }
    }
    let complete = order.len() == n;
    (order, complete)
}

/// Stream ids in an order where every stream comes after its dependencies
/// (ties keep file order). `Err(cycle)` names the ids of one cycle, in order,
/// first id repeated at the end (`a -> b -> a`).
///
/// In the cycle each id depends on the next one; it starts at the cycle's
/// stream that comes first in the file.
pub fn topo_order<N: Node>(streams: &[N]) -> Result<Vec<String>, Vec<String>> {
    let deps = dep_indexes(streams);
    let (order, complete) = kahn(&deps);
    if complete {
        return Ok(order
            .into_iter()
            .map(|i| streams[i].id().to_string())
            .collect());
    }
    let mut placed = vec![false; streams.len()];
    for &i in &order {
        placed[i] = true;
    }
    // Every unplaced stream has at least one unplaced dependency, so a walk
    // along unplaced dependencies must come back to a stream it has seen.
    let Some(start) = (0..streams.len()).find(|&i| !placed[i]) else {
        return Ok(order
            .into_iter()
            .map(|i| streams[i].id().to_string())
            .collect());
    };
    let mut seen_at: Vec<Option<usize>> = vec![None; streams.len()];
    let mut path: Vec<usize> = Vec::new();
    let mut cur = start;
    let mut cycle: Vec<usize> = loop {
        if let Some(p) = seen_at[cur] {
            break path[p..].to_vec();
        }
        seen_at[cur] = Some(path.len());
        path.push(cur);
        match deps[cur].iter().copied().find(|&d| !placed[d]) {
            Some(next) => cur = next,
            // Cannot happen (see above); report what is left.
            None => break path.clone(),
        }
    };
    // Start at the member that comes first in the file.
    if let Some(min_pos) = cycle
        .iter()
        .enumerate()
        .min_by_key(|(_, &i)| i)
        .map(|(p, _)| p)
    {
        cycle.rotate_left(min_pos);
    }
    let mut ids: Vec<String> = cycle.iter().map(|&i| streams[i].id().to_string()).collect();
    if let Some(first) = ids.first().cloned() {
        ids.push(first);
    }
    Err(ids)
}

/// Every stream that depends on `id`, directly or not (not `id` itself), in
/// topological order.
///
/// With a cycle in the graph (which config refuses) the order falls back to
/// file order.
pub fn dependents_of<N: Node>(streams: &[N], id: &str) -> Vec<String> {
    let Some(root) = streams.iter().position(|s| s.id() == id) else {
        return Vec::new();
    };
    let deps = dep_indexes(streams);
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); streams.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut found = vec![false; streams.len()];
    let mut todo = vec![root];
    while let Some(i) = todo.pop() {
        for &d in &dependents[i] {
            if !found[d] {
                found[d] = true;
                todo.push(d);
            }
        }
    }
    found[root] = false;
    let (order, complete) = kahn(&deps);
    let order: Vec<usize> = if complete {
        order
    } else {
        (0..streams.len()).collect()
    };
    order
        .into_iter()
        .filter(|&i| found[i])
        .map(|i| streams[i].id().to_string())
        .collect()
}

/// The order in which ready streams get a free slot: the longest chain of
/// work still behind a stream first (its own plus its dependents', counted
/// in streams: durations are unknown before they run), then the
/// topological order. Starting the head of the longest chain early is what
/// keeps a graph's makespan near its critical path (list scheduling); the
/// file order alone leaves a long chain waiting behind leaves.
pub fn start_order<N: Node>(streams: &[N]) -> Vec<String> {
    start_order_spread(streams, None)
}

/// [`start_order`], with streams of equal work behind them ordered by a
/// hash of `salt` (the machine) and their id instead of the topological
/// order: supervisors sharing a swarm through a remote then reach for
/// different streams first, instead of all racing for the same claims.
pub fn start_order_spread<N: Node>(streams: &[N], salt: Option<&str>) -> Vec<String> {
    let deps = dep_indexes(streams);
    let (order, _) = kahn(&deps);
    let mut height = vec![1usize; streams.len()];
    // Dependents come after their dependencies in `order`: walk it backwards.
    for &i in order.iter().rev() {
        for &d in &deps[i] {
            height[d] = height[d].max(height[i] + 1);
        }
    }
    let mut rank: Vec<usize> = order.clone();
    // Streams a cycle left out of `order` go last, in file order.
    let placed: BTreeSet<usize> = order.iter().copied().collect();
    rank.extend((0..streams.len()).filter(|i| !placed.contains(i)));
    let pos: HashMap<usize, usize> = rank.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let spread = |i: usize| {
        salt.map_or(0, |m| {
            crate::util::fnv1a(format!("{m}\0{}", streams[i].id()).as_bytes())
        })
    };
    rank.sort_by_key(|&i| (std::cmp::Reverse(height[i]), spread(i), pos[&i]));
    rank.into_iter()
        .map(|i| streams[i].id().to_string())
        .collect()
}

/// Every stream `id` depends on, directly or not (not `id` itself): what is
/// merged into the target before `id` starts. In file order.
pub fn dependencies_of<N: Node>(streams: &[N], id: &str) -> Vec<String> {
    let up = Upstream::new(streams);
    match up.index_of(id) {
        Some(i) => up
            .of(i)
            .into_iter()
            .map(|j| streams[j].id().to_string())
            .collect(),
        None => Vec::new(),
    }
}

/// [`dependencies_of`] for many streams of one swarm: the graph is indexed
/// once, and each question walks only that stream's upstream, so asking
/// for every stream costs the sum of their upstreams, not the swarm's size
/// times itself.
pub struct Upstream<'a> {
    deps: Vec<Vec<usize>>,
    index: HashMap<&'a str, usize>,
}

impl<'a> Upstream<'a> {
    pub fn new<N: Node>(streams: &'a [N]) -> Upstream<'a> {
        let mut index = HashMap::new();
        for (i, s) in streams.iter().enumerate() {
            index.entry(s.id()).or_insert(i);
        }
        Upstream {
            deps: dep_indexes(streams),
            index,
        }
    }

    /// The index of stream `id` (its first, for a duplicate id).
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The indexes of every stream stream `i` depends on, directly or not
    /// (not `i` itself), in file order.
    pub fn of(&self, i: usize) -> Vec<usize> {
        let mut found = BTreeSet::new();
        let mut todo = vec![i];
        while let Some(k) = todo.pop() {
            for &d in &self.deps[k] {
                if found.insert(d) {
                    todo.push(d);
                }
            }
        }
        found.remove(&i);
        found.into_iter().collect()
    }
}

/// True when every dependency of `stream` is in `merged`.
pub fn deps_met<N: Node>(stream: &N, merged: &BTreeMap<String, bool>) -> bool {
    stream
        .deps()
        .iter()
        .all(|d| merged.get(d).copied().unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, deps: &[&str]) -> (String, Vec<String>) {
        (id.to_string(), deps.iter().map(|d| d.to_string()).collect())
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// The head of the longest chain gets a slot first; ties keep the
    /// topological (file) order; a cycle's streams come last.
    #[test]
    fn start_order_puts_the_longest_chain_first() {
        let g = vec![
            s("leaf1", &[]),
            s("leaf2", &[]),
            s("head", &[]),
            s("mid", &["head"]),
            s("tail", &["mid"]),
            s("x", &["y"]),
            s("y", &["x"]),
        ];
        assert_eq!(
            start_order(&g),
            ids(&["head", "mid", "leaf1", "leaf2", "tail", "x", "y"])
        );
    }

    #[test]
    fn empty_plan() {
        let none: [(String, Vec<String>); 0] = [];
        assert_eq!(topo_order(&none), Ok(vec![]));
        assert!(dependents_of(&none, "a").is_empty());
    }

    #[test]
    fn independent_streams_keep_file_order() {
        let v = [s("c", &[]), s("a", &[]), s("b", &[])];
        assert_eq!(topo_order(&v), Ok(ids(&["c", "a", "b"])));
    }

    #[test]
    fn dependencies_come_first_even_when_declared_later() {
        let v = [
            s("ch02", &["outline"]),
            s("ch01", &["outline"]),
            s("outline", &[]),
        ];
        assert_eq!(topo_order(&v), Ok(ids(&["outline", "ch02", "ch01"])));
    }

    #[test]
    fn ties_are_broken_by_file_order_not_discovery_order() {
        // x becomes ready once z is placed and, being first in the file,
        // goes before w, which was ready all along.
        let v = [s("x", &["z"]), s("y", &[]), s("z", &[]), s("w", &[])];
        assert_eq!(topo_order(&v), Ok(ids(&["y", "z", "x", "w"])));
    }

    #[test]
    fn fan_out_and_fan_in() {
        let v = [
            s("outline", &[]),
            s("ch01", &["outline"]),
            s("ch02", &["outline"]),
            s("ch03", &["outline"]),
            s("review", &["ch01", "ch02", "ch03"]),
        ];
        assert_eq!(
            topo_order(&v),
            Ok(ids(&["outline", "ch01", "ch02", "ch03", "review"]))
        );
        assert_eq!(
            dependents_of(&v, "outline"),
            ids(&["ch01", "ch02", "ch03", "review"])
        );
        assert_eq!(dependents_of(&v, "ch02"), ids(&["review"]));
        assert!(dependents_of(&v, "review").is_empty());
        assert!(dependents_of(&v, "nope").is_empty());
    }

    #[test]
    fn diamond() {
        let v = [
            s("d", &["b", "c"]),
            s("c", &["a"]),
            s("b", &["a"]),
            s("a", &[]),
        ];
        assert_eq!(topo_order(&v), Ok(ids(&["a", "c", "b", "d"])));
        assert_eq!(dependents_of(&v, "a"), ids(&["c", "b", "d"]));
        assert_eq!(dependents_of(&v, "b"), ids(&["d"]));
        assert_eq!(dependencies_of(&v, "d"), ids(&["c", "b", "a"]));
        assert_eq!(dependencies_of(&v, "b"), ids(&["a"]));
        assert!(dependencies_of(&v, "a").is_empty());
        assert!(dependencies_of(&v, "nope").is_empty());
    }

    #[test]
    fn repeated_and_unknown_dependencies_are_harmless() {
        let v = [s("a", &[]), s("b", &["a", "a", "ghost"])];
        assert_eq!(topo_order(&v), Ok(ids(&["a", "b"])));
        assert_eq!(dependents_of(&v, "a"), ids(&["b"]));
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let v = [s("a", &[]), s("b", &["b"])];
        assert_eq!(topo_order(&v), Err(ids(&["b", "b"])));
    }

    #[test]
    fn two_cycle() {
        let v = [s("a", &["b"]), s("b", &["a"])];
        assert_eq!(topo_order(&v), Err(ids(&["a", "b", "a"])));
    }

    #[test]
    fn cycle_is_reported_in_dependency_order_from_its_first_stream() {
        // c -> a -> b -> c; entered through d, which depends on the cycle.
        let v = [
            s("d", &["b"]),
            s("x", &[]),
            s("b", &["c"]),
            s("a", &["b"]),
            s("c", &["x", "a"]),
        ];
        assert_eq!(topo_order(&v), Err(ids(&["b", "c", "a", "b"])));
    }

    #[test]
    fn dependents_with_a_cycle_fall_back_to_file_order() {
        let v = [s("a", &[]), s("c", &["b", "a"]), s("b", &["c"])];
        assert_eq!(dependents_of(&v, "a"), ids(&["c", "b"]));
    }

    #[test]
    fn deps_met_needs_every_dependency_merged() {
        let st = s("c", &["a", "b"]);
        let mut merged = BTreeMap::new();
        merged.insert("a".to_string(), true);
        assert!(!deps_met(&st, &merged));
        merged.insert("b".to_string(), false);
        assert!(!deps_met(&st, &merged));
        merged.insert("b".to_string(), true);
        assert!(deps_met(&st, &merged));
    }
}
