// What the runs list does not carry: the model and framework (in the spec) and the alert count. Fetched
// for the visible page only, a few requests at a time; specs are immutable, alert counts are cached by
// the run's last_seq (they can change only when new events arrive).
import { useEffect, useState } from "preact/hooks";
import { api } from "../api/client";
import type { RunPublic } from "../api/types";

export interface Extra {
  model: string;
  framework: string;
  alerts: number;
  alertKinds: string;
}

const specCache = new Map<string, { model: string; framework: string }>();
const alertCache = new Map<string, { seq: number; n: number; kinds: string }>();

function describe(spec: Record<string, unknown>, kind: string) {
  const model = (spec.model as { arch?: string } | null | undefined)?.arch ?? (kind === "pretrain" ? "?" : "from checkpoint");
  const framework = typeof spec.framework === "string" ? spec.framework : kind === "pretrain" ? "mocov3" : kind;
  return { model, framework };
}

async function pool<T>(items: T[], n: number, fn: (t: T) => Promise<void>): Promise<void> {
  let i = 0;
  const workers = Array.from({ length: Math.min(n, items.length) }, async () => {
    while (i < items.length) await fn(items[i++]).catch(() => {});
  });
  await Promise.all(workers);
}

export function useRunExtras(rows: RunPublic[]): Record<string, Extra> {
  const [extras, setExtras] = useState<Record<string, Extra>>({});
  const sig = rows.map((r) => `${r.id}:${r.last_seq}`).join(",");
  useEffect(() => {
    let alive = true;
    const publish = () => {
      if (!alive) return;
      const out: Record<string, Extra> = {};
      for (const r of rows) {
        const s = specCache.get(r.id);
        const a = alertCache.get(r.id);
        if (s) out[r.id] = { ...s, alerts: a?.n ?? 0, alertKinds: a?.kinds ?? "" };
      }
      setExtras(out);
    };
    publish();
    const todo = rows.filter((r) => !specCache.has(r.id) || (alertCache.get(r.id)?.seq ?? -2) !== r.last_seq);
    void pool(todo, 4, async (r) => {
      if (!alive) return;
      if (!specCache.has(r.id)) specCache.set(r.id, describe((await api.run(r.id)).spec, r.kind));
      if ((alertCache.get(r.id)?.seq ?? -2) !== r.last_seq) {
        const alerts = r.last_seq >= 0 ? await api.alerts(r.id) : [];
        alertCache.set(r.id, { seq: r.last_seq, n: alerts.length, kinds: Array.from(new Set(alerts.map((a) => a.kind))).join(", ") });
      }
      publish();
    }).then(publish);
    return () => {
      alive = false;
    };
  }, [sig]);
  return extras;
}
