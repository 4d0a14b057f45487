//! Summaries (median, min, max), ratios per run pair, targets, and the four outputs: the text
//! table, JSON, an SVG chart and a Markdown fragment.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::orchestrate::{Options, WorkloadRuns};
use crate::procfs;
use crate::workloads::{Cmp, Metric, Sample, Target, Variant};

#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    fn json(&self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max})
    }
}

/// One implementation's figures for one metric, with its ratios to each baseline.
struct Row {
    metric: &'static Metric,
    variant: &'static Variant,
    values: Vec<f64>,
    summary: Option<Summary>,
    ratios: Vec<Ratio>,
}

struct Ratio {
    baseline: &'static Variant,
    /// variant ÷ baseline, per run pair.
    values: Vec<f64>,
    summary: Option<Summary>,
}

struct TargetResult {
    text: String,
    measured: String,
    met: Option<bool>,
}

struct WorkloadReport {
    id: &'static str,
    title: String,
    params: Value,
    seconds: f64,
    samples: Vec<(&'static Variant, Vec<Sample>)>,
    rows: Vec<Row>,
    targets: Vec<TargetResult>,
}

pub struct Report {
    command: String,
    quick: bool,
    wall_s: f64,
    machine: Vec<(&'static str, String)>,
    workloads: Vec<WorkloadReport>,
}

impl Report {
    pub fn build(runs: &[WorkloadRuns], opts: &Options, wall_s: f64) -> Report {
        let mut command = String::from("cargo run --release -p rxplus-bench --");
        for a in &opts.args {
            command.push(' ');
            command.push_str(a);
        }
        Report {
            command,
            quick: opts.quick,
            wall_s,
            machine: procfs::machine(),
            workloads: runs.iter().map(workload_report).collect(),
        }
    }

    pub fn json(&self) -> Value {
        let workloads: Vec<Value> = self
            .workloads
            .iter()
            .map(|w| {
                let variants: Vec<Value> = w
                    .samples
                    .iter()
                    .map(|(v, s)| json!({"key": v.key, "label": v.label, "samples": s}))
                    .collect();
                let summaries: Vec<Value> = w
                    .rows
                    .iter()
                    .map(|r| {
                        let ratios: Vec<Value> = r
                            .ratios
                            .iter()
                            .map(|q| {
                                json!({
                                    "baseline": q.baseline.key,
                                    "per_run_pair": q.values,
                                    "summary": q.summary.map(|s| s.json()),
                                })
                            })
                            .collect();
                        json!({
                            "metric": r.metric.key,
                            "unit": r.metric.unit,
                            "higher_is_better": r.metric.higher_is_better,
                            "variant": r.variant.key,
                            "values": r.values,
                            "summary": r.summary.map(|s| s.json()),
                            "ratios": ratios,
                        })
                    })
                    .collect();
                let targets: Vec<Value> = w
                    .targets
                    .iter()
                    .map(|t| json!({"target": t.text, "measured": t.measured, "met": t.met}))
                    .collect();
                json!({
                    "id": w.id,
                    "title": w.title,
                    "params": w.params,
                    "seconds": w.seconds,
                    "variants": variants,
                    "summaries": summaries,
                    "targets": targets,
                })
            })
            .collect();
        let machine: serde_json::Map<String, Value> = self
            .machine
            .iter()
            .map(|(k, v)| ((*k).to_string(), json!(v)))
            .collect();
        json!({
            "command": self.command,
            "quick": self.quick,
            "wall_seconds": self.wall_s,
            "machine": machine,
            "workloads": workloads,
        })
    }

    /// Table rows shared by the text and Markdown renderings.
    fn table(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for w in &self.workloads {
            let mut first_of_workload = true;
            for r in &w.rows {
                let wl = if first_of_workload { w.id } else { "" };
                first_of_workload = false;
                let metric = format!("{} ({})", r.metric.label, r.metric.unit);
                let vals = match r.summary {
                    Some(s) => [s.median, s.min, s.max].map(|x| fmt_value(x, r.metric.decimals)),
                    None => [(); 3].map(|()| "–".to_string()),
                };
                let mut line = vec![wl.to_string(), metric, r.variant.label.to_string()];
                line.extend(vals);
                if r.ratios.is_empty() {
                    line.extend([(); 4].map(|()| String::new()));
                    out.push(std::mem::take(&mut line));
                }
                for (i, q) in r.ratios.iter().enumerate() {
                    if i > 0 {
                        line = vec![String::new(); 6];
                    }
                    line.push(q.baseline.label.to_string());
                    match q.summary {
                        Some(s) => line.extend([s.median, s.min, s.max].map(fmt_ratio)),
                        None => line.extend([(); 3].map(|()| "–".to_string())),
                    }
                    out.push(std::mem::take(&mut line));
                }
            }
        }
        out
    }

