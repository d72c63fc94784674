// One dataset: its sample grid (captioned with each row's classes), splits, classes, mean/std, image sizes, the
// packed copy's facts, the runs that scanned and packed it, and "Prepare" with the prepare run's live progress.
import { useRef, useState } from "preact/hooks";
import { api, ApiError, exportUrl } from "../api/client";
import type { DatasetPublic } from "../api/types";
import { navigate } from "../router";
import { ErrorBox, Link, LiveIndicator, Loading, timeAgo } from "../ui/common";
import { prepareErrors, SHORT_SIDE, shortSideOf } from "./datasets/add";
import {
  fmtCount,
  fmtHw,
  fmtSeconds,
  fmtSize,
  fmtSplits,
  gridColumns,
  sampleRows,
  samplesAlt,
  type RunProgress,
} from "./datasets/format";
import { ChannelSwatches, DatasetStatusChip, PreparedChip, RunProgressBar } from "./datasets/parts";
import { useDataset } from "./datasets/useDataset";

const CLASSES_SHOWN = 20;
const runHref = (id: string) => `/runs/${encodeURIComponent(id)}`;

/**
 * The grid and, under it, each row's class names. A grid drawn on its first request (the built-in's) comes
 * with its labels only then: the dataset is read again once the image has loaded without them.
 */
function SampleGrid({ d, reread }: { d: DatasetPublic; reread: () => void }) {
  const labels = d.sample_labels ?? [];
  const asked = useRef(false);
  const [width, setWidth] = useState(0); // the image's natural width, once loaded
  const [failed, setFailed] = useState(false);
  if (!d.has_samples)
    return (
      <div class="state empty samples-none" data-testid="dataset-samples-none">
        {d.status === "scanning" ? "The sample grid comes with the scan." : "No sample grid."}
      </div>
    );
  const shownCols = gridColumns(width, labels.length);
  const rows = sampleRows(labels, d.classes, shownCols);
  return (
    <figure class="samples card" data-testid="dataset-samples">
      {failed ? (
        <div class="state error" role="alert">
          The sample grid could not be loaded.
        </div>
      ) : (
        <img
          src={exportUrl.datasetSamples(d.name, d.updated_at)}
          alt={samplesAlt(d.name, labels.length, shownCols)}
          data-testid="dataset-samples-img"
          onLoad={(e) => {
            setWidth((e.target as HTMLImageElement).naturalWidth);
            if (!labels.length && !asked.current) {
              asked.current = true;
              reread();
            }
          }}
          onError={() => setFailed(true)}
        />
      )}
      {labels.length > 0 && (
        <figcaption>
          <span class="muted small">Classes of the grid, row by row:</span>
          <ol class="sample-rows small" data-testid="dataset-samples-caption">
            {rows.map((r, i) => (
              <li key={i}>{r}</li>
            ))}
          </ol>
        </figcaption>
      )}
    </figure>
  );
}

function ClassChips({ classes }: { classes: string[] }) {
  const [all, setAll] = useState(false);
  const shown = all ? classes : classes.slice(0, CLASSES_SHOWN);
  return (
    <div class="class-chips" data-testid="dataset-class-list">
      {shown.map((c, i) => (
        <span key={i} class="chip" title={`label ${i}`}>
          {c}
        </span>
      ))}
      {classes.length > CLASSES_SHOWN && (
        <button
          type="button"
          class="linklike small"
          aria-expanded={all}
          data-testid="dataset-classes-toggle"
          onClick={() => setAll(!all)}
        >
          {all ? "show fewer" : `show all ${fmtCount(classes.length)}`}
        </button>
      )}
    </div>
  );
}

