// The team's runs: server-side filters, search and pagination (so 10^4 runs cost one page), status kept
// live from the team stream, and a selection to compare.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api, type RunQuery } from "../api/client";
import type { StreamMessage } from "../api/events";
import { useTeamStream } from "../api/team";
import { RUN_KINDS, RUN_STATUSES, type RunPublic } from "../api/types";
import { navigate, useRoute } from "../router";
import { knnEvalCell, knnProbeCell } from "./runs/knn";
import { Empty, ErrorBox, Link, LiveIndicator, StatusBadge, fmtAcc, timeAgo } from "../ui/common";

const PAGE = 50;

function progress(r: RunPublic): { pct: number | null; text: string } {
  if (r.total_steps && r.step !== null) {
    const pct = Math.min(100, (100 * r.step) / r.total_steps);
    return { pct, text: `${r.step}/${r.total_steps}` };
  }
  return { pct: null, text: r.step !== null ? `step ${r.step}` : "—" };
}

export interface AlertMessage {
  run_id?: string;
  seq?: number;
  kind?: string;
}

// Alert kinds seen live this session, by run (the badge's title); counts come with the run itself.
const alertKinds = new Map<string, string>();

/**
 * A team-stream `alert` bumps its row's count once: only when its seq is past the row's last_seq (a `run`
 * snapshot taken after the alert already counts it), and the row's last_seq moves up to it.
 */
export function bumpAlerts(rows: RunPublic[], a: AlertMessage): RunPublic[] {
  if (!a || typeof a.run_id !== "string") return rows;
  const i = rows.findIndex((r) => r.id === a.run_id);
  if (i < 0) return rows;
  const r = rows[i];
  if (a.kind) {
    const kinds = new Set((alertKinds.get(r.id) ?? "").split(", ").filter(Boolean));
    kinds.add(a.kind);
    alertKinds.set(r.id, Array.from(kinds).join(", "));
  }
  if (typeof a.seq === "number" && a.seq <= r.last_seq) return rows;
  const next = rows.slice();
  next[i] = { ...r, alert_count: (r.alert_count ?? 0) + 1, last_seq: typeof a.seq === "number" ? a.seq : r.last_seq };
  return next;
}

function matches(r: RunPublic, f: RunQuery): boolean {
  if (f.status && r.status !== f.status) return false;
  if (f.kind && r.kind !== f.kind) return false;
  if (f.project && r.project !== f.project) return false;
  if (f.tag && !r.tags.includes(f.tag)) return false;
  if (f.q) {
    const q = f.q.toLowerCase();
    if (![r.id, r.name ?? "", r.project, r.owner, ...r.tags].some((s) => s.toLowerCase().includes(q))) return false;
  }
  return true;
}

