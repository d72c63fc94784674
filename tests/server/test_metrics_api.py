"""Metric series: downsampled in SQL without losing a spike, full resolution on request, and exports."""

from __future__ import annotations

import csv
import io

import redis
from fastapi.testclient import TestClient

from server.events.ingest import Ingestor

from server_factories import Member, drain, metrics_ev, push, submit

STEPS = 5000
SPIKE = 3217


def feed(redis_client: redis.Redis, ingestor: Ingestor, run_id: str) -> None:
    events = [metrics_ev(run_id, s, s, loss=100.0 if s == SPIKE else 1.0 + (s % 7) / 100, lr=s / STEPS)
              for s in range(STEPS)]
    for i in range(0, STEPS, 1000):
        push(redis_client, events[i:i + 1000])
    drain(ingestor)


class TestMetrics:
    def test_metrics_need_credentials(self, client: TestClient) -> None:
        assert client.get("/api/v1/runs/x/metrics").status_code == 401

    def test_downsampling_keeps_a_single_step_spike(self, client: TestClient, redis_client: redis.Redis,
                                                    ingestor: Ingestor, alice: Member) -> None:
        run = submit(client, alice)
        feed(redis_client, ingestor, run["id"])
        url = f"/api/v1/runs/{run['id']}/metrics"
        down = client.get(url, params={"keys": "loss", "buckets": 50}, headers=alice.headers).json()
        [loss] = down["series"]
        # buckets of at least ROLLUP steps come from the rollups: width rounded up to a multiple of 64
        assert down["bucket_width"] == 128 and len(loss["step"]) == 40 and down["start"] == 0
        assert sum(loss["count"]) == STEPS
        assert loss["max"].count(100.0) == 1  # the spike survives in exactly its bucket
        assert loss["step"][loss["max"].index(100.0)] // 128 == SPIKE // 128
        assert max(loss["value"]) < 100.0  # while the bucket's last point alone would have hidden it
        assert min(loss["min"]) == 1.0
        assert loss["step"] == [min(b * 128 + 127, STEPS - 1) for b in range(40)]  # each bucket's last step

        full = client.get(url, params={"keys": "loss,lr"}, headers=alice.headers).json()
        assert [s["key"] for s in full["series"]] == ["loss", "lr"]
        assert len(full["series"][0]["step"]) == STEPS and full["series"][0]["value"][SPIKE] == 100.0
        assert full["series"][0]["min"] is None and not full["truncated"]

        window = client.get(url, params={"keys": "loss", "start": 3000, "end": 3499, "buckets": 10},
                            headers=alice.headers).json()  # 50 steps a bucket: read from the points themselves
        assert window["bucket_width"] == 50 and window["start"] == 3000
        assert window["series"][0]["step"] == [3049 + 50 * i for i in range(10)]
        assert window["series"][0]["max"][4] == 100.0 and window["series"][0]["count"] == [50] * 10

        clipped = client.get(url, params={"keys": "lr", "limit": 10}, headers=alice.headers).json()
        assert clipped["truncated"] and len(clipped["series"][0]["step"]) == 10
        keys = client.get(f"/api/v1/runs/{run['id']}/metric-keys", headers=alice.headers).json()
        assert keys == ["loss", "lr"]

    def test_non_finite_values_travel_as_strings(self, client: TestClient, redis_client: redis.Redis,
                                                 ingestor: Ingestor, alice: Member) -> None:
        run = submit(client, alice)
        push(redis_client, [metrics_ev(run["id"], 0, 0, loss=1.0), metrics_ev(run["id"], 1, 1, loss="nan"),
                            metrics_ev(run["id"], 2, 2, loss="inf")])
        drain(ingestor)
        url = f"/api/v1/runs/{run['id']}/metrics"
        full = client.get(url, headers=alice.headers).json()["series"][0]
        assert full["value"] == [1.0, "nan", "inf"]
        one = client.get(url, params={"buckets": 1}, headers=alice.headers).json()["series"][0]
        assert one["max"] == ["inf"] and one["min"] == [1.0] and one["value"] == ["inf"] and one["count"] == [3]

    def test_an_empty_run_has_empty_series(self, client: TestClient, alice: Member) -> None:
        run = submit(client, alice)
        body = client.get(f"/api/v1/runs/{run['id']}/metrics", params={"keys": "loss", "buckets": 10},
                          headers=alice.headers).json()
        assert body["series"] == [{"key": "loss", "step": [], "value": [], "min": None, "max": None, "count": None,
                                   "nan": None}]


