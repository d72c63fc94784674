"""How long one scheduling pass's placement takes as machines and queued runs grow (the pure part only).

    PYTHONPATH=. python bench/scheduler_scale.py

Times `server.runs.scheduler.plan` over synthetic agents of 8 GPUs each on one storage root, with a fraction of
their devices already held, and queued runs drawn from 1x1, 1x8, 2x8 and 8x8 (nodes x GPUs per node). Prints the
time of one pass, how many runs it placed and how long the longest wait reason is (it lists every agent's
free devices). Redis round trips (SCAN, one HGET per worker key, one pipelined HGETALL of the slots) come on top.
"""

from __future__ import annotations

import random
import time

from server.runs.scheduler import Request, plan
from worker.gang import Agent

SHAPES = [(1, 1), (1, 8), (2, 8), (8, 8)]


def one_pass(n_agents: int, n_runs: int, busy: float, rng: random.Random) -> tuple[float, int, int]:
    agents = []
    for i in range(n_agents):
        agent = Agent(f"a{i:04d}", f"host{i}", "gpu", "gpu", list(range(8)), "/shared")
        agent.held = {d: "other.1" for d in range(8) if rng.random() < busy}
        agents.append(agent)
    requests = [Request(f"r{j}", "gpu", *rng.choice(SHAPES)) for j in range(n_runs)]
    start = time.perf_counter()
    out = plan(requests, agents)
    elapsed = time.perf_counter() - start
    return elapsed, len(out.placements), max((len(w) for w in out.waiting.values()), default=0)


def main() -> int:
    rng = random.Random(0)
    print("agents  queued runs  held   pass ms  placed  longest wait reason (chars)")
    for n_agents, n_runs in ((32, 100), (256, 1000), (1024, 1000)):
        for busy in (0.0, 0.9):
            elapsed, placed, longest = one_pass(n_agents, n_runs, busy, rng)
            print(f"{n_agents:6d}  {n_runs:11d}  {busy:4.0%}  {elapsed * 1e3:8.0f}  {placed:6d}  {longest:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