export function RunsPage() {
  const route = useRoute();
  const qp = route.query;
  const filters: RunQuery = {
    status: qp.get("status") ?? "",
    kind: qp.get("kind") ?? "",
    project: qp.get("project") ?? "",
    tag: qp.get("tag") ?? "",
    q: qp.get("q") ?? "",
  };
  const page = Math.max(0, Number(qp.get("page") ?? 0) || 0);
  const [rows, setRows] = useState<RunPublic[] | null>(null);
  const [count, setCount] = useState(0);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [selected, setSelected] = useState<string[]>([]);
  const [search, setSearch] = useState(filters.q ?? "");
  const [newRuns, setNewRuns] = useState(0);
  const key = JSON.stringify([filters, page]);
  const [reload, setReload] = useState(0);
  const filtersRef = useRef(filters);
  filtersRef.current = filters;
  const pageRef = useRef(page);
  pageRef.current = page;

  const setParam = (changes: Record<string, string | number>) => {
    const p = new URLSearchParams(window.location.search);
    for (const [k, v] of Object.entries(changes)) {
      if (v === "" || v === 0) p.delete(k);
      else p.set(k, String(v));
    }
    if (!("page" in changes)) p.delete("page");
    const s = p.toString();
    navigate(`/${s ? `?${s}` : ""}`, true);
  };

  useEffect(() => {
    const ctrl = new AbortController();
    setLoading(true);
    api
      .runs({ ...filters, skip: page * PAGE, limit: PAGE }, ctrl.signal)
      .then((r) => {
        setRows(r.data);
        setCount(r.count);
        setError(null);
        setNewRuns(0);
        setLoading(false);
      })
      .catch((e) => {
        if ((e as Error).name === "AbortError") return;
        setError(e);
        setLoading(false);
      });
    return () => ctrl.abort();
  }, [key, reload]);

  // Debounced search box -> ?q=
  useEffect(() => {
    if (search === (filters.q ?? "")) return;
    const t = setTimeout(() => setParam({ q: search }), 300);
    return () => clearTimeout(t);
  }, [search]);

  const onMessage = useCallback((m: StreamMessage) => {
    if (m.event === "resync") {
      setReload((n) => n + 1);
      return;
    }
    if (m.event === "alert") {
      setRows((cur) => (cur ? bumpAlerts(cur, m.data as AlertMessage) : cur));
      return;
    }
    if (m.event !== "run") return; // status changes, and (newer servers) throttled progress: the same shape
    const run = m.data as RunPublic;
    if (!run || typeof run.id !== "string") return;
    setRows((cur) => {
      if (!cur) return cur;
      const i = cur.findIndex((r) => r.id === run.id);
      if (i >= 0) {
        const next = cur.slice();
        next[i] = { ...cur[i], ...run };
        return next;
      }
      if (run.status === "queued" && matches(run, filtersRef.current)) {
        if (pageRef.current === 0) {
          setCount((c) => c + 1);
          return [run, ...cur].slice(0, PAGE);
        }
        setNewRuns((n) => n + 1);
      }
      return cur;
    });
  }, []);
  const live = useTeamStream(onMessage);

  const toggle = (id: string) => setSelected((s) => (s.includes(id) ? s.filter((x) => x !== id) : [...s, id]));
  const pages = Math.max(1, Math.ceil(count / PAGE));
  const anyFilter = Object.values(filters).some(Boolean);

  return (
    <main class="page">
      <div class="page-head">
        <h1>Runs</h1>
        <LiveIndicator state={live} />
        <span class="spacer" />
        <button
          type="button"
          class="btn"
          disabled={selected.length < 2}
          data-testid="compare-button"
          onClick={() => navigate(`/compare?ids=${selected.map(encodeURIComponent).join(",")}`)}
          title={selected.length < 2 ? "Select two or more runs to compare" : undefined}
        >
          Compare{selected.length ? ` (${selected.length})` : ""}
        </button>
        <Link href="/new" class="btn primary" data-testid="new-run-link">
          New run
        </Link>
      </div>
      <form
        class="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          setParam({ q: search });
        }}
      >
        <label>
          Search
          <input
            type="search"
            value={search}
            placeholder="id, name, owner, tag…"
            data-testid="runs-search"
            onInput={(e) => setSearch((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Status
          <select
            value={filters.status}
            data-testid="filter-status"
            onChange={(e) => setParam({ status: (e.target as HTMLSelectElement).value })}
          >
            <option value="">any</option>
            {RUN_STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Kind
          <select
            value={filters.kind}
            data-testid="filter-kind"
            onChange={(e) => setParam({ kind: (e.target as HTMLSelectElement).value })}
          >
            <option value="">any</option>
            {RUN_KINDS.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Project
          <input
            value={filters.project}
            size={10}
            data-testid="filter-project"
            onChange={(e) => setParam({ project: (e.target as HTMLInputElement).value.trim() })}
          />
        </label>
        <label>
          Tag
          <input
            value={filters.tag}
            size={10}
            data-testid="filter-tag"
            onChange={(e) => setParam({ tag: (e.target as HTMLInputElement).value.trim() })}
          />
        </label>
        {anyFilter && (
          <button
            type="button"
            class="btn small ghost"
            onClick={() => {
              setSearch("");
              navigate("/", true);
            }}
          >
            Clear
          </button>
        )}
      </form>
      {newRuns > 0 && (
        <div class="notice">
          {newRuns} new run{newRuns > 1 ? "s" : ""} on the first page. <Link href="/">Show</Link>
        </div>
      )}
      {error ? <ErrorBox error={error} retry={() => setReload((n) => n + 1)} /> : null}
      {rows === null && !error ? (
        <div class="state loading" role="status" data-testid="loading">
          Loading runs…
        </div>
      ) : rows && rows.length === 0 ? (
        <Empty>
          {anyFilter ? (
            "No run matches these filters."
          ) : (
            <>
              No runs yet. <Link href="/new">Start one</Link>.
            </>
          )}
        </Empty>
      ) : rows ? (
        <div class={`table-wrap${loading ? " dim" : ""}`}>
          <table class="runs" data-testid="runs-table" aria-busy={loading}>
            <thead>
              <tr>
                <th scope="col">
                  <span class="sr-only">Select</span>
                </th>
                <th scope="col">Run</th>
                <th scope="col">Status</th>
                <th scope="col">Kind</th>
                <th scope="col">Model</th>
                <th scope="col">Framework</th>
                <th scope="col">Progress</th>
                <th
                  scope="col"
                  data-testid="runs-col-knn-probe"
                  title="The monitor's kNN probe: top-1 (%) on a few hundred images at the step shown"
                >
                  kNN probe (step)
                </th>
                <th scope="col" data-testid="runs-col-knn-eval" title="Best kNN evaluation top-1 (%)">
                  kNN eval
                </th>
                <th scope="col" title="Best linear-probe top-1 (%)">
                  Linear
                </th>
                <th scope="col">Alerts</th>
                <th scope="col">Owner</th>
                <th scope="col">Tags</th>
                <th scope="col">Age</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => {
                const pr = progress(r);
                const probe = knnProbeCell(r);
                const knnEval = knnEvalCell(r);
                return (
                  <tr
                    key={r.id}
                    data-testid="run-row"
                    data-run-id={r.id}
                    class={selected.includes(r.id) ? "selected" : ""}
                  >
                    <td>
                      <input
                        type="checkbox"
                        checked={selected.includes(r.id)}
                        onChange={() => toggle(r.id)}
                        aria-label={`Select run ${r.name ?? r.id}`}
                        data-testid="run-select"
                      />
                    </td>
                    <td class="run-name">
                      <Link href={`/runs/${encodeURIComponent(r.id)}`}>{r.name || r.id}</Link>
                      <div class="muted small mono">
                        {r.id}
                        {r.project !== "default" ? ` · ${r.project}` : ""}
                      </div>
                    </td>
                    <td>
                      <StatusBadge status={r.status} />
                    </td>
                    <td>{r.kind}</td>
                    <td class="mono small">{r.model ?? (r.kind === "pretrain" ? "—" : "from checkpoint")}</td>
                    <td class="small">{r.framework ?? (r.kind === "pretrain" ? "—" : r.kind)}</td>
                    <td>
                      {pr.pct !== null ? (
                        <div class="progress" title={pr.text}>
                          <div class="bar" style={{ width: `${pr.pct}%` }} />
                          <span>{pr.text}</span>
                        </div>
                      ) : (
                        <span class="muted small">{pr.text}</span>
                      )}
                    </td>
                    <td class="num" data-testid="run-knn-probe" title={probe.title}>
                      {probe.text}
                    </td>
                    <td class="num" data-testid="run-knn-eval" title={knnEval.title}>
                      {knnEval.text}
                    </td>
                    <td class="num">{fmtAcc(r.best_linear_top1)}</td>
                    <td>
                      {r.alert_count ? (
                        <span
                          class="badge alert"
                          data-testid="alert-badge"
                          title={
                            alertKinds.get(r.id) ?? `${r.alert_count} stability alert${r.alert_count > 1 ? "s" : ""}`
                          }
                        >
                          ⚠ {r.alert_count}
                        </span>
                      ) : (
                        ""
                      )}
                    </td>
                    <td>{r.owner}</td>
                    <td>
                      {r.tags.map((t) => (
                        <button
                          type="button"
                          key={t}
                          class="tag"
                          onClick={() => setParam({ tag: t })}
                          title={`Filter by tag ${t}`}
                        >
                          {t}
                        </button>
                      ))}
                    </td>
                    <td class="small" title={r.created_at}>
                      {timeAgo(r.created_at)}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      ) : null}
      {rows && count > 0 && (
        <nav class="pager" aria-label="Pages">
          <button
            type="button"
            class="btn small"
            disabled={page === 0}
            onClick={() => setParam({ page: page - 1 })}
            data-testid="page-prev"
          >
            ← Previous
          </button>
          <span class="muted small">
            Page {page + 1} of {pages} · {count} run{count === 1 ? "" : "s"}
          </span>
          <button
            type="button"
            class="btn small"
            disabled={page + 1 >= pages}
            onClick={() => setParam({ page: page + 1 })}
            data-testid="page-next"
          >
            Next →
          </button>
        </nav>
      )}
    </main>
  );
}
