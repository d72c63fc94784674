// The team's evaluated models, best first per protocol and dataset: rank, top-1, the runs, model and
// framework, the config settings that differ from the defaults as chips, and the owner; CSV and Markdown
// exports of exactly what is shown (the same filters).
import { useEffect, useState } from "preact/hooks";
import { api, exportUrl, type LeaderboardQuery } from "../api/client";
import type { LeaderboardRow } from "../api/types";
import { navigate, useRoute } from "../router";
import { chipOrder, chipText } from "../studies/logic";
import { Empty, ErrorBox, Link, Loading, fmtAcc, shortId, timeAgo } from "../ui/common";

const PROTOCOLS: [string, string][] = [
  ["knn", "kNN"],
  ["linear", "Linear probe"],
  ["finetune", "Fine-tune"],
  ["", "All"],
];
const MAX_CHIPS = 8;

function Chips({
  config,
  varying,
  order,
}: {
  config: Record<string, unknown>;
  varying: Set<string>;
  order: (c: Record<string, unknown>) => string[];
}) {
  const [all, setAll] = useState(false);
  const entries = order(config).map((k) => [k, config[k]] as const);
  if (!entries.length) return <span class="muted small">defaults</span>;
  const shown = all ? entries : entries.slice(0, MAX_CHIPS);
  return (
    <span class="chips">
      {shown.map(([k, v]) => (
        <span
          key={k}
          class={`chip${varying.has(k) ? " varies" : ""}`}
          title={`${k} = ${JSON.stringify(v)}${varying.has(k) ? " (differs between the models of this table)" : " (shared by every model of this table)"}`}
        >
          {chipText(k, v)}
        </span>
      ))}
      {entries.length > MAX_CHIPS && (
        <button type="button" class="linklike small" onClick={() => setAll(!all)}>
          {all ? "fewer" : `+${entries.length - MAX_CHIPS} more`}
        </button>
      )}
    </span>
  );
}