    pub fn text(&self) -> String {
        let header = [
            "workload",
            "metric",
            "implementation",
            "median",
            "min",
            "max",
            "ratio to",
            "ratio median",
            "min",
            "max",
        ];
        let rows = self.table();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let numeric = |i: usize| matches!(i, 3..=5 | 7..=9);
        let render = |cells: &[String]| -> String {
            let mut line = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                let pad = w - c.chars().count();
                if numeric(i) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.push_str(&" ".repeat(pad));
                }
                line.push_str("  ");
            }
            line.trim_end().to_string() + "\n"
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nrxplus-bench{} — {:.0} s",
            if self.quick { " --quick" } else { "" },
            self.wall_s
        );
        for w in &self.workloads {
            let _ = writeln!(out, "  {}: {}", w.id, w.title);
        }
        out.push('\n');
        out.push_str(&render(&header.map(str::to_string)));
        let mut last_wl = String::new();
        for r in &rows {
            if !r[0].is_empty() && !last_wl.is_empty() {
                out.push('\n');
            }
            if !r[0].is_empty() {
                last_wl.clone_from(&r[0]);
            }
            out.push_str(&render(r));
        }
        out.push_str(
            "\nratio = implementation ÷ baseline, per run pair (run i with run i), then median, \
             min, max.\n\ntargets (on medians):\n",
        );
        for w in &self.workloads {
            for t in &w.targets {
                let _ = writeln!(
                    out,
                    "  [{}] {} {}: {}",
                    met_word(t.met),
                    w.id,
                    t.text,
                    t.measured
                );
            }
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("## rxplus vs raw tungstenite vs tokio-tungstenite\n\n");
        let _ = writeln!(out, "Command: `{}`  ", self.command);
        let _ = writeln!(out, "Wall time: {:.0} s  ", self.wall_s);
        let machine: Vec<String> = self
            .machine
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(out, "Machine: {}\n", machine.join("; "));
        for w in &self.workloads {
            let _ = writeln!(out, "* **{}**: {}", w.id, w.title);
        }
        out.push_str(
            "\n| workload | metric | implementation | median | min | max | ratio to | ratio \
             median | ratio min | ratio max |\n|---|---|---|--:|--:|--:|---|--:|--:|--:|\n",
        );
        for r in self.table() {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
        out.push_str(
            "\nRatio = implementation ÷ baseline, computed per run pair (run i of each, the \
             runs interleaved), then median, min and max over the pairs. Lower is better for \
             µs, MiB, KiB, threads, fds and ms.\n\n### Targets (medians)\n\n| workload | target | \
             measured | met |\n|---|---|---|---|\n",
        );
        for w in &self.workloads {
            for t in &w.targets {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    w.id,
                    t.text,
                    t.measured,
                    met_word(t.met)
                );
            }
        }
        out
    }

