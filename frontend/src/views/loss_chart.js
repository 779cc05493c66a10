// The small loss chart of the selected node's branch, as an <svg>.

import { chartModel } from '../chart.js';
import { s } from '../dom.js';

/** The small loss chart as an <svg>. */
export function renderChart(series, { start, end, checkpoints, color, width = 340, height = 130 }) {
  const m = chartModel(series, { width, height, start, end, checkpoints });
  const svg = s('svg', {
    class: 'chart',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': 'Loss of the branch up to this node, with checkpoints',
  });
  if (m.empty) {
    svg.appendChild(s('text', { class: 'chart-empty', x: width / 2, y: height / 2, 'text-anchor': 'middle' }, 'No loss logged yet'));
    return svg;
  }
  const { plot } = m;
  if (m.band) {
    svg.appendChild(
      s('rect', { class: 'band', x: m.band.x0, y: plot.top, width: Math.max(1, m.band.x1 - m.band.x0), height: plot.bottom - plot.top }),
    );
  }
  for (const t of m.yTicks) {
    svg.appendChild(s('line', { class: 'grid', x1: plot.left, x2: plot.right, y1: t.y, y2: t.y }));
    svg.appendChild(s('text', { class: 'tick', x: plot.left - 4, y: t.y + 3, 'text-anchor': 'end' }, t.label));
  }
  svg.appendChild(s('line', { class: 'axis', x1: plot.left, x2: plot.right, y1: plot.bottom, y2: plot.bottom }));
  for (const t of m.xTicks) {
    svg.appendChild(s('text', { class: 'tick', x: t.anchor === 'end' ? plot.right : t.x, y: plot.bottom + 13, 'text-anchor': t.anchor }, t.label));
  }
  for (const c of m.markers) {
    svg.appendChild(
      s(
        'path',
        { class: 'ckpt', d: `M${c.x},${plot.bottom - 7}l-3.5,6h7z` },
        s('title', { text: `checkpoint at step ${c.step}` }),
      ),
    );
  }
  for (const line of m.lines) {
    svg.appendChild(
      s('path', { class: line.dashed ? 'series val' : 'series', d: line.path, stroke: color },
        s('title', { text: line.name })),
    );
    svg.appendChild(s('circle', { class: 'series-end', cx: line.last.x, cy: line.last.y, r: 2.5, fill: color }));
  }
  return svg;
}

