#!/usr/bin/env python3
"""Fits time per row against chain depth from criterion's `depth` estimates
and draws docs/depth.svg (hand-written SVG, no plotting library needed).

Run after `cargo bench --bench depth`. Prints the fitted fixed and
per-stage cost (ns/row) for the static chain and for boxed stages."""

import json
import pathlib

ROWS = 1 << 18
ROOT = pathlib.Path(__file__).resolve().parent.parent
CRIT = ROOT / "target" / "criterion" / "depth"
DEPTHS = [1, 2, 4, 8, 16, 32]


def load(kind):
    pts = []
    for d in DEPTHS:
        est = CRIT / kind / str(d) / "new" / "estimates.json"
        if est.exists():
            ns = json.loads(est.read_text())["median"]["point_estimate"]
            pts.append((d, ns / ROWS))
    return pts


def fit(pts):
    n = len(pts)
    sx = sum(x for x, _ in pts)
    sy = sum(y for _, y in pts)
    sxx = sum(x * x for x, _ in pts)
    sxy = sum(x * y for x, y in pts)
    slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    return (sy - slope * sx) / n, slope


def main():
    series = {k: load(k) for k in ("static", "boxed")}
    w, h, pad = 640, 400, 60
    ymax = max((y for pts in series.values() for _, y in pts), default=1.0) * 1.1
    sx = lambda d: pad + (w - 2 * pad) * d / 32
    sy = lambda v: h - pad - (h - 2 * pad) * v / ymax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="black"/>',
           f'<text x="{w/2}" y="{h-20}" text-anchor="middle">stages in the chain</text>',
           f'<text x="15" y="{h/2}" transform="rotate(-90 15 {h/2})" text-anchor="middle">ns per row</text>']
    for d in DEPTHS:
        out.append(f'<text x="{sx(d)}" y="{h-pad+16}" text-anchor="middle">{d}</text>')
    for i in range(5):
        v = ymax * i / 4
        out.append(f'<text x="{pad-6}" y="{sy(v)+4}" text-anchor="end">{v:.1f}</text>')
    colors = {"static": "#1f77b4", "boxed": "#d62728"}
    for k, (kind, pts) in enumerate(series.items()):
        if len(pts) < 2:
            continue
        a, b = fit(pts)
        print(f"{kind}: fixed {a:.3f} ns/row + {b:.3f} ns/row per stage")
        path = " ".join(f"{sx(d):.1f},{sy(v):.1f}" for d, v in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colors[kind]}" stroke-width="2"/>')
        for d, v in pts:
            out.append(f'<circle cx="{sx(d):.1f}" cy="{sy(v):.1f}" r="3" fill="{colors[kind]}"/>')
        out.append(f'<text x="{pad+10}" y="{pad+16*k}" fill="{colors[kind]}">{kind}: {a:.2f} + {b:.2f}·depth ns/row</text>')
    out.append("</svg>")
    dest = ROOT / "docs" / "depth.svg"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text("\n".join(out))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
