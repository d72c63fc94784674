"""The scheduler's placement rules, pure (no Redis, no database): best-fit packing onto the GPUs of a machine,
multi-machine gangs on one storage root, wait reasons, backfill and the starvation guard, requests refused at
submission, and `describe`."""

from __future__ import annotations

import random
from collections.abc import Iterable

from server.runs.scheduler import Placement, Request, describe, impossible, place, plan
from worker.gang import Agent


def agent(worker_id: str, n: int = 8, held: Iterable[int] = (), queue: str = "gpu", storage: str = "/storage",
          kind: str = "gpu") -> Agent:
    return Agent(worker_id=worker_id, host=f"{worker_id}.lan", queue=queue, device_kind=kind,
                 devices=list(range(n)), storage=storage, held={d: "other.1" for d in held})


def req(run_id: str, gpus: int = 1, nodes: int = 1, queue: str = "gpu", waited_s: float = 0.0) -> Request:
    return Request(run_id=run_id, queue=queue, nodes=nodes, gpus_per_node=gpus, waited_s=waited_s)


def assert_disjoint(placements: list[Placement], agents: list[Agent]) -> None:
    """No device is given twice in one plan, nor one that was already held, nor one the agent does not have."""
    taken: set[tuple[str, int]] = set()
    by_id = {a.worker_id: a for a in agents}
    for p in placements:
        assert len(set(p.members)) == len(p.members)
        assert set(p.devices) == set(p.members)
        for agent_id, devs in p.devices.items():
            for d in devs:
                assert d in by_id[agent_id].devices and d not in by_id[agent_id].held
                assert (agent_id, d) not in taken
                taken.add((agent_id, d))


# -- one machine: best fit ---------------------------------------------------------------------------------------


def test_eight_one_gpu_runs_fill_an_eight_gpu_agent() -> None:
    agents = [agent("a")]
    out = plan([req(f"r{i}") for i in range(9)], agents)
    assert [(p.run_id, p.members, p.devices) for p in out.placements] == [
        (f"r{i}", ["a"], {"a": [i]}) for i in range(8)]
    assert out.waiting == {"r8": "waiting for 1 free GPU on one machine (free now: a: 0)"}
    assert agents[0].held == {}  # the plan works on copies: the caller's agents are untouched


def test_four_gpu_run_prefers_the_machine_with_exactly_four_free_over_an_idle_one() -> None:
    agents = [agent("a-idle"), agent("b-half", held=[0, 1, 2, 3]), agent("c-small", n=2)]
    placement = place(req("r", gpus=4), agents)
    assert placement is not None
    assert placement.members == ["b-half"] and placement.devices == {"b-half": [4, 5, 6, 7]}
    assert placement.hosts == {"b-half": "b-half.lan"}


def test_two_four_gpu_runs_share_one_eight_gpu_machine() -> None:
    agents = [agent("a"), agent("b")]
    out = plan([req("r1", gpus=4), req("r2", gpus=4), req("r3", gpus=4)], agents)
    assert [(p.run_id, p.devices) for p in out.placements] == [
        ("r1", {"a": [0, 1, 2, 3]}), ("r2", {"a": [4, 5, 6, 7]}), ("r3", {"b": [0, 1, 2, 3]})]
    assert out.waiting == {}


def test_devices_are_the_lowest_free_ones_and_never_overlap() -> None:
    agents = [agent("a", held=[0, 2, 5])]
    out = plan([req("r1", gpus=2), req("r2", gpus=2), req("r3"), req("r4")], agents)
    assert [p.devices for p in out.placements] == [{"a": [1, 3]}, {"a": [4, 6]}, {"a": [7]}]
    assert list(out.waiting) == ["r4"]
    assert_disjoint(out.placements, agents)


def test_no_plan_ever_gives_a_device_twice() -> None:
    rng = random.Random(11)
    for _ in range(300):
        agents = []
        for i in range(rng.randint(1, 5)):
            n = rng.choice([1, 2, 4, 8])
            agents.append(agent(f"m{i}", n=n, held=rng.sample(range(n), rng.randint(0, n)),
                                storage=rng.choice(["/s1", "/s2"])))
        requests = [req(f"r{j}", gpus=rng.choice([1, 2, 4, 8]), nodes=rng.choice([1, 1, 2, 3]),
                        waited_s=rng.choice([0, 1000])) for j in range(rng.randint(1, 8))]
        out = plan(requests, agents)
        assert_disjoint(out.placements, agents)
        assert {p.run_id for p in out.placements} | set(out.waiting) == {r.run_id for r in requests}
        assert not {p.run_id for p in out.placements} & set(out.waiting)
        for p in out.placements:
            r = next(r for r in requests if r.run_id == p.run_id)
            assert len(p.members) == r.nodes and all(len(d) == r.gpus_per_node for d in p.devices.values())
            assert len({a.storage for a in agents if a.worker_id in p.members}) == 1 or r.nodes == 1


