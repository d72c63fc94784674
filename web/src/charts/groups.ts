// Which metric keys share a chart. The paper's signals first (loss, lr, momentum, the patch-projection
// against last-block gradient norms, kNN accuracy), then throughput and device use, then anything else
// grouped by its prefix ("gpu/util", "gpu/mem" -> one chart "gpu"). The earlier signals of issue 13 sit right
// after the kNN accuracy: the update-to-weight ratio per parameter group (log scale: a spike is a multiple of the
// baseline, and the groups differ by orders of magnitude), the attention entropy of the first and last block, and
// the representation's effective rank and per-dimension std (log scale: collapse is the fall towards 0).

export interface ChartGroup {
  id: string;
  title: string;
  keys: string[];
  yRange?: [number, number];
  logY?: boolean;
}

const PAIR = ["grad_norm/patch_proj", "grad_norm/last_block"];
/** The order of the parameter groups and blocks inside a chart: lowest layer first. */
const LAYER_ORDER = ["patch_proj", "first_block", "last_block", "heads"];

const KNOWN: {
  id: string;
  title: string;
  test: (k: string) => boolean;
  yRange?: [number, number];
  logY?: boolean;
}[] = [
  { id: "loss", title: "Loss", test: (k) => k === "loss" || k.startsWith("loss/") || k.startsWith("loss_") },
  { id: "lr", title: "Learning rate", test: (k) => k === "lr" || k.startsWith("lr/") },
  { id: "momentum", title: "Momentum (EMA)", test: (k) => k === "momentum" || k.startsWith("momentum/") },
  { id: "grad_norm", title: "Gradient norm: patch projection vs last block", test: (k) => PAIR.includes(k) },
  { id: "grad_norm-other", title: "Gradient norms", test: (k) => k === "grad_norm" || k.startsWith("grad_norm/") },
  { id: "knn_top1", title: "kNN top-1 (%)", test: (k) => /^knn/.test(k), yRange: [0, 100] },
  {
    id: "update_ratio",
    title: "Update-to-weight ratio ‖Δw‖/‖w‖ per parameter group",
    test: (k) => k.startsWith("update_ratio/") || k === "update_ratio",
    logY: true,
  },
  {
    id: "attn_entropy",
    title: "Attention entropy (nats): first vs last block",
    test: (k) => k.startsWith("attn_entropy/") || k === "attn_entropy",
  },
  { id: "rankme", title: "Effective rank of the features (RankMe)", test: (k) => k === "rankme" },
  {
    id: "feat_std",
    title: "Feature std per dimension (→ 0 at collapse)",
    test: (k) => k === "feat_std",
    logY: true,
  },
  { id: "throughput", title: "Throughput (images/s)", test: (k) => /per_s|throughput/.test(k) },
  { id: "gpu", title: "GPU", test: (k) => /^gpu/.test(k) },
];

export function groupKeys(keys: string[]): ChartGroup[] {
  const groups = new Map<string, ChartGroup>();
  const order: string[] = [];
  const put = (id: string, title: string, key: string, yRange?: [number, number], logY?: boolean) => {
    if (!groups.has(id)) {
      groups.set(id, logY ? { id, title, keys: [], yRange, logY } : { id, title, keys: [], yRange });
      order.push(id);
    }
    groups.get(id)!.keys.push(key);
  };
  const rest: string[] = [];
  for (const k of [...keys].sort()) {
    const known = KNOWN.find((g) => g.test(k));
    if (known) put(known.id, known.title, k, known.yRange, known.logY);
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
    if (g.id === "update_ratio" || g.id === "attn_entropy") g.keys.sort((a, b) => layerRank(a) - layerRank(b));
  }
  return out;
}

/** A key's place in LAYER_ORDER by its suffix ("update_ratio/first_block" -> 1); unknown suffixes last, by name. */
function layerRank(key: string): number {
  const i = LAYER_ORDER.indexOf(key.split("/").pop() ?? "");
  return i < 0 ? LAYER_ORDER.length : i;
}
