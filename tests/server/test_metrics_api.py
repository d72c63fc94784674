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
        assert down["bucket_width"] == 100 and len(loss["step"]) == 50
        assert sum(loss["count"]) == STEPS
        assert loss["max"].count(100.0) == 1  # the spike survives in exactly its bucket
        assert loss["step"][loss["max"].index(100.0)] // 100 == SPIKE // 100
        assert max(loss["value"]) < 100.0  # while the bucket's last point alone would have hidden it
        assert min(loss["min"]) == 1.0
        assert loss["step"] == [b * 100 + 99 for b in range(50)]  # the last step of each bucket

        full = client.get(url, params={"keys": "loss,lr"}, headers=alice.headers).json()
        assert [s["key"] for s in full["series"]] == ["loss", "lr"]
        assert len(full["series"][0]["step"]) == STEPS and full["series"][0]["value"][SPIKE] == 100.0
        assert full["series"][0]["min"] is None and not full["truncated"]

        window = client.get(url, params={"keys": "loss", "start": 3000, "end": 3499, "buckets": 5},
                            headers=alice.headers).json()
        assert window["series"][0]["step"] == [3099, 3199, 3299, 3399, 3499]
        assert window["series"][0]["max"][2] == 100.0 and window["series"][0]["count"] == [100] * 5

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
        assert body["series"] == [{"key": "loss", "step": [], "value": [], "min": None, "max": None, "count": None}]


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
