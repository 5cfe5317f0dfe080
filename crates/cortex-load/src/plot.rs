//! A hand-written SVG of latency by percentile, laid out like HdrHistogram plots:
//! the x axis is `log10(1 / (1 - p))`, so 90%, 99%, 99.9% and 99.99% are evenly
//! spaced and the tail gets the room it deserves.

use std::fmt::Write as _;

use super::summary::{Mode, Summary};

const W: f64 = 900.0;
const H: f64 = 560.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 70.0;
/// Decades on the x axis: 0% to 99.99%.
const DECADES: f64 = 4.0;

/// Position on the x axis (in decades) of a percentile.
fn decades(percentile: f64) -> f64 {
    let tail = (1.0 - percentile / 100.0).max(1e-12);
    (-tail.log10()).clamp(0.0, DECADES)
}

/// A "nice" axis step (1, 2 or 5 times a power of ten) giving about `target` ticks.
fn nice_step(max: f64, target: f64) -> f64 {
    let raw = (max / target).max(1e-9);
    let pow = 10f64.powf(raw.log10().floor());
    let m = raw / pow;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * pow
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The SVG document for a summary.
pub(crate) fn percentile_svg(s: &Summary) -> String {
    let points: Vec<(f64, f64)> = s
        .percentiles
        .iter()
        .filter(|p| p.percentile < 100.0 && decades(p.percentile) <= DECADES)
        .map(|p| (decades(p.percentile), p.latency_ms))
        .collect();
    let ymax_data = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3);
    let step = nice_step(ymax_data, 6.0);
    // 8% headroom so the top of the curve and its labels stay off the frame.
    let ymax = (ymax_data * 1.08 / step).ceil().max(1.0) * step;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |d: f64| LEFT + d / DECADES * pw;
    let y = |v: f64| TOP + ph - v / ymax * ph;

    let mut o = String::with_capacity(16 * 1024);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="18" font-weight="bold">Latency by percentile</text>"#,
        W / 2.0
    );
    let mode = match (s.mode, s.target_rate) {
        (Mode::Open, Some(r)) => format!("open loop at {r} req/s"),
        _ => "closed loop".to_owned(),
    };
    let _ = writeln!(
        o,
        r##"<text x="{}" y="50" text-anchor="middle" fill="#444">{} requests, {} users, {mode}, {:.0} req/s achieved; p50 {} ms, p99 {} ms, max {} ms</text>"##,
        W / 2.0,
        s.total,
        s.users,
        s.requests_per_sec,
        fmt_ms(s.latency.p50_ms),
        fmt_ms(s.latency.p99_ms),
        fmt_ms(s.latency.max_ms)
    );

    // Horizontal grid and y labels, with as many decimals as the step needs.
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let mut v = 0.0;
    while v <= ymax + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" text-anchor="end">{v:.decimals$}</text>"##,
            LEFT + pw,
            LEFT - 8.0,
            yy + 4.0,
        );
        v += step;
    }
    // Vertical grid and x labels at 0%, 90%, 99%, 99.9%, 99.99%.
    for (d, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
    ] {
        let xx = x(d);
        let _ = writeln!(
            o,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{}" stroke="#e0e0e0"/><text x="{xx:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            TOP + ph,
            TOP + ph + 20.0
        );
    }
    // Axes.
    let _ = writeln!(
        o,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="#000"/><line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#000"/>"##,
        b = TOP + ph,
        r = LEFT + pw
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">Percentile (log scale of 1/(1-p))</text>"#,
        LEFT + pw / 2.0,
        H - 22.0
    );
    let _ = writeln!(
        o,
        r#"<text x="22" y="{}" text-anchor="middle" transform="rotate(-90 22 {})">Latency (ms)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // The curve, drawn as steps: a percentile's value holds until the next one.
    if !points.is_empty() {
        let mut path = String::with_capacity(points.len() * 24);
        for (i, &(d, v)) in points.iter().enumerate() {
            if i == 0 {
                let _ = write!(path, "M{:.1},{:.1}", x(d), y(v));
            } else {
                let _ = write!(path, " H{:.1} V{:.1}", x(d), y(v));
            }
        }
        let _ = writeln!(
            o,
            r##"<path d="{path}" fill="none" stroke="#1f6fd1" stroke-width="2"/>"##
        );
    }
    // Markers for the reported percentiles.
    let l = &s.latency;
    for (p, v, name) in [
        (50.0, l.p50_ms, "p50"),
        (90.0, l.p90_ms, "p90"),
        (99.0, l.p99_ms, "p99"),
        (99.9, l.p999_ms, "p99.9"),
    ] {
        if s.total == 0 {
            break;
        }
        let (xx, yy) = (x(decades(p)), y(v.min(ymax)));
        let _ = writeln!(
            o,
            r##"<circle cx="{xx:.1}" cy="{yy:.1}" r="4" fill="#d14b1f"/><text x="{:.1}" y="{:.1}" fill="#d14b1f" stroke="white" stroke-width="4" paint-order="stroke">{name} {} ms</text>"##,
            xx - 4.0,
            (yy - 10.0).max(TOP + 12.0),
            fmt_ms(v)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(1000.0, 6.0), 200.0);
        assert!((decades(99.0) - 2.0).abs() < 1e-9);
    }
}
