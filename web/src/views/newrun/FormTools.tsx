// Above the generated form: "Find a field" and what will be sent (the overrides).
export function FormTools({
  filter,
  setFilter,
  overrides,
}: {
  filter: string;
  setFilter: (f: string) => void;
  overrides: Record<string, unknown>;
}) {
  const nOverrides = Object.keys(overrides).length;
  return (
    <div class="form-tools">
      <label>
        Find a field{" "}
        <input
          type="search"
          value={filter}
          placeholder="e.g. base_lr"
          data-testid="field-filter"
          onInput={(e) => setFilter((e.target as HTMLInputElement).value)}
        />
      </label>
      <span class="muted small" data-testid="overrides-count">
        {nOverrides} override{nOverrides === 1 ? "" : "s"}
        {nOverrides > 0 && (
          <>
            :{" "}
            <code>
              {Object.entries(overrides)
                .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
                .join(" ")}
            </code>
          </>
        )}
      </span>
    </div>
  );
}