class TestExport:
    def test_csv_has_one_row_per_step_and_a_column_per_key(self, client: TestClient, redis_client: redis.Redis,
                                                           ingestor: Ingestor, alice: Member) -> None:
        run = submit(client, alice)
        push(redis_client, [metrics_ev(run["id"], 0, 0, loss=4.0, lr=0.001),
                            metrics_ev(run["id"], 1, 1, loss=3.5, lr=0.002),
                            metrics_ev(run["id"], 2, 1, knn_top1=12.5),
                            metrics_ev(run["id"], 3, 2, loss="nan")])
        drain(ingestor)
        response = client.get(f"/api/v1/runs/{run['id']}/export.csv", headers=alice.headers)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert f'filename="{run["id"]}-metrics.csv"' in response.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(response.text)))
        assert rows == [["step", "knn_top1", "loss", "lr"], ["0", "", "4.0", "0.001"], ["1", "12.5", "3.5", "0.002"],
                        ["2", "", "nan", ""]]

    def test_csv_header_cells_that_start_like_a_formula_are_escaped(self, client: TestClient,
                                                                     redis_client: redis.Redis, ingestor: Ingestor,
                                                                     alice: Member) -> None:
        """A metric key is whatever a worker sent: opened in a spreadsheet, it must not run as a formula."""
        run = submit(client, alice)
        push(redis_client, [metrics_ev(run["id"], 0, 0, **{"=HYPERLINK(1)": 1.0, "@sum": 2.0, "loss": -3.0})])
        drain(ingestor)
        rows = list(csv.reader(io.StringIO(client.get(f"/api/v1/runs/{run['id']}/export.csv",
                                                      headers=alice.headers).text)))
        assert rows == [["step", "'=HYPERLINK(1)", "'@sum", "loss"], ["0", "1.0", "2.0", "-3.0"]]  # numbers stay

    def test_csv_of_a_long_run_streams_every_step(self, client: TestClient, redis_client: redis.Redis,
                                                  ingestor: Ingestor, alice: Member) -> None:
        run = submit(client, alice)
        feed(redis_client, ingestor, run["id"])
        rows = list(csv.reader(io.StringIO(client.get(f"/api/v1/runs/{run['id']}/export.csv",
                                                      headers=alice.headers).text)))
        assert len(rows) == STEPS + 1 and [int(r[0]) for r in rows[1:]] == list(range(STEPS))
        assert rows[SPIKE + 1][1] == "100.0"

    def test_json_export(self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor,
                         alice: Member) -> None:
        run = submit(client, alice)
        push(redis_client, [metrics_ev(run["id"], 0, 0, loss=4.0), metrics_ev(run["id"], 1, 1, loss=3.0)])
        drain(ingestor)
        body = client.get(f"/api/v1/runs/{run['id']}/export.json", headers=alice.headers).json()
        assert body["run"]["id"] == run["id"] and body["run"]["spec"]["kind"] == "pretrain"
        assert body["metrics"] == {"loss": {"step": [0, 1], "value": [4.0, 3.0]}}
        assert body["alerts"] == [] and body["evals"] == []


Bucket = tuple[int, object, object, object, int, int]


def reference_buckets(points: dict[int, float | None], lo: int, width: int) -> list[Bucket]:
    """(last step, last value, min, max, count) per bucket, straight from the points, NaN left out of min/max."""
    out: dict[int, list[tuple[int, float | None]]] = {}
    for step in sorted(points):
        out.setdefault((step - lo) // width, []).append((step, points[step]))

    def enc(v: float | None) -> object:
        return "nan" if v is None or v != v else ("inf" if v == float("inf") else v)

    rows = []
    for _, pts in sorted(out.items()):
        finite = [v for _, v in pts if v is not None and v == v]
        rows.append((pts[-1][0], enc(pts[-1][1]), enc(min(finite)) if finite else "nan",
                     enc(max(finite)) if finite else "nan", len(pts), len(pts) - len(finite)))
    return rows


class TestRollups:
    def test_rollups_answer_wide_buckets_exactly_after_steps_are_stored_again(
            self, client: TestClient, redis_client: redis.Redis, ingestor: Ingestor, alice: Member) -> None:
        run = submit(client, alice)
        rid = run["id"]
        points: dict[int, float | None] = {}
        seq = 0
        # a first attempt to step 1500, in several batches whose edges cut rollup buckets
        for lo, hi in ((0, 700), (701, 701), (702, 1500)):
            batch = []
            for step in range(lo, hi + 1):
                value: float | None = 1.0 + (step % 13) / 10
                if step == 640:
                    value = 500.0  # a spike
                if step == 1200:
                    value = float("nan")
                if step == 1201:
                    value = float("inf")
                points[step] = value
                batch.append(metrics_ev(rid, seq, step, loss="nan" if value != value else
                                        ("inf" if value == float("inf") else value)))
                seq += 1
            push(redis_client, batch)
            drain(ingestor)
        # a resume from step 600 stores steps 600..1100 again, lower: the spike at 640 is gone
        batch = []
        for step in range(600, 1101):
            points[step] = 0.5 - step / 10_000
            batch.append(metrics_ev(rid, seq, step, loss=points[step]))
            seq += 1
        push(redis_client, batch)
        drain(ingestor)

        url = f"/api/v1/runs/{rid}/metrics"
        widths = set()
        for params in ({"buckets": 20}, {"buckets": 7}, {"buckets": 3, "start": 130, "end": 1400},
                       {"buckets": 1, "start": 0, "end": 2047}, {"buckets": 1, "start": 1000, "end": 2500}):
            got = client.get(url, params={"keys": "loss", **params}, headers=alice.headers).json()
            width, lo = got["bucket_width"], got["start"]
            assert width % 64 == 0 and lo % 64 == 0
            widths.add(width)
            hi = got["end"]
            want = reference_buckets({s: v for s, v in points.items() if lo <= s <= hi}, lo, width)
            [series] = got["series"]
            assert list(zip(series["step"], series["value"], series["min"], series["max"], series["count"],
                            series["nan"], strict=True)) == [tuple(r) for r in want], params
        assert 2048 in widths  # one bucket over 2,048 steps: read from the 1024-step rollups
        everything = client.get(url, params={"keys": "loss", "buckets": 4}, headers=alice.headers).json()
        assert 500.0 not in everything["series"][0]["max"]  # the re-stored steps replaced the spike
        assert "inf" in everything["series"][0]["max"]  # a non-finite value is never hidden
        assert sum(everything["series"][0]["nan"]) == 1  # nor a NaN that is not its bucket's last point
        fine = client.get(url, params={"keys": "loss", "buckets": 10, "start": 1150, "end": 1249},
                          headers=alice.headers).json()  # 10 steps a bucket: from the points themselves
        assert fine["bucket_width"] == 10 and fine["series"][0]["nan"][5] == 1 and sum(fine["series"][0]["nan"]) == 1
