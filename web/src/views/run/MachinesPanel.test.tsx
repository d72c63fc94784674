import { render } from "preact";
import { act } from "preact/test-utils";
import { afterEach, describe, expect, it, vi } from "vitest";
import { closeTeamStream } from "../../api/team";
import { MachinesPanel } from "./MachinesPanel";

let host: HTMLElement | null = null;

afterEach(() => {
  if (host) render(null, host);
  host?.remove();
  host = null;
  closeTeamStream();
  vi.unstubAllGlobals();
});

const settle = () => act(async () => await new Promise((r) => setTimeout(r, 20)));

function beat(id: string, telemetry: Record<string, unknown>) {
  return {
    id,
    host: `${id}.lab`,
    queue: null,
    version: null,
    online: true,
    state: "idle",
    current_run_id: null,
    first_seen: new Date().toISOString(),
    last_seen: new Date().toISOString(),
    telemetry,
  };
}

describe("the run's Machines panel", () => {
  it("shows each machine's heartbeat and this run's GPUs, and brings a machine to life on its heartbeat", async () => {
    const gpus = [
      { index: 0, name: "H100", utilization: 11, memory_used: 2 ** 30, memory_total: 80 * 2 ** 30, temperature: 40 },
      {
        index: 1,
        name: "H100",
        utilization: 97,
        memory_used: 70 * 2 ** 30,
        memory_total: 80 * 2 ** 30,
        temperature: 71,
      },
    ];
    let push: (text: string) => void = () => {};
    const asked: string[] = [];
    // The server's answers: the workers list (b has never reported), then the team stream, held open.
    vi.stubGlobal("fetch", async (url: string) => {
      asked.push(url);
      if (url === "/api/v1/workers")
        return new Response(
          JSON.stringify({ data: [beat("a", { gpus, agent: { devices: [0, 1], device_kind: "gpu" } })], count: 1 }),
          {
            status: 200,
            headers: { "Content-Type": "application/json" },
          },
        );
      if (url === "/api/v1/stream") {
        const body = new ReadableStream<Uint8Array>({
          start(c) {
            push = (text) => c.enqueue(new TextEncoder().encode(text));
          },
        });
        return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
      }
      return new Response("{}", { status: 404 });
    });
    host = document.createElement("div");
    document.body.appendChild(host);
    const placement = [
      { worker_id: "a", host: "a.lab", devices: [1] },
      { worker_id: "b", host: "b.lab", devices: [0, 1] },
    ];
    act(() => render(<MachinesPanel run={{ placement }} />, host!));
    await settle();

    expect(asked).toContain("/api/v1/workers");
    const rows = () => Array.from(host!.querySelectorAll<HTMLElement>('[data-testid="machine-row"]'));
    expect(rows().map((r) => r.dataset.alive)).toEqual(["1", "0"]);
    expect(rows()[0].textContent).toContain("(rendezvous)");
    expect(rows()[0].querySelector('[data-testid="machine-heartbeat"]')!.textContent).toMatch(/^\d+s ago$/);
    const gpu = rows()[0].querySelectorAll('[data-testid="machine-gpu"]');
    expect(gpu).toHaveLength(1);
    expect(gpu[0].textContent).toContain("GPU 1");
    expect(gpu[0].textContent).toContain("97%");
    expect(gpu[0].textContent).toContain("70.0 GiB / 80.0 GiB");
    expect(gpu[0].textContent).toContain("71 °C");
    const quiet = rows()[1].querySelector('[data-testid="machine-heartbeat"]')!;
    expect(quiet.textContent).toBe("no heartbeat");
    expect(quiet.className).toBe("bad");

    await act(async () => {
      push(`event: worker\nid: 1-0\ndata: ${JSON.stringify(beat("b", { gpus: [{ ...gpus[0], index: 0 }] }))}\n\n`);
      await new Promise((r) => setTimeout(r, 20));
    });
    expect(rows().map((r) => r.dataset.alive)).toEqual(["1", "1"]);
    expect(rows()[1].querySelectorAll('[data-testid="machine-gpu"]')[0].textContent).toContain("11%");
    expect(rows()[1].querySelectorAll('[data-testid="machine-gpu"]')[1].textContent).toContain("no reading");
  });
});