function Facts({ d }: { d: DatasetPublic }) {
  const size = d.image_size;
  return (
    <dl class="facts" data-testid="dataset-facts">
      <dt>Train images</dt>
      <dd data-testid="dataset-train">{fmtCount(d.splits?.train?.images)}</dd>
      <dt>Val images</dt>
      <dd data-testid="dataset-val">
        {!d.splits ? "—" : d.splits.val ? fmtCount(d.splits.val.images) : "— (no validation split)"}
      </dd>
      <dt>Classes</dt>
      <dd data-testid="dataset-num-classes">{fmtCount(d.num_classes ?? d.classes?.length ?? null)}</dd>
      <dt>Mean</dt>
      <dd>
        <ChannelSwatches values={d.mean} label="mean" />
      </dd>
      <dt>Std</dt>
      <dd>
        <ChannelSwatches values={d.std} label="std" />
      </dd>
      {d.stats_images !== null && (
        <>
          <dt>Measured on</dt>
          <dd>{fmtCount(d.stats_images)} training images</dd>
        </>
      )}
      <dt>Image size</dt>
      <dd data-testid="dataset-image-size">
        {size ? (
          <>
            min <b>{fmtHw(size.min)}</b> · median <b>{fmtHw(size.median)}</b> · max <b>{fmtHw(size.max)}</b>{" "}
            <span class="muted small">(width×height px)</span>
          </>
        ) : (
          "—"
        )}
      </dd>
    </dl>
  );
}