    /// Median ratios to raw tungstenite, oriented so higher is better, on a log₂ scale around 1.
    pub fn svg(&self) -> String {
        struct Group {
            label: [String; 3],
            bars: Vec<(&'static Variant, f64)>,
        }
        let mut groups = Vec::new();
        for w in &self.workloads {
            for m in w
                .rows
                .iter()
                .map(|r| r.metric)
                .fold(Vec::new(), |mut v, m| {
                    if !v.iter().any(|x: &&Metric| x.key == m.key) {
                        v.push(m);
                    }
                    v
                })
            {
                for b in m.baselines {
                    let bars: Vec<(&'static Variant, f64)> = w
                        .rows
                        .iter()
                        .filter(|r| r.metric.key == m.key)
                        .filter_map(|r| {
                            let s = r.ratios.iter().find(|q| q.baseline.key == *b)?.summary?;
                            let x = if m.higher_is_better {
                                s.median
                            } else {
                                1.0 / s.median
                            };
                            x.is_finite().then_some((r.variant, x))
                        })
                        .collect();
                    if bars.is_empty() {
                        continue;
                    }
                    let third = if m.baselines.len() > 1 {
                        format!("vs {b}")
                    } else {
                        format!("({})", m.unit)
                    };
                    groups.push(Group {
                        label: [w.id.to_string(), m.label.to_string(), third],
                        bars,
                    });
                }
            }
        }
        const LEFT: f64 = 60.0;
        const TOP: f64 = 80.0;
        const PLOT_H: f64 = 300.0;
        const GROUP_W: f64 = 124.0;
        const SPAN: f64 = 4.0; // log₂ range each side of 1.0: 1/16 … 16
        let width = (LEFT + GROUP_W * groups.len().max(1) as f64 + 20.0).max(920.0);
        let height = TOP + PLOT_H + 80.0;
        let y = |v: f64| TOP + (SPAN - v.log2().clamp(-SPAN, SPAN)) / (2.0 * SPAN) * PLOT_H;
        let color = |key: &str| match key {
            "rxplus" => "#1f6fb4",
            "rxplus-blocking" => "#7fb2e0",
            "tokio" => "#ef8a17",
            _ => "#888888",
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(
            s,
            r#"<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="14" font-weight="bold">rxplus and tokio-tungstenite relative to raw tungstenite (median ratio per run pair; higher = better)</text>
<text x="{LEFT}" y="40">Throughput: impl ÷ raw. Latency, memory, threads, time: inverted (raw ÷ impl). Log scale; bars clipped at 1/16 and 16.</text>"#
        );
        // Legend: every variant that has a bar, rxplus first.
        let mut seen: Vec<&Variant> = Vec::new();
        for g in &groups {
            for (v, _) in &g.bars {
                if !seen.iter().any(|x| x.key == v.key) {
                    seen.push(v);
                }
            }
        }
        seen.sort_by_key(|v| (!v.key.starts_with("rxplus"), v.key));
        let mut lx = LEFT;
        for v in &seen {
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="52" width="12" height="12" fill="{}"/><text x="{}" y="62">{}</text>"#,
                color(v.key),
                lx + 16.0,
                xml(v.label)
            );
            lx += 30.0 + 6.5 * v.label.len() as f64;
        }
        for k in -4i32..=4 {
            let v = 2f64.powi(k);
            let yy = y(v);
            let label = if k >= 0 {
                format!("{}", 1 << k)
            } else {
                format!("1/{}", 1 << -k)
            };
            let (stroke, w) = if k == 0 { ("#000", 1.5) } else { ("#ddd", 1.0) };
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" x2="{:.0}" y1="{yy:.1}" y2="{yy:.1}" stroke="{stroke}" stroke-width="{w}"/><text x="{:.0}" y="{:.1}" text-anchor="end">{label}×</text>"#,
                width - 20.0,
                LEFT - 6.0,
                yy + 4.0
            );
        }
        for (gi, g) in groups.iter().enumerate() {
            let gx = LEFT + GROUP_W * gi as f64;
            let bar_w = (GROUP_W - 24.0) / g.bars.len() as f64;
            for (bi, (v, x)) in g.bars.iter().enumerate() {
                let bx = gx + 12.0 + bar_w * bi as f64;
                let (y0, y1) = (y(1.0), y(*x));
                let (top, h) = (y0.min(y1), (y0 - y1).abs().max(1.0));
                let ty = if *x >= 1.0 { top - 4.0 } else { top + h + 12.0 };
                let _ = writeln!(
                    s,
                    r#"<rect x="{bx:.1}" y="{top:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {x:.2}</title></rect><text x="{:.1}" y="{ty:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                    bar_w - 3.0,
                    color(v.key),
                    xml(v.label),
                    bx + (bar_w - 3.0) / 2.0,
                    fmt_sig(*x, 2)
                );
            }
            for (li, line) in g.label.iter().enumerate() {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    gx + GROUP_W / 2.0,
                    TOP + PLOT_H + 22.0 + 14.0 * li as f64,
                    xml(line)
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

fn workload_report(runs: &WorkloadRuns) -> WorkloadReport {
    let wl = runs.workload;
    let variants = wl.variants();
    let mut rows = Vec::new();
    for m in wl.metrics() {
        for (v, vr) in variants.iter().zip(&runs.variants) {
            let values: Vec<f64> = vr
                .samples
                .iter()
                .filter_map(|s| s.get(m.key).copied())
                .collect();
            // Raw rows are the baselines; a ratio to rxplus itself is only for rxplus' own
            // variants (telemetry on against off).
            let ratios = if v.key.starts_with("raw") {
                Vec::new()
            } else {
                m.baselines
                    .iter()
                    .filter(|b| {
                        **b != v.key && (!b.starts_with("rxplus") || v.key.starts_with("rxplus"))
                    })
                    .filter_map(|b| {
                        let bi = variants.iter().position(|x| x.key == *b)?;
                        let values: Vec<f64> = vr
                            .samples
                            .iter()
                            .zip(&runs.variants[bi].samples)
                            .filter_map(|(a, b)| Some(a.get(m.key)? / b.get(m.key)?))
                            .collect();
                        Some(Ratio {
                            baseline: &variants[bi],
                            summary: Summary::of(&values),
                            values,
                        })
                    })
                    .collect()
            };
            rows.push(Row {
                metric: m,
                variant: v,
                summary: Summary::of(&values),
                values,
                ratios,
            });
        }
    }
    let targets = wl.targets().iter().map(|t| check(t, &rows)).collect();
    WorkloadReport {
        id: wl.id(),
        title: wl.title(&runs.params),
        params: runs.params.clone(),
        seconds: runs.seconds,
        samples: variants
            .iter()
            .zip(&runs.variants)
            .map(|(v, r)| (v, r.samples.clone()))
            .collect(),
        rows,
        targets,
    }
}

fn find<'a>(rows: &'a [Row], variant: &str, metric: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.variant.key == variant && r.metric.key == metric)
}

fn holds(cmp: Cmp, x: f64, bound: f64) -> bool {
    match cmp {
        Cmp::AtLeast => x >= bound,
        Cmp::AtMost => x <= bound,
        Cmp::Below => x < bound,
    }
}

fn symbol(cmp: Cmp) -> &'static str {
    match cmp {
        Cmp::AtLeast => "≥",
        Cmp::AtMost => "≤",
        Cmp::Below => "<",
    }
}

/// Evaluates a target from the measured medians.
fn check(t: &Target, rows: &[Row]) -> TargetResult {
    let label = |key: &str| {
        rows.iter()
            .find(|r| r.variant.key == key)
            .map_or(key.to_string(), |r| r.variant.label.to_string())
    };
    let metric_label = |key: &str| {
        rows.iter()
            .find(|r| r.metric.key == key)
            .map_or(key.to_string(), |r| r.metric.label.to_string())
    };
    match *t {
        Target::Ratio {
            variant,
            metric,
            baseline,
            cmp,
            bound,
        } => {
            let s = find(rows, variant, metric).and_then(|r| {
                r.ratios
                    .iter()
                    .find(|q| q.baseline.key == baseline)?
                    .summary
            });
            TargetResult {
                text: format!(
                    "{} {} {} {bound}× {}",
                    label(variant),
                    metric_label(metric),
                    symbol(cmp),
                    label(baseline)
                ),
                measured: s.map_or("no data".into(), |s| {
                    format!(
                        "{}× (min {}, max {})",
                        fmt_ratio(s.median),
                        fmt_ratio(s.min),
                        fmt_ratio(s.max)
                    )
                }),
                met: s.map(|s| holds(cmp, s.median, bound)),
            }
        }
        Target::Value {
            variant,
            metric,
            cmp,
            bound,
        } => {
            let r = find(rows, variant, metric);
            let s = r.and_then(|r| r.summary);
            let (unit, dec) = r.map_or(("", 1), |r| (r.metric.unit, r.metric.decimals));
            TargetResult {
                text: format!(
                    "{} {} {} {} {unit}",
                    label(variant),
                    metric_label(metric),
                    symbol(cmp),
                    fmt_bound(bound)
                ),
                measured: s.map_or("no data".into(), |s| {
                    format!("{} {unit}", fmt_value(s.median, dec))
                }),
                met: s.map(|s| holds(cmp, s.median, bound)),
            }
        }
        Target::Versus {
            variant,
            metric,
            other,
            cmp,
        } => {
            let a = find(rows, variant, metric);
            let b = find(rows, other, metric).and_then(|r| r.summary);
            let (unit, dec) = a.map_or(("", 1), |r| (r.metric.unit, r.metric.decimals));
            let both = a.and_then(|r| r.summary).zip(b);
            TargetResult {
                text: format!(
                    "{} {} {} {}'s",
                    label(variant),
                    metric_label(metric),
                    symbol(cmp),
                    label(other)
                ),
                measured: both.map_or("no data".into(), |(a, b)| {
                    format!(
                        "{} vs {} {unit}",
                        fmt_value(a.median, dec),
                        fmt_value(b.median, dec)
                    )
                }),
                met: both.map(|(a, b)| holds(cmp, a.median, b.median)),
            }
        }
    }
}

fn met_word(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "no data",
    }
}

/// `decimals` places, thousands separated by commas.
pub fn fmt_value(x: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if x < 0.0 { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// A target's bound as written in the issue: grouped when whole (2,000), as is otherwise (1.2).
fn fmt_bound(x: f64) -> String {
    if x.fract() == 0.0 {
        fmt_value(x, 0)
    } else {
        x.to_string()
    }
}

/// Three significant digits at most, so tiny ratios (e.g. tokio's threads) stay readable.
fn fmt_ratio(x: f64) -> String {
    fmt_sig(x, 3)
}

/// `digits` significant digits (no more than the integer part needs for large values).
fn fmt_sig(x: f64, digits: i32) -> String {
    if !x.is_finite() || x == 0.0 {
        return format!("{x:.0}");
    }
    let decimals = (digits - 1 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{x:.decimals$}")
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