# -- several machines ----------------------------------------------------------------------------------------------


def test_two_by_four_picks_two_distinct_agents_best_fit() -> None:
    agents = [agent("a"), agent("b", held=[0, 1, 2, 3]), agent("c", n=4)]
    placement = place(req("r", gpus=4, nodes=2), agents)
    assert placement is not None
    assert sorted(placement.members) == ["b", "c"]
    assert placement.devices == {"b": [4, 5, 6, 7], "c": [0, 1, 2, 3]}
    assert placement.hosts == {"b": "b.lan", "c": "c.lan"}


def test_multi_node_never_uses_the_same_agent_twice() -> None:
    agents = [agent("a")]  # 8 free: two nodes' worth, but one machine
    assert place(req("r", gpus=4, nodes=2), agents) is None
    out = plan([req("r", gpus=4, nodes=2)], agents)
    assert out.placements == []
    assert out.waiting == {"r": "waiting for 2 machines with 4 free GPUs (free now: a: 8)"}


def test_multi_node_refuses_mixed_storage_roots() -> None:
    agents = [agent("a", storage="/s1"), agent("b", storage="/s2")]
    assert place(req("r", gpus=4, nodes=2), agents) is None
    agents.append(agent("c", storage="/s1", held=[0, 1, 2, 3]))
    placement = place(req("r", gpus=4, nodes=2), agents)
    assert placement is not None and sorted(placement.members) == ["a", "c"]
    # a single-machine run does not care about storage: best fit across roots
    single = place(req("s", gpus=4), agents)
    assert single is not None and single.members == ["c"]


def test_multi_node_picks_the_storage_group_that_fits_best() -> None:
    agents = [agent("a", storage="/s1"), agent("b", storage="/s1"),
              agent("c", storage="/s2", held=[0, 1, 2, 3]), agent("d", storage="/s2", held=[0, 1, 2, 3])]
    placement = place(req("r", gpus=4, nodes=2), agents)
    assert placement is not None and sorted(placement.members) == ["c", "d"]


def test_agents_of_other_queues_are_ignored() -> None:
    agents = [agent("a", held=range(7)), agent("b", queue="other")]
    assert place(req("r", gpus=4, nodes=2), agents) is None
    assert place(req("r", gpus=2), agents) is None
    out = plan([req("r", gpus=2)], agents)
    assert out.waiting == {"r": "waiting for 2 free GPUs on one machine (free now: a: 1)"}
    other = place(req("o", gpus=2, queue="other"), agents)
    assert other is not None and other.members == ["b"]


# -- waiting, backfill, starvation ---------------------------------------------------------------------------------


def test_wait_reason_says_what_the_run_waits_for_and_what_is_free() -> None:
    agents = [agent("a", held=[0, 1, 2, 3, 4]), agent("b")]
    out = plan([req("big", gpus=8, nodes=2)], agents)
    assert out.waiting == {"big": "waiting for 2 machines with 8 free GPUs (free now: a: 3, b: 8)"}
    out = plan([req("r", queue="empty")], agents)
    assert out.waiting == {"r": "waiting for 1 free GPU on one machine (free now: none)"}


def test_wait_reason_counts_what_earlier_runs_of_the_plan_took() -> None:
    out = plan([req("r1", gpus=6), req("r2", gpus=4)], [agent("a"), agent("b", n=4, held=[0])])
    assert out.waiting == {"r2": "waiting for 4 free GPUs on one machine (free now: a: 2, b: 3)"}


def test_backfill_a_small_run_starts_behind_a_waiting_big_one() -> None:
    agents = [agent("a", held=[0])]
    out = plan([req("big", gpus=8, waited_s=30), req("small")], agents)
    assert [(p.run_id, p.devices) for p in out.placements] == [("small", {"a": [1]})]
    assert list(out.waiting) == ["big"]


def test_starving_head_keeps_the_machines_it_could_use() -> None:
    # best fit alone would put the small run on a (1 free); a is kept for the head, so it goes to b
    agents = [agent("a", held=range(7)), agent("b", n=4)]
    out = plan([req("head", gpus=8, waited_s=600), req("small")], agents, starve_after_s=600)
    assert [(p.run_id, p.devices) for p in out.placements] == [("small", {"b": [0]})]
    # just below the threshold, backfill still uses a
    out = plan([req("head", gpus=8, waited_s=599.9), req("small")], agents, starve_after_s=600)
    assert [(p.run_id, p.devices) for p in out.placements] == [("small", {"a": [7]})]


