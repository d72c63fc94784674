// The team's runs: server-side filters, search and pagination (so 10^4 runs cost one page), status kept
// live from the team stream, and a selection to compare.
import { useEffect, useState } from "preact/hooks";
import type { RunQuery } from "../api/client";
import { navigate, useRoute } from "../router";
import { Empty, ErrorBox, Link, LiveIndicator } from "../ui/common";
import { RunsFilters } from "./runs/RunsFilters";
import { RunsTable } from "./runs/RunsTable";
import { PAGE, useRuns } from "./runs/useRuns";

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
  const { rows, count, error, loading, newRuns, retry, live } = useRuns(filters, page);
  const [selected, setSelected] = useState<string[]>([]);
  const [search, setSearch] = useState(filters.q ?? "");

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

  // Debounced search box -> ?q=
  useEffect(() => {
    if (search === (filters.q ?? "")) return;
    const t = setTimeout(() => setParam({ q: search }), 300);
    return () => clearTimeout(t);
  }, [search]);

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
      <RunsFilters filters={filters} search={search} setSearch={setSearch} setParam={setParam} anyFilter={anyFilter} />
      {newRuns > 0 && (
        <div class="notice">
          {newRuns} new run{newRuns > 1 ? "s" : ""} on the first page. <Link href="/">Show</Link>
        </div>
      )}
      {error ? <ErrorBox error={error} retry={retry} /> : null}
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
        <RunsTable rows={rows} loading={loading} selected={selected} toggle={toggle} setParam={setParam} />
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
