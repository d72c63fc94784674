// The runs page's filters: search (debounced by the page), status, kind, project, tag; all kept in the URL.
import type { RunQuery } from "../../api/client";
import { LISTED_KINDS, RUN_STATUSES } from "../../api/types";
import { navigate } from "../../router";

export function RunsFilters({
  filters,
  search,
  setSearch,
  setParam,
  anyFilter,
}: {
  filters: RunQuery;
  search: string;
  setSearch: (s: string) => void;
  setParam: (changes: Record<string, string | number>) => void;
  anyFilter: boolean;
}) {
  return (
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
          {LISTED_KINDS.map((s) => (
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
  );
}