function PackedCopy({
  d,
  setDataset,
  progress,
}: {
  d: DatasetPublic;
  setDataset: (d: DatasetPublic) => void;
  progress: RunProgress | null;
}) {
  const [side, setSide] = useState(String(d.packed?.short_side ?? SHORT_SIDE.default));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const p = d.packed;
  const preparing = d.prepare_status === "preparing";
  const canPrepare = d.status === "ready" && !preparing && !busy;

  const prepare = async (e: Event) => {
    e.preventDefault();
    const s = shortSideOf(side);
    if (s.value === undefined) {
      setErrors({ short_side: s.error ?? "invalid" });
      return;
    }
    setBusy(true);
    setErrors({});
    try {
      setDataset(await api.prepareDataset(d.name, { short_side: s.value }));
    } catch (err) {
      setErrors(
        err instanceof ApiError && err.validation.length
          ? prepareErrors(err.validation)
          : { "": err instanceof Error ? err.message : String(err) },
      );
    }
    setBusy(false);
  };

  return (
    <section class="card packed" aria-label="Packed copy" data-testid="dataset-packed">
      <div class="packed-head">
        <h2>Packed copy</h2>
        <PreparedChip d={d} />
        {d.prepare_run_id && (
          <Link href={runHref(d.prepare_run_id)} class="small" data-testid="dataset-prepare-run">
            prepare run
          </Link>
        )}
      </div>
      {p ? (
        <dl class="facts" data-testid="dataset-packed-facts">
          <dt>Size on disk</dt>
          <dd data-testid="dataset-packed-bytes" data-bytes={p.bytes ?? ""}>
            {fmtSize(p.bytes)} in {fmtCount(p.shards)} shard{p.shards === 1 ? "" : "s"}
          </dd>
          <dt>Images</dt>
          <dd>{fmtSplits(p.splits)} (train / val)</dd>
          <dt>Short side</dt>
          <dd>{p.short_side ? `${p.short_side} px` : "—"}</dd>
          <dt>JPEG quality</dt>
          <dd>{p.quality ?? "—"}</dd>
          <dt>Took</dt>
          <dd>{fmtSeconds(p.seconds)}</dd>
          <dt>Folder</dt>
          <dd class="mono small root" title="In the server's storage">
            {p.root}
          </dd>
        </dl>
      ) : (
        <p class="muted small">
          {d.builtin
            ? "A small in-memory set: it trains as it is, a packed copy buys nothing."
            : "Not packed yet: runs decode the source files. A packed copy re-encodes every image once at a fixed short side into a few large shards."}
        </p>
      )}
      {preparing && <RunProgressBar progress={progress} wide />}
      {d.prepare_status === "failed" && (
        <div class="state error" role="alert" data-testid="dataset-prepare-error">
          {d.error ?? "The last prepare failed."}
          {d.prepare_run_id && (
            <>
              {" "}
              (<Link href={runHref(d.prepare_run_id)}>its run</Link>)
            </>
          )}
        </div>
      )}
      <form class="prepare-form" onSubmit={prepare} noValidate data-testid="dataset-prepare-form">
        <label>
          Short side (px)
          <input
            name="short_side"
            value={side}
            inputMode="numeric"
            size={6}
            data-testid="dataset-short-side"
            aria-invalid={errors.short_side ? true : undefined}
            aria-describedby={errors.short_side ? "prepare-side-err" : undefined}
            onInput={(e) => setSide((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit" class="btn primary" disabled={!canPrepare} data-testid="dataset-prepare">
          {busy ? "Starting…" : preparing ? "Preparing…" : p ? "Prepare again" : "Prepare"}
        </button>
        {d.status !== "ready" && <span class="muted small">once the scan is done</span>}
      </form>
      {errors.short_side && (
        <div class="field-error" role="alert" id="prepare-side-err" data-testid="field-error-short_side">
          {errors.short_side}
        </div>
      )}
      {(errors[""] || errors.quality) && (
        <div class="state error" role="alert" data-testid="action-error">
          {[errors[""], errors.quality].filter(Boolean).join("; ")}
        </div>
      )}
    </section>
  );
}

export function DatasetPage({ name }: { name: string }) {
  const { dataset: d, setDataset, removed, error, reread, runId, progress, live } = useDataset(name);
  const [removing, setRemoving] = useState<string | null>(null);

  if (error)
    return (
      <main class="page">
        <ErrorBox
          error={
            error instanceof ApiError && error.status === 404
              ? `There is no dataset named ${name} in your teams.`
              : error
          }
          retry={error instanceof ApiError && error.status === 404 ? undefined : reread}
        />
        <p>
          <Link href="/datasets">Back to the datasets</Link>
        </p>
      </main>
    );
  if (!d)
    return (
      <main class="page">
        <Loading what="dataset" />
      </main>
    );

  const remove = async () => {
    if (!confirm(`Remove ${d.name} from the team's datasets? Its files are left where they are.`)) return;
    try {
      await api.removeDataset(d.name);
      navigate("/datasets");
    } catch (e) {
      setRemoving(e instanceof Error ? e.message : String(e));
    }
  };

  return (
    <main class="page dataset-page" data-testid="dataset-page" data-name={d.name}>
      <div class="page-head">
        <h1>
          <Link href="/datasets" class="muted">
            Datasets
          </Link>{" "}
          / {d.name}
        </h1>
        <DatasetStatusChip d={d} />
        {runId && <LiveIndicator state={live} />}
        <span class="spacer" />
        <Link href={`/new?dataset=${encodeURIComponent(d.name)}`} class="btn" data-testid="dataset-new-run">
          New run on it
        </Link>
        {!d.builtin && (
          <button type="button" class="btn danger" data-testid="dataset-remove" onClick={remove}>
            Remove
          </button>
        )}
      </div>
      <div class="run-meta">
        <span class="mono">{d.kind}</span>
        {d.root && (
          <span class="mono" title="The source, as the workers read it">
            {d.root}
          </span>
        )}
        {d.builtin && <span class="badge quiet">built-in</span>}
        {d.scan_run_id && (
          <Link href={runHref(d.scan_run_id)} data-testid="dataset-scan-run">
            scan run
          </Link>
        )}
        <span title={d.updated_at}>updated {timeAgo(d.updated_at)}</span>
      </div>
      {removed && (
        <div class="notice" role="status" data-testid="dataset-removed">
          This dataset was just removed from the team's datasets. <Link href="/datasets">Back to the datasets</Link>
        </div>
      )}
      {removing && (
        <div class="state error" role="alert" data-testid="action-error">
          {removing}
        </div>
      )}
      {d.status === "scanning" && (
        <div class="notice scanning" data-testid="dataset-scanning">
          Scanning: counting images, measuring mean/std, drawing the sample grid.{" "}
          <RunProgressBar progress={progress} wide />
        </div>
      )}
      {d.status === "failed" && (
        <div class="state error" role="alert" data-testid="dataset-error">
          <b>The scan failed:</b> {d.error ?? "no reason given"}
          {d.scan_run_id && (
            <>
              {" "}
              (<Link href={runHref(d.scan_run_id)}>its run</Link>)
            </>
          )}
        </div>
      )}
      <div class="dataset-body">
        <SampleGrid key={d.updated_at} d={d} reread={reread} />
        <div class="dataset-side">
          <section class="card" aria-label="Facts">
            <Facts d={d} />
            {d.classes && d.classes.length > 0 && (
              <>
                <h2>Classes</h2>
                <ClassChips classes={d.classes} />
              </>
            )}
          </section>
          <PackedCopy key={d.name} d={d} setDataset={setDataset} progress={progress} />
        </div>
      </div>
    </main>
  );
}
