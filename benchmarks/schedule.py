#!/usr/bin/env python3
"""How close kiln's scheduler gets to the best possible wall time.

A fake engine whose builds sleep for given durations runs over
- Kolla's real DAG shape: 188 images, 1/28/54/103/2 images at depths 0..4,
  fan-outs up to 29;
- a synthetic 2000-image DAG (random parents, depth ~12).

For each it prints wall time divided by the lower bound
max(critical path, total work / threads) (1.00 is perfect; target <= 1.05
with 8 threads), once with the scheduler knowing only the graph and once
with duration estimates (as from a previous run), and the scheduler's own
overhead per image measured with zero-length builds (target < 1 ms).

That bound ignores that nothing can run beside a lone root image (Kolla's
base) and that the last images end unevenly, so no schedule at all may reach
it. The script also prints a tighter valid lower bound (see tighter_bound:
the best schedule is at least that long), the makespan the same priority rule
reaches in a zero-overhead simulation (the gap to the real wall time is the
scheduler's own cost), and, since the durations are random, the simulated
rule over ``--instances`` other random Kolla-shaped instances (median, worst).
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
import time
from pathlib import Path

import networkx as nx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from builder.build.scheduler import (  # noqa: E402
    Scheduler,
    SchedulerOptions,
    WorkResult,
    priorities,
)

KOLLA_LEVELS = [1, 28, 54, 103, 2]
KOLLA_MAX_FANOUT = 29


def kolla_shape(rng: random.Random) -> nx.DiGraph:
    graph = nx.DiGraph()
    previous = ["base"]
    graph.add_node("base")
    for depth, count in enumerate(KOLLA_LEVELS[1:], 1):
        level = [f"d{depth}-{i}" for i in range(count)]
        children = {p: 0 for p in previous}
        for i, name in enumerate(level):
            # the first parents take big fan-outs (like openstack-base), capped
            candidates = [p for p in previous if children[p] < KOLLA_MAX_FANOUT]
            parent = candidates[0] if i % 3 else rng.choice(candidates)
            children[parent] += 1
            graph.add_edge(parent, name)
        previous = level
    assert graph.number_of_nodes() == sum(KOLLA_LEVELS)
    assert max(d for _, d in graph.out_degree()) <= KOLLA_MAX_FANOUT
    return graph


def synthetic(rng: random.Random, count: int = 2000, depth: int = 12) -> nx.DiGraph:
    graph = nx.DiGraph()
    levels: list[list[str]] = [["n0"]]
    graph.add_node("n0")
    for i in range(1, count):
        wanted = min(depth - 1, 1 + int(rng.expovariate(0.35)))
        d = min(wanted, len(levels))  # a level exists only once the one above has images
        if d == len(levels):
            levels.append([])
        name = f"n{i}"
        graph.add_edge(rng.choice(levels[d - 1]), name)
        if rng.random() < 0.1:  # some multi-parent images (multi-stage)
            graph.add_edge(rng.choice(levels[rng.randrange(0, d)]), name)
        levels[d].append(name)
    assert nx.is_directed_acyclic_graph(graph)
    return graph


def durations(graph: nx.DiGraph, rng: random.Random, mean: float) -> dict[str, float]:
    return {n: rng.lognormvariate(0, 0.6) * mean for n in graph}


def lower_bound(graph: nx.DiGraph, cost: dict[str, float], threads: int) -> float:
    longest: dict[str, float] = {}
    for node in nx.topological_sort(graph):
        longest[node] = cost[node] + max((longest[p] for p in graph.predecessors(node)),
                                         default=0.0)
    return max(max(longest.values()), sum(cost.values()) / threads)


def tighter_bound(graph: nx.DiGraph, cost: dict[str, float], threads: int) -> float:
    """A valid lower bound that also counts the idle threads at both ends.

    head(v) is the longest chain of ancestors above v (nothing lets v start
    earlier), tail(v) the longest chain of descendants below it (they all run
    after v ends). For any h and t, every image with head >= h and tail >= t
    runs inside [h, makespan - t] on at most ``threads`` threads, so
    makespan >= h + t + (their work) / threads. (With h = t = 0 this is
    work/threads; with the images of one longest chain it is the critical
    path.) The best h, t over all images' heads and tails is returned.
    """
    order = list(nx.topological_sort(graph))
    head: dict[str, float] = {}
    for node in order:
        head[node] = max((head[p] + cost[p] for p in graph.predecessors(node)), default=0.0)
    tail: dict[str, float] = {}
    for node in reversed(order):
        tail[node] = max((tail[c] + cost[c] for c in graph.successors(node)), default=0.0)
    by_tail = sorted(graph, key=tail.__getitem__, reverse=True)
    best = lower_bound(graph, cost, threads)
    for h in set(head.values()):
        work = 0.0
        for node in by_tail:  # tails from the longest down: work of those with tail >= t
            if head[node] >= h:
                work += cost[node]
                best = max(best, h + tail[node] + work / threads)
    return best


def simulate(graph: nx.DiGraph, cost: dict[str, float], threads: int,
             estimates: bool) -> float:
    """The same priority rule with zero overhead (event simulation, no sleeping)."""
    rank = priorities(graph, graph.nodes, cost if estimates else {})
    waiting = {n: graph.in_degree(n) for n in graph}
    ready = [(-rank[n], n) for n in graph if waiting[n] == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < threads:
            _, name = heapq.heappop(ready)
            heapq.heappush(running, (now + cost[name], name))
        now, name = heapq.heappop(running)
        for child in graph.successors(name):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (-rank[child], child))
    return now


def run(graph: nx.DiGraph, cost: dict[str, float], threads: int, estimates: bool) -> float:
    def build(name, cancel):
        time.sleep(cost[name])
        return WorkResult(True, image_id=name)

    options = SchedulerOptions(threads=threads, estimates=cost if estimates else {})
    start = time.perf_counter()
    outcomes = Scheduler(graph, graph.nodes, build, options=options).run()
    elapsed = time.perf_counter() - start
    assert all(o.status.ok for o in outcomes.values())
    return elapsed


def overhead(graph: nx.DiGraph, threads: int) -> float:
    start = time.perf_counter()
    Scheduler(graph, graph.nodes, lambda n, c: WorkResult(True),
              options=SchedulerOptions(threads=threads)).run()
    return (time.perf_counter() - start) / graph.number_of_nodes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mean", type=float, default=0.04,
                        help="mean fake build time in seconds")
    parser.add_argument("--instances", type=int, default=20,
                        help="other random Kolla-shaped instances to simulate")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for label, graph, mean in (("kolla-shape 188", kolla_shape(rng), args.mean),
                               ("synthetic 2000", synthetic(rng), args.mean / 4)):
        cost = durations(graph, rng, mean)
        bound = lower_bound(graph, cost, args.threads)
        tight = tighter_bound(graph, cost, args.threads)
        per_image = overhead(graph, args.threads)
        print(f"{label}: {graph.number_of_nodes()} images, threads={args.threads}, "
              f"bound max(critical path, work/threads) {bound:.2f} s, "
              f"tighter bound {tight:.2f} s, scheduler overhead "
              f"{per_image * 1e3:.3f} ms/image")
        for estimates in (False, True):
            wall = run(graph, cost, args.threads, estimates)
            ideal = simulate(graph, cost, args.threads, estimates)
            what = "with estimates" if estimates else "graph only    "
            print(f"  {what}: wall {wall:6.2f} s = {wall / bound:.3f} x bound, "
                  f"{wall / tight:.3f} x tighter bound "
                  f"(same rule with zero overhead: {ideal / bound:.3f} x bound, "
                  f"{ideal / tight:.3f} x tighter bound)")
    if args.instances:
        instances(args)
    return 0


def instances(args: argparse.Namespace) -> None:
    """The rule (with estimates, zero overhead) over more random Kolla shapes."""
    ratios: dict[str, list[float]] = {"bound": [], "tighter bound": []}
    for seed in range(args.seed + 1, args.seed + 1 + args.instances):
        rng = random.Random(seed)
        graph = kolla_shape(rng)
        cost = durations(graph, rng, args.mean)
        ideal = simulate(graph, cost, args.threads, estimates=True)
        ratios["bound"].append(ideal / lower_bound(graph, cost, args.threads))
        ratios["tighter bound"].append(ideal / tighter_bound(graph, cost, args.threads))
    print(f"{args.instances} more random Kolla-shaped instances, with estimates, zero "
          f"overhead: " + ", ".join(
              f"x {name} median {statistics.median(values):.3f} worst {max(values):.3f}"
              for name, values in ratios.items()))


if __name__ == "__main__":
    sys.exit(main())