export function LeaderboardPage() {
  const route = useRoute();
  const q: LeaderboardQuery = {
    protocol: route.query.get("protocol") ?? "knn",
    dataset: route.query.get("dataset") ?? "",
    project: route.query.get("project") ?? "",
  };
  const [rows, setRows] = useState<LeaderboardRow[] | null>(null);
  const [datasets, setDatasets] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [reload, setReload] = useState(0);
  const [project, setProject] = useState(q.project ?? "");
  const sig = JSON.stringify(q);

  const setParam = (changes: Partial<LeaderboardQuery>) => {
    const p = new URLSearchParams(window.location.search);
    for (const [k, v] of Object.entries(changes)) {
      if (v === undefined) continue;
      p.set(k, v);
      if (!v && k !== "protocol") p.delete(k);
    }
    navigate(`/leaderboard?${p.toString()}`, true);
  };

  useEffect(() => {
    const ctrl = new AbortController();
    setRows(null);
    api
      .leaderboard(q, ctrl.signal)
      .then((lb) => {
        setRows(lb.data);
        setError(null);
        if (!q.dataset)
          setDatasets(Array.from(new Set(lb.data.map((r) => r.dataset).filter(Boolean) as string[])).sort());
      })
      .catch((e) => {
        if ((e as Error).name !== "AbortError") setError(e);
      });
    return () => ctrl.abort();
  }, [sig, reload]);

  const groups = new Map<string, LeaderboardRow[]>(); // one table per protocol and dataset
  for (const r of rows ?? []) {
    const k = `${r.protocol}\u0000${r.dataset ?? ""}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(r);
  }

  return (
    <main class="page">
      <div class="page-head">
        <h1>Leaderboard</h1>
        <span class="spacer" />
        <a class="btn small" href={exportUrl.leaderboard("csv", q)} data-testid="leaderboard-export-csv" download>
          CSV
        </a>
        <a
          class="btn small"
          href={exportUrl.leaderboard("md", q)}
          target="_blank"
          rel="noopener"
          data-testid="leaderboard-export-md"
        >
          Markdown
        </a>
      </div>
      <div class="tabs" role="tablist" aria-label="Protocol">
        {PROTOCOLS.map(([p, label]) => (
          <button
            type="button"
            role="tab"
            key={p || "all"}
            aria-selected={q.protocol === p}
            class={q.protocol === p ? "active" : ""}
            data-testid={`leaderboard-tab-${p || "all"}`}
            onClick={() => setParam({ protocol: p })}
          >
            {label}
          </button>
        ))}
      </div>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          setParam({ project: project.trim() });
        }}
      >
        <label>
          Dataset
          <select
            value={q.dataset}
            data-testid="leaderboard-dataset"
            onChange={(e) => setParam({ dataset: (e.target as HTMLSelectElement).value })}
          >
            <option value="">all</option>
            {Array.from(new Set([...datasets, ...(q.dataset ? [q.dataset] : [])])).map((d) => (
              <option key={d} value={d}>
                {d}
              </option>
            ))}
          </select>
        </label>
        <label>
          Project
          <input
            value={project}
            size={12}
            data-testid="leaderboard-project"
            onInput={(e) => setProject((e.target as HTMLInputElement).value)}
            onChange={(e) => setParam({ project: (e.target as HTMLInputElement).value.trim() })}
          />
        </label>
      </form>
      {error ? <ErrorBox error={error} retry={() => setReload((n) => n + 1)} /> : null}
      {!rows && !error ? (
        <Loading what="leaderboard" />
      ) : rows && rows.length === 0 ? (
        <Empty>
          No evaluated models{q.protocol ? ` for ${q.protocol}` : ""}
          {q.dataset ? ` on ${q.dataset}` : ""} yet. Evaluate a pretraining run from its Evaluations tab, or start a{" "}
          <Link href="/studies/new">study</Link>.
        </Empty>
      ) : rows ? (
        Array.from(groups.entries()).map(([k, rs]) => {
          const [protocol, dataset] = k.split("\u0000");
          const chips = chipOrder(rs.map((r) => r.config));
          return (
            <section key={k}>
              <h2>
                {PROTOCOLS.find(([p]) => p === protocol)?.[1] ?? protocol} · {dataset || "unknown dataset"}
              </h2>
              <div class="table-wrap">
                <table
                  class="runs leaderboard"
                  data-testid="leaderboard-table"
                  data-protocol={protocol}
                  data-dataset={dataset}
                >
                  <thead>
                    <tr>
                      <th scope="col" class="num">
                        #
                      </th>
                      <th scope="col" class="num">
                        Top-1
                      </th>
                      <th scope="col" class="num">
                        Top-5
                      </th>
                      <th scope="col">Model</th>
                      <th scope="col">Framework</th>
                      <th scope="col">Pretraining run</th>
                      <th scope="col">Config (differs from defaults)</th>
                      <th scope="col">Owner</th>
                      <th scope="col">Finished</th>
                    </tr>
                  </thead>
                  <tbody>
                    {rs.map((r) => (
                      <tr
                        key={r.eval_run_id}
                        data-testid="leaderboard-row"
                        data-run-id={r.eval_run_id}
                        data-rank={r.rank}
                        data-top1={r.top1}
                        data-protocol={r.protocol}
                      >
                        <td class="num">{r.rank}</td>
                        <td class="num">
                          <Link href={`/runs/${encodeURIComponent(r.eval_run_id)}`} title="the evaluation run">
                            <b>{fmtAcc(r.top1)}</b>
                          </Link>
                        </td>
                        <td class="num">{fmtAcc(r.top5)}</td>
                        <td class="mono small">{r.model ?? "—"}</td>
                        <td class="small">{r.framework ?? "—"}</td>
                        <td class="run-name">
                          {r.pretrain_run_id ? (
                            <Link href={`/runs/${encodeURIComponent(r.pretrain_run_id)}`}>
                              {r.name || shortId(r.pretrain_run_id)}
                            </Link>
                          ) : (
                            <span class="muted">{r.name ?? "—"}</span>
                          )}
                          {r.study_id && (
                            <div class="small">
                              <Link href={`/studies/${encodeURIComponent(r.study_id)}`}>study</Link>
                              {r.project !== "default" ? <span class="muted"> · {r.project}</span> : null}
                            </div>
                          )}
                        </td>
                        <td>
                          <Chips config={r.config} varying={chips.varying} order={chips.order} />
                        </td>
                        <td>{r.owner}</td>
                        <td class="small" title={r.finished_at ?? ""}>
                          {timeAgo(r.finished_at)}
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            </section>
          );
        })
      ) : null}
    </main>
  );
}
