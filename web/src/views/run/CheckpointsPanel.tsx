// The Checkpoints tab: every checkpoint saved, with whether it was healthy.
import type { CheckpointPublic } from "../../api/types";
import { Empty, timeAgo } from "../../ui/common";

export function CheckpointsPanel({ checkpoints }: { checkpoints: CheckpointPublic[] }) {
  return (
    <section aria-label="Checkpoints">
      {checkpoints.length === 0 ? (
        <Empty>No checkpoints yet.</Empty>
      ) : (
        <table class="simple" data-testid="checkpoints-table">
          <thead>
            <tr>
              <th>Step</th>
              <th>Healthy</th>
              <th>Path</th>
              <th>Saved</th>
            </tr>
          </thead>
          <tbody>
            {checkpoints.map((c) => (
              <tr key={c.step} data-testid="checkpoint-row">
                <td class="num">{c.step}</td>
                <td>{c.healthy ? "yes" : <span class="bad">no</span>}</td>
                <td class="mono small">{c.path}</td>
                <td class="small">{timeAgo(c.time)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
