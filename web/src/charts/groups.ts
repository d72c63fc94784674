// Which metric keys share a chart. The paper's signals first (loss, lr, momentum, the patch-projection
// against last-block gradient norms, kNN accuracy), then throughput and device use, then anything else
// grouped by its prefix ("gpu/util", "gpu/mem" -> one chart "gpu").

export interface ChartGroup {
  id: string;
  title: string;
  keys: string[];
  yRange?: [number, number];
  logY?: boolean;
}

const PAIR = ["grad_norm/patch_proj", "grad_norm/last_block"];

const KNOWN: { id: string; title: string; test: (k: string) => boolean; yRange?: [number, number] }[] = [
  { id: "loss", title: "Loss", test: (k) => k === "loss" || k.startsWith("loss/") || k.startsWith("loss_") },
  { id: "lr", title: "Learning rate", test: (k) => k === "lr" || k.startsWith("lr/") },
  { id: "momentum", title: "Momentum (EMA)", test: (k) => k === "momentum" || k.startsWith("momentum/") },
  { id: "grad_norm", title: "Gradient norm: patch projection vs last block", test: (k) => PAIR.includes(k) },
  { id: "grad_norm-other", title: "Gradient norms", test: (k) => k === "grad_norm" || k.startsWith("grad_norm/") },
  { id: "knn_top1", title: "kNN top-1 (%)", test: (k) => /^knn/.test(k), yRange: [0, 100] },
  { id: "throughput", title: "Throughput (images/s)", test: (k) => /per_s|throughput/.test(k) },
  { id: "gpu", title: "GPU", test: (k) => /^gpu/.test(k) },
];

export function groupKeys(keys: string[]): ChartGroup[] {
  const groups = new Map<string, ChartGroup>();
  const order: string[] = [];
  const put = (id: string, title: string, key: string, yRange?: [number, number]) => {
    if (!groups.has(id)) {
      groups.set(id, { id, title, keys: [], yRange });
      order.push(id);
    }
    groups.get(id)!.keys.push(key);
  };
  const rest: string[] = [];
  for (const k of [...keys].sort()) {
    const known = KNOWN.find((g) => g.test(k));
    if (known) put(known.id, known.title, k, known.yRange);
    else rest.push(k);
  }
  for (const k of rest) {
    const prefix = k.includes("/") ? k.split("/")[0] : k;
    put(prefix === k ? k : `${prefix}`, prefix, k);
  }
  const rank = (id: string) => {
    const i = KNOWN.findIndex((g) => g.id === id);
    return i < 0 ? KNOWN.length : i;
  };
  const out = order.map((id) => groups.get(id)!).sort((a, b) => rank(a.id) - rank(b.id));
  for (const g of out) {
    if (g.id === "grad_norm") g.keys.sort((a, b) => PAIR.indexOf(a) - PAIR.indexOf(b));
    if (g.id.startsWith("grad_norm")) g.logY = false;
  }
  return out;
}
