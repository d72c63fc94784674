import { describe, expect, it } from "vitest";
import type { LineagePublic } from "../api/types";
import { branchKey, compareHref, lineageOverlay, type LineageRun } from "./lineage";

const run = (id: string, extra: Partial<LineageRun> = {}): LineageRun => ({
  id,
  label: id.toUpperCase(),
  color: `#${id}${id}${id}`.slice(0, 7),
  kind: "pretrain",
  parentRunId: null,
  parentStep: null,
  ...extra,
});

const lineage = (extra: Partial<LineagePublic> = {}): LineagePublic => ({
  parent: null,
  forks: [],
  branches: [],
  ...extra,
});

describe("lineageOverlay", () => {
  it("draws a parent's rollback branches dashed in its colour and marks the fork point and each rollback", () => {
    const parent = run("a");
    const fork = run("b", { parentRunId: "a", parentStep: 32 });
    const lineages = new Map<string, LineagePublic | null>([
      [
        "a",
        lineage({
          forks: [{ id: "b", name: "B", status: "running", step: 32 }],
          branches: [
            {
              branch: 1,
              from_step: 50,
              to_step: 48,
              alert_kind: "grad_spike",
              alert_step: 49,
              lr_scale: 0.5,
              skipped: [48, 50],
              time: 0,
            },
          ],
        }),
      ],
      ["b", lineage({ parent: { id: "a", name: "A", step: 32 } })],
    ]);
    const { branches, markers } = lineageOverlay([parent, fork], lineages);
    expect(branches).toEqual([
      { runId: "a", branch: 1, label: "A · rollback 1 (abandoned)", color: parent.color, fromStep: 50, toStep: 48 },
    ]);
    expect(branchKey(branches[0])).toBe("a#1");
    expect(markers).toEqual([
      { step: 32, label: "fork", detail: "B forked from A", kind: "branch", color: fork.color },
      {
        step: 48,
        label: "rollback 1",
        detail: "rollback 1 of A (back from step 50)",
        kind: "branch",
        color: parent.color,
      },
    ]);
  });

  it("marks a fork from its own parent_step when its lineage did not load, naming a parent not compared by id", () => {
    const { branches, markers } = lineageOverlay(
      [run("b", { parentRunId: "zzz", parentStep: 16 })],
      new Map([["b", null]]),
    );
    expect(branches).toEqual([]);
    expect(markers).toEqual([{ step: 16, label: "fork", detail: "B forked from zzz", kind: "branch", color: "#bbb" }]);
  });

  it("joins markers at one step, and leaves evaluation runs (parent, no fork step) unmarked", () => {
    const { markers } = lineageOverlay(
      [
        run("b", { parentRunId: "a", parentStep: 16 }),
        run("c", { parentRunId: "a", parentStep: 16 }),
        run("e", { kind: "knn", parentRunId: "a", parentStep: 16 }),
      ],
      new Map(),
    );
    expect(markers).toHaveLength(1);
    expect(markers[0].label).toBe("fork");
    expect(markers[0].detail).toBe("B forked from a; C forked from a");
  });
});

describe("compareHref", () => {
  it("keeps the order, drops repeats and encodes ids", () => {
    expect(compareHref(["a", "b", "a", "c d"])).toBe("/compare?ids=a,b,c%20d");
  });
});