def test_starving_head_makes_a_smaller_run_wait_and_says_why() -> None:
    agents = [agent("a", held=range(7))]
    out = plan([req("head", gpus=8, waited_s=601), req("small")], agents, starve_after_s=600)
    assert out.placements == []
    assert out.waiting["head"] == "waiting for 8 free GPUs on one machine (free now: a: 1)"
    assert out.waiting["small"] == ("waiting for 1 free GPU on one machine (free now: a: 1); the machines it fits on "
                                    "are kept for run head, which has waited 600 s or more")


def test_starving_run_keeps_nothing_on_other_queues_or_too_small_machines() -> None:
    agents = [agent("a", held=range(7)), agent("tiny", n=2), agent("x", queue="other", held=range(7))]
    out = plan([req("head", gpus=8, waited_s=10_000), req("s1"), req("s2"), req("s3", queue="other")], agents)
    assert [(p.run_id, p.devices) for p in out.placements] == [
        ("s1", {"tiny": [0]}), ("s2", {"tiny": [1]}), ("s3", {"x": [7]})]


def test_a_starving_run_no_live_agent_could_run_blocks_nothing() -> None:
    # a 2x8 run whose second machine died: it cannot start on what is left, so it must not keep `a` for ever
    agents = [agent("a", held=[0])]
    out = plan([req("head", gpus=8, nodes=2, waited_s=10_000), req("small")], agents)
    assert [(p.run_id, p.devices) for p in out.placements] == [("small", {"a": [1]})]
    assert out.waiting == {"head": "waiting for 2 machines with 8 free GPUs (free now: a: 7)"}


# -- refused at submission -----------------------------------------------------------------------------------------


def test_impossible_too_many_gpus_per_node() -> None:
    agents = [agent("a"), agent("b", n=4)]
    assert impossible(req("r", gpus=16), agents) == (
        "asks for 16 free GPUs on one machine; 2 machines on queue 'gpu': a (8 GPUs), b (4 GPUs)")


def test_impossible_too_many_nodes() -> None:
    agents = [agent("a"), agent("b"), agent("c", n=2)]
    assert impossible(req("r", gpus=4, nodes=3), agents) == (
        "asks for 3 machines with 4 free GPUs; 3 machines on queue 'gpu': a (8 GPUs), b (8 GPUs), c (2 GPUs)")


def test_impossible_different_storage_roots() -> None:
    agents = [agent("a", storage="/s1"), agent("b", storage="/s2"), agent("c", n=2, storage="/s1")]
    assert impossible(req("r", gpus=4, nodes=2), agents) == (
        "asks for 2 machines with 4 free GPUs, but the machines that have them report different storage roots "
        "(/s1, /s2); a multi-machine run needs one storage every machine sees")


def test_impossible_queue_without_agent() -> None:
    assert impossible(req("r", queue="tpu"), [agent("a")]) == (
        "asks for 1 free GPU on one machine; no agent is registered on queue 'tpu' "
        "(start one with `mocolab worker --gpus all`)")
    assert impossible(req("r"), []) == (
        "asks for 1 free GPU on one machine; no agent is registered on queue 'gpu' "
        "(start one with `mocolab worker --gpus all`)")


def test_impossible_is_none_when_idle_agents_could_run_it() -> None:
    busy = agent("a", held=range(8))  # every device held right now: it waits, it is not refused
    assert impossible(req("r", gpus=8), [busy]) is None
    agents = [agent("a", storage="/s1"), agent("b", storage="/s2"), agent("c", n=4, storage="/s2")]
    assert impossible(req("r", gpus=4, nodes=2), agents) is None
    assert impossible(req("r", gpus=8), agents) is None
    assert impossible(req("r", gpus=2, queue="cpu"), [agent("c", n=2, queue="cpu", kind="cpu")]) is None


# -- describe ------------------------------------------------------------------------------------------------------


def test_describe() -> None:
    agents = [agent("a"), agent("b", n=1), agent("c", n=2, queue="cpu", kind="cpu"), agent("d", n=1, kind="cpu")]
    assert describe([]) == "no agent is registered (start one with `mocolab worker --gpus all`)"
    assert describe(agents) == "4 machines: a (8 GPUs), b (1 GPU), c (2 CPU slots), d (1 CPU slot)"
    assert describe(agents, "cpu") == "1 machine on queue 'cpu': c (2 CPU slots)"
    assert describe(agents, "gpu") == "3 machines on queue 'gpu': a (8 GPUs), b (1 GPU), d (1 CPU slot)"
    assert describe(agents, "tpu") == ("no agent is registered on queue 'tpu' "
                                       "(start one with `mocolab worker --gpus all`)")
