// What a finished job shows: downloads, the before/after table and the spectrum plot.

import uPlot from "./vendor/uPlot.esm.js";

const FORMAT_NAMES = {
  wav16: "WAV 16-bit",
  wav24: "WAV 24-bit",
  flac: "FLAC",
  mp3: "MP3",
  preview_target: "Preview A: original (30 s MP3)",
  preview_result: "Preview B: mastered (30 s MP3)",
};

// Each line differs in colour and in dash, so the plot reads without colour too.
const SPECTRUM_SERIES = [
  { key: "target", label: "Target", stroke: "#1f5fa8", dash: undefined, width: 2 },
  { key: "reference", label: "Reference", stroke: "#2e7d32", dash: [8, 5], width: 2 },
  { key: "result", label: "Result", stroke: "#c62828", dash: [2, 3], width: 2.5 },
];

function number(value, digits = 1) {
  return typeof value === "number" && Number.isFinite(value)
    ? value.toFixed(digits).replace("-", "−")
    : "—";
}

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function bytes(size) {
  if (typeof size !== "number") return "";
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(0)} KB`;
  return `${(size / 1024 / 1024).toFixed(1)} MB`;
}

/** One link per result file: the presigned URL, in a new tab so this page keeps its state. */
export function renderDownloads(list, results) {
  list.replaceChildren();
  for (const [format, file] of Object.entries(results || {})) {
    const item = element("li");
    const link = element("a", FORMAT_NAMES[format] ?? format, {
      href: file.url,
      target: "_blank",
      rel: "noopener noreferrer",
      "data-format": format,
    });
    item.append(link);
    const facts = [bytes(file.size)];
    if (typeof file.lufs === "number") facts.push(`${number(file.lufs)} LUFS`);
    if (typeof file.true_peak_dbtp === "number") facts.push(`${number(file.true_peak_dbtp)} dBTP`);
    item.append(` ${facts.filter(Boolean).join(", ")}`);
    list.append(item);
  }
  return list.children.length;
}

/**
 * Rows of the before/after table: from `analysis` when the service sends it, else from
 * the job's `metrics` (loudness for all, true peak for the result only).
 */
export function loudnessRows(job, referenceName = "Reference") {
  const names = { target: "Target", reference: referenceName, result: "Result" };
  const analysis = job.analysis;
  if (analysis && analysis.target) {
    return {
      source: "analysis",
      rows: SPECTRUM_SERIES.filter((series) => analysis[series.key]).map((series) => {
        const measured = analysis[series.key];
        return {
          name: names[series.key],
          lufs: measured.lufs,
          lra: measured.loudness_range_lu,
          truePeak: measured.true_peak_dbtp,
          samplePeak: measured.sample_peak_dbfs,
        };
      }),
    };
  }
  const metrics = job.metrics || {};
  const rows = [{ name: "Target", lufs: metrics.target_lufs }];
  if (typeof metrics.reference_lufs === "number") {
    rows.push({ name: referenceName, lufs: metrics.reference_lufs });
  }
  if (typeof metrics.result_lufs === "number") {
    rows.push({ name: "Result", lufs: metrics.result_lufs, truePeak: metrics.result_true_peak_dbtp });
  }
  return { source: "metrics", rows };
}

export function renderLoudness(table, caption, job, referenceName) {
  const { source, rows } = loudnessRows(job, referenceName);
  caption.textContent =
    source === "analysis"
      ? "Measured by the service (EBU R128 loudness and range, BS.1770 true peak)."
      : "From the job's metrics: this service sends no full analysis.";
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const row of rows) {
    const tr = element("tr");
    tr.append(element("th", row.name, { scope: "row" }));
    for (const value of [row.lufs, row.lra, row.truePeak, row.samplePeak]) {
      tr.append(element("td", number(value)));
    }
    body.append(tr);
  }
  return rows.length;
}

function formatHz(hz) {
  if (hz >= 1000) return `${+(hz / 1000).toFixed(1)}k`;
  return `${+hz.toFixed(0)}`;
}

/** The series the analysis can plot: those whose band count matches the centres. */
export function spectrumSeries(analysis) {
  const centres = analysis && analysis.band_centres_hz;
  if (!Array.isArray(centres) || centres.length === 0) return null;
  const series = SPECTRUM_SERIES.filter((line) => {
    const bands = analysis[line.key] && analysis[line.key].bands_db;
    return Array.isArray(bands) && bands.length === centres.length;
  });
  return series.length ? { centres, series } : null;
}

export class SpectrumPlot {
  constructor(doc) {
    this.container = doc.getElementById("spectrum");
    this.empty = doc.getElementById("spectrum-empty");
    this.details = doc.getElementById("spectrum-details");
    this.table = doc.getElementById("spectrum-table");
    this.plot = null;
    window.addEventListener("resize", () => {
      if (this.plot) this.plot.setSize({ width: this.#width(), height: this.plot.height });
    });
  }

  clear() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.container.replaceChildren();
    this.empty.hidden = true;
    this.details.hidden = true;
  }

  /** Draw the analysis' spectrum; says so instead when there is none. */
  render(analysis, referenceName = "Reference") {
    this.clear();
    const plottable = spectrumSeries(analysis);
    if (!plottable) {
      this.empty.hidden = false;
      return false;
    }
    const { centres } = plottable;
    const series = plottable.series.map((line) =>
      line.key === "reference" ? { ...line, label: referenceName } : line,
    );
    const options = {
      width: this.#width(),
      height: 320,
      scales: {
        // The audible range, whatever the bands: log scales otherwise round out to decades.
        x: {
          time: false,
          distr: 3,
          log: 10,
          range: () => [Math.min(20, centres[0]), Math.max(20000, centres[centres.length - 1])],
        },
        y: { auto: true },
      },
      axes: [
        {
          label: "Frequency (Hz)",
          // Every decade's 1, 2 and 5 are labelled; the other ticks stay bare.
          values: (plot, splits) =>
            splits.map((hz) => {
              const lead = Math.round(hz / 10 ** Math.floor(Math.log10(hz)));
              return [1, 2, 5].includes(lead) ? formatHz(hz) : "";
            }),
        },
        { label: "Level (dB)" },
      ],
      series: [
        { label: "Band", value: (plot, hz) => (hz == null ? "—" : `${formatHz(hz)} Hz`) },
        ...series.map((line) => ({
          label: line.label,
          stroke: line.stroke,
          width: line.width,
          dash: line.dash,
          value: (plot, db) => (db == null ? "—" : `${number(db)} dB`),
        })),
      ],
    };
    const data = [centres, ...series.map((line) => analysis[line.key].bands_db)];
    this.plot = new uPlot(options, data, this.container);
    this.#fillTable(centres, series, analysis);
    return true;
  }

  #width() {
    return Math.max(320, Math.min(this.container.clientWidth || 720, 960));
  }

  #fillTable(centres, series, analysis) {
    const head = element("tr");
    head.append(element("th", "Band (Hz)", { scope: "col" }));
    for (const line of series) head.append(element("th", `${line.label} (dB)`, { scope: "col" }));
    this.table.tHead.replaceChildren(head);
    const body = this.table.tBodies[0];
    body.replaceChildren();
    centres.forEach((hz, index) => {
      const row = element("tr");
      row.append(element("th", formatHz(hz), { scope: "row" }));
      for (const line of series) row.append(element("td", number(analysis[line.key].bands_db[index])));
      body.append(row);
    });
    this.details.hidden = false;
  }
}
