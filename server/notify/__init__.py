"""Notifications: a team's channels (JSON webhook, Slack incoming webhook, e-mail), the outbox the ingest and
the run-status machine write incidents into in their own transactions, and the loop that delivers them in the
background with retries (docs/notifications.md).

- `outbox`: `enqueue(session, team_id, project_id, event)` for any code, the dedup and cooldown, and the hook
  that turns every run status change (ingest, watchdog, scheduler) into its run-end incident.
- `projection`: the ingest's projection for `alert` and `eval_result` events.
- `delivery`: the loop (claims due rows, sends, records each attempt, backs off).
- `render`, `chart`, `send`, `urls`, `keys`: the message, its PNG chart, the transports, outbound URL safety,
  the server key (sealed secrets, signed chart links).
"""
