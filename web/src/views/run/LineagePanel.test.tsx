import { render } from "preact";
import { act } from "preact/test-utils";
import { afterEach, describe, expect, it } from "vitest";
import { LineagePanel } from "./LineagePanel";

let host: HTMLElement | null = null;
afterEach(() => {
  if (host) render(null, host);
  host?.remove();
  host = null;
});

describe("the Lineage tab", () => {
  it("lists the parent, the forks with their step and the rollback branches, with links on the step axis", () => {
    host = document.createElement("div");
    document.body.appendChild(host);
    act(() =>
      render(
        <LineagePanel
          id="run-b"
          error={null}
          lineage={{
            parent: { id: "run-a", name: "base", step: 32 },
            forks: [{ id: "run-c", name: null, status: "running", step: 48 }],
            branches: [
              {
                branch: 1,
                from_step: 23,
                to_step: 16,
                alert_kind: "update_spike",
                alert_step: 20,
                lr_scale: 0.5,
                skipped: [16, 22],
                time: Date.now() / 1000,
              },
            ],
          }}
        />,
        host!,
      ),
    );
    const q = (id: string) => host!.querySelector<HTMLElement>(`[data-testid="${id}"]`)!;
    expect(q("lineage-parent").textContent).toContain("Forked from base at step 32");
    expect(q("lineage-compare-parent").getAttribute("href")).toBe("/compare?ids=run-a,run-b");
    const fork = q("lineage-fork");
    expect(fork.dataset.runId).toBe("run-c");
    expect(fork.dataset.step).toBe("48");
    expect(fork.textContent).toContain("run-c");
    expect(q("lineage-compare-forks").getAttribute("href")).toBe("/compare?ids=run-b,run-c");
    const branch = q("lineage-branch");
    expect(branch.textContent).toContain("from step 23 to the checkpoint at step 16");
    expect(branch.textContent).toContain("Update-size spike at step 20");
    expect(branch.textContent).toContain("steps 16–22");
    expect(branch.querySelector("a")!.getAttribute("href")).toBe("/runs/run-b?step=20");
  });

  it("says so when the run has one line", () => {
    host = document.createElement("div");
    document.body.appendChild(host);
    act(() => render(<LineagePanel id="x" error={null} lineage={{ parent: null, forks: [], branches: [] }} />, host!));
    expect(host.querySelector('[data-testid="empty"]')!.textContent).toContain("No forks and no rollbacks");
  });
});
