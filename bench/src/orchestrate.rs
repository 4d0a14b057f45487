//! The orchestrator: runs every workload's variants interleaved (A, B, C, A, B, C, …) so slow
//! drifts of the machine hit every implementation alike, then hands the samples to the report.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::report::{self, fmt_value};
use crate::workloads::{self, Ctx, Sample, Workload};

#[derive(Debug, Default)]
pub struct Options {
    pub quick: bool,
    pub json: Option<String>,
    pub svg: Option<String>,
    pub markdown: Option<String>,
    pub only: Option<Vec<String>>,
    /// The arguments as given, for the reports.
    pub args: Vec<String>,
}

pub const USAGE: &str = "\
usage: cargo run --release -p rxplus-bench -- [--quick] [--json FILE] [--svg FILE] [--markdown FILE] [--only w1,w3]

  --quick          smaller message counts and fewer runs (about a minute)
  --json FILE      every sample, summary, ratio and target as JSON
  --svg FILE       bar chart of the median ratios to raw tungstenite
  --markdown FILE  the table, targets, machine and command as Markdown
  --only LIST      run only these workloads (comma-separated ids), for development";

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            args: args.to_vec(),
            ..Options::default()
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value\n{USAGE}"))
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--json" => o.json = Some(value(a)?),
                "--svg" => o.svg = Some(value(a)?),
                "--markdown" => o.markdown = Some(value(a)?),
                "--only" => {
                    let list: Vec<String> = value(a)?.split(',').map(str::to_string).collect();
                    for id in &list {
                        workloads::find(id)?;
                    }
                    o.only = Some(list);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(o)
    }
}

/// The samples of one variant, in run order (run i of every variant form a run pair).
pub struct VariantRuns {
    pub samples: Vec<Sample>,
}

pub struct WorkloadRuns {
    pub workload: &'static dyn Workload,
    pub params: Value,
    /// Same order as `workload.variants()`.
    pub variants: Vec<VariantRuns>,
    pub seconds: f64,
}

pub fn run(opts: Options) -> Result<()> {
    let ctx = Ctx {
        exe: std::env::current_exe().context("cannot find the benchmark's own executable")?,
        quick: opts.quick,
    };
    let started = Instant::now();
    let results: Result<Vec<WorkloadRuns>> = workloads::all()
        .into_iter()
        .filter(|wl| {
            let id = wl.id();
            opts.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == id))
        })
        .map(|wl| run_workload(&ctx, wl))
        .collect();
    // The TLS workloads' certificate files, if they were made.
    crate::peers::tls::remove_pki_files();
    let results = results?;
    let wall = started.elapsed().as_secs_f64();
    eprintln!("all workloads done in {wall:.1} s");
    let report = report::Report::build(&results, &opts, wall);
    print!("{}", report.text());
    if let Some(path) = &opts.json {
        write(path, &serde_json::to_string_pretty(&report.json())?)?;
    }
    if let Some(path) = &opts.svg {
        write(path, &report.svg())?;
    }
    if let Some(path) = &opts.markdown {
        write(path, &report.markdown())?;
    }
    Ok(())
}

fn write(path: &str, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {path}"))?;
    eprintln!("wrote {path}");
    Ok(())
}

fn run_workload(ctx: &Ctx, wl: &'static dyn Workload) -> Result<WorkloadRuns> {
    let params = wl.params(ctx.quick);
    let runs = wl.runs(ctx.quick);
    eprintln!("== {}: {} ({runs} runs)", wl.id(), wl.title(&params));
    let started = Instant::now();
    let mut variants: Vec<VariantRuns> = wl
        .variants()
        .iter()
        .map(|_| VariantRuns {
            samples: Vec::with_capacity(runs),
        })
        .collect();
    for run in 1..=runs {
        for (v, out) in wl.variants().iter().zip(&mut variants) {
            let t = Instant::now();
            let sample = wl
                .run_once(ctx, v, &params)
                .with_context(|| format!("{} {} run {run}", wl.id(), v.key))?;
            let figures: Vec<String> = wl
                .metrics()
                .iter()
                .filter_map(|m| {
                    let x = sample.get(m.key)?;
                    Some(format!(
                        "{} {} {}",
                        m.label,
                        fmt_value(*x, m.decimals),
                        m.unit
                    ))
                })
                .collect();
            eprintln!(
                "[{} {run}/{runs}] {:<36} {} ({:.1} s)",
                wl.id(),
                v.label,
                figures.join(", "),
                t.elapsed().as_secs_f64()
            );
            out.samples.push(sample);
        }
    }
    Ok(WorkloadRuns {
        workload: wl,
        params,
        variants,
        seconds: started.elapsed().as_secs_f64(),
    })
}
