//! The pictures `cargo xtask bench` draws under `target/bench/`: the distribution of P2's
//! convergence times, and how P2's latency and chord's hops scale with N.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::Result;

type Failure = Box<dyn std::error::Error>;

/// `N` from a scenario name such as "sync-P2 N=16" or "chord-P9-hops, N=64 simulated".
fn n_of(scenario: &str) -> Option<f64> {
    let rest = &scenario[scenario.find("N=")? + 2..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// Draws every picture the results allow; returns the files written.
pub(crate) fn draw(results: &[Result], out: &Path) -> Vec<PathBuf> {
    let mut written = Vec::new();
    for (name, f) in [
        (
            "convergence.svg",
            convergence as fn(&[Result], &Path) -> std::result::Result<bool, Failure>,
        ),
        ("scaling.svg", scaling),
        ("chord-hops.svg", hops),
    ] {
        let path = out.join(name);
        match f(results, &path) {
            Ok(true) => written.push(path),
            Ok(false) => {}
            Err(e) => eprintln!("could not draw {}: {e}", path.display()),
        }
    }
    written
}

/// The cumulative distribution of P2's convergence times, one line per N.
fn convergence(results: &[Result], path: &Path) -> std::result::Result<bool, Failure> {
    let series: Vec<(String, Vec<f64>)> = results
        .iter()
        .filter(|r| r.scenario.starts_with("sync-P2 N=") && !r.samples.is_empty())
        .map(|r| (r.scenario.clone(), sorted(&r.samples)))
        .collect();
    if series.is_empty() {
        return Ok(false);
    }
    let xmax = series
        .iter()
        .filter_map(|(_, s)| s.last())
        .fold(0.0f64, |a, &b| a.max(b))
        * 1.05;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "sync-P2: time until every node applied a write",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..xmax, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds")
        .y_desc("fraction of writes")
        .draw()?;
    for (i, (name, s)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let n = s.len() as f64;
        chart
            .draw_series(LineSeries::new(
                s.iter().enumerate().map(|(j, &x)| (x, (j + 1) as f64 / n)),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(true)
}

/// P2's median and p99 against N.
fn scaling(results: &[Result], path: &Path) -> std::result::Result<bool, Failure> {
    let mut points: Vec<(f64, f64, f64)> = results
        .iter()
        .filter(|r| r.scenario.starts_with("sync-P2 N=") && !r.samples.is_empty())
        .filter_map(|r| {
            let (p50, p99, _, _) = r.stats();
            Some((n_of(&r.scenario)?, p50, p99))
        })
        .collect();
    if points.len() < 2 {
        return Ok(false);
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let xmax = points.last().map_or(1.0, |p| p.0) * 1.1;
    let ymax = points.iter().fold(0.0f64, |a, p| a.max(p.2)) * 1.2;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("sync-P2 convergence against N", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("nodes")
        .y_desc("milliseconds")
        .draw()?;
    for (i, (label, pick)) in [("median", 1usize), ("p99", 2)].into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let data: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.0, if pick == 1 { p.1 } else { p.2 }))
            .collect();
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(data.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(true)
}

/// Chord's mean and maximum hops against N (simulated rings), with log₂ N for reference.
fn hops(results: &[Result], path: &Path) -> std::result::Result<bool, Failure> {
    let mut points: Vec<(f64, f64, f64)> = results
        .iter()
        .filter(|r| r.scenario.starts_with("chord-P9-hops") && !r.samples.is_empty())
        .filter_map(|r| {
            let mean = r.samples.iter().sum::<f64>() / r.samples.len() as f64;
            let max = r.samples.iter().fold(0.0f64, |a, &b| a.max(b));
            Some((n_of(&r.scenario)?, mean, max))
        })
        .collect();
    if points.len() < 2 {
        return Ok(false);
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let xmax = points.last().map_or(2.0, |p| p.0.log2()) + 0.5;
    let ymax = points
        .iter()
        .fold(0.0f64, |a, p| a.max(p.2).max(p.0.log2()))
        + 1.0;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "chord-P9: hops per lookup against N (simulated)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("log2 N")
        .y_desc("hops")
        .draw()?;
    type Pick = fn(&(f64, f64, f64)) -> f64;
    let lines: [(&str, Pick); 3] = [
        ("mean hops", |p| p.1),
        ("max hops", |p| p.2),
        ("log2 N", |p| p.0.log2()),
    ];
    for (i, (label, f)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let data: Vec<(f64, f64)> = points.iter().map(|p| (p.0.log2(), f(p))).collect();
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(data.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(true)
}
