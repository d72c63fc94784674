"""The datasets' projection of the events stream: a scan's or a packing's `dataset` event fills its row, and a
scan or packing run that ended in this batch without one marks the row failed (`service.reconcile`). Runs
after the runs' state, so a run's status is already this batch's. Changes go to the team stream."""

from __future__ import annotations

from server.datasets import service
from server.events.projection import Batch, Notice


class DatasetState:
    def project(self, batch: Batch) -> None:
        found = [e for e in batch.events if e.type == "dataset"]
        ended = {e.run_id for e in batch.events if e.type == "status"}
        rows = service.for_runs(batch.session, {e.run_id for e in found} | ended)
        if not rows:
            return
        changed = {}
        for event in found:
            for row in rows:
                if event.run_id in (row.scan_run_id, row.prepare_run_id):
                    service.apply_event(batch.session, row, event)
                    changed[row.id] = row
        for row in service.reconcile(batch.session, rows):
            changed[row.id] = row
        if not changed:
            return
        batch.session.flush()
        batch.notices += [Notice("dataset", row.team_id, public.model_dump(mode="json"))
                          for row, public in zip(changed.values(), service.to_public(batch.session, changed.values()),
                                                 strict=True)]
