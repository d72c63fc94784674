import type { TemplatePublic } from "../../api/types";

/** The paper's numbers of a template: one axis as a list, two as a grid. */
export function PaperNumbers({ t }: { t: TemplatePublic }) {
  if (!t.paper) return <p class="muted small">The paper printed no table for this comparison.</p>;
  const caption = (
    <div class="small muted paper-caption">
      Paper, {t.paper.source} ({t.paper.protocol} top-1 on ImageNet): {t.paper.setting}.
      {t.paper.notes ? ` ${t.paper.notes}` : ""}
    </div>
  );
  if (t.axes.length === 2) {
    return (
      <>
        {caption}
        <table class="simple paper-numbers">
          <thead>
            <tr>
              <th scope="col">
                {t.axes[0].name} \ {t.axes[1].name}
              </th>
              {t.axes[1].labels.map((l) => (
                <th scope="col" key={l}>
                  {l}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {t.axes[0].labels.map((a) => (
              <tr key={a}>
                <th scope="row">{a}</th>
                {t.axes[1].labels.map((b) => (
                  <td key={b} class="num">
                    {t.paper_numbers[`${a} | ${b}`]?.toFixed(1) ?? "—"}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </>
    );
  }
  return (
    <>
      {caption}
      <table class="simple paper-numbers">
        <thead>
          <tr>
            <th scope="col">{t.axes[0]?.name}</th>
            <th scope="col">paper top-1</th>
          </tr>
        </thead>
        <tbody>
          {(t.axes[0]?.labels ?? []).map((l) => (
            <tr key={l}>
              <td>{l}</td>
              <td class="num">{t.paper_numbers[l]?.toFixed(1) ?? "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
