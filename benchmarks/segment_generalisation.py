"""Segmentation on sample-world seeds never used in training: mine-footprint IoU per seed (mean, min), per class, and
the false-positive share of the mapped area, for a new model against the previous one.

Each unseen seed is a sample world (``mtg sample --world 6 --seed S``: six districts of 8 km with their own mine
styles, terrain, season, clouds and haze), each district ingested on its own UTM grid (``mtg ingest``); the data
are written under ``--data`` when missing. Every model maps every district with the code of ``mtg evaluate``;
counts are pooled over the districts of a seed (the seed's IoU) and over all seeds (per class, false-positive
objects: mapped areas of at least the minimum mapping unit that touch no true mine feature).

With ``--patagonia DIR`` every model also maps the real Sentinel-2 subset of ``../shared/data`` (no mine there: all
mapped area is false positive); ``--record`` writes each model's summaries into its model card
(``metrics.unseen_seeds``, ``metrics.real_patagonia``).

    python benchmarks/segment_generalisation.py --models NEW,pipeline/models/mine_unet_sample \\
        --seeds 11,12,13,14,15 --data /tmp/mtg-generalisation --json results.json \\
        --patagonia ../shared/data/sentinel2_patagonia_xrspatial --record
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd

from mtg.pipeline.evaluate import evaluate_model
from mtg.pipeline.model_store import CARD, read_card, resolve_model_dir
from mtg.pipeline.table_io import atomic_write

MTG = str(Path(sys.executable).parent / "mtg")
CLASSES = ("pit", "dump", "tailings", "other")


def prepare(data: Path, seed: int) -> list[tuple[str, Path, Path]]:
    """The districts of world ``seed`` as ``(key, cube, labels)``, written with the mtg CLI when missing."""
    world = data / f"world{seed}"
    subprocess.run([MTG, "sample", "--world", "6", "--seed", str(seed), "--out", str(world), "--quiet"], check=True,
                   capture_output=True)
    time_range = "/".join(json.loads((world / "world.json").read_text())["time_range"])
    out = []
    for _, d in gpd.read_parquet(world / "truth" / "districts.parquet").iterrows():
        cube = data / "cubes" / f"w{seed}_{d.district}"
        if not (cube / "reflectance.zarr").exists():
            bbox = ",".join(f"{v:.6f}" for v in d.geometry.bounds)
            subprocess.run([MTG, "ingest", "--catalog", str(world / "catalog.json"), "--bbox", bbox, "--crs",
                            f"EPSG:{d.grid_epsg}", "--resolution", "10", "--time", time_range, "--out", str(cube),
                            "--quiet"], check=True, capture_output=True)
        out.append((d.district, cube / "reflectance.zarr", world / "truth" / d.district / "mine_polygons.parquet"))
    return out


def _iou(tp: float, fp: float, fn: float) -> float:
    return tp / (tp + fp + fn) if tp + fp + fn else float("nan")


def summarise(rows: list[dict]) -> dict:
    """Per-seed IoU (pooled over its districts), their mean and min, pooled per-class IoU, false-positive share."""
    seeds = sorted({r["seed"] for r in rows})
    per_seed = {s: _iou(*(sum(r[k] for r in rows if r["seed"] == s) for k in ("tp", "fp", "fn"))) for s in seeds}
    per_class = {c: _iou(*(sum(r["classes"][c][k] for r in rows if c in r["classes"]) for k in ("tp", "fp", "fn")))
                 for c in CLASSES}
    mapped = sum(r["objects"]["area_m2"] for r in rows)
    false = sum(r["objects"]["false_positive_area_m2"] for r in rows)
    districts = sorted({r["district"] for r in rows})
    per_district = {d: _iou(*(sum(r[k] for r in rows if r["district"] == d) for k in ("tp", "fp", "fn")))
                    for d in districts}
    return {"iou_per_seed": per_seed, "iou_mean": sum(per_seed.values()) / len(per_seed),
            "iou_min": min(per_seed.values()), "iou_per_district": per_district, "class_iou": per_class,
            "false_positive_area_share": false / mapped if mapped else 0.0, "mapped_area_km2": mapped / 1e6,
            "false_positive_area_km2": false / 1e6}


def patagonia(model: str, folder: Path, empty: Path) -> dict:
    """The model on the real Patagonia subset (six bands; its SWIR on their own 20 m grid): mapped area."""
    if not empty.exists():
        gpd.GeoDataFrame({"feature_type": []}, geometry=[], crs="EPSG:32719").to_parquet(empty)
    files = f"{folder}/s2_patagonia_10m_B2_B3_B4_NIR.tif,{folder}/s2_patagonia_20m_B11_B12.tif"
    r = evaluate_model(model, files, empty, band_names=["B02", "B03", "B04", "B08", "B11", "B12"])
    return {"scene_km2": r["pixels"] * 100 / 1e6, "pixels_mapped": r["fp"], "mapped_share": r["fp"] / r["pixels"],
            "mapped_km2": r["mapped_area_m2"] / 1e6, "objects_km2": r["objects"]["area_m2"] / 1e6,
            "note": "no mine in the scene: every mapped pixel is a false positive; its 'NIR' band may be B07"}


def record(model: str, entry: dict) -> None:
    """Write ``entry`` into the metrics of the model's card."""
    folder = resolve_model_dir(model)
    card = read_card(folder)
    card.metrics.update(entry)
    atomic_write(folder / CARD, lambda tmp: tmp.write_text(card.model_dump_json(indent=2) + "\n"))


def main() -> None:
    """Evaluate the models on the unseen seeds and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="comma-separated model folders (the first is the new one)")
    parser.add_argument("--seeds", default="11,12,13,14,15")
    parser.add_argument("--data", type=Path, default=Path("/tmp/mtg-generalisation"))
    parser.add_argument("--json", type=Path, help="write the rows and summaries here")
    parser.add_argument("--patagonia", type=Path, help="folder of the real Patagonia subset (../shared/data/...)")
    parser.add_argument("--record", action="store_true", help="write the summaries into each model's card")
    args = parser.parse_args()
    districts = {int(s): prepare(args.data, int(s)) for s in args.seeds.split(",")}
    results = {}
    for model in args.models.split(","):
        rows = []
        for seed, items in districts.items():
            for key, cube, labels in items:
                r = evaluate_model(model, str(cube), labels)
                classes = {c: {k: m[k] for k in ("tp", "fp", "fn")} for c, m in r["classes"].items()}
                rows.append({"seed": seed, "district": key, "tp": r["tp"], "fp": r["fp"], "fn": r["fn"],
                             "iou": r["iou"], "classes": classes, "objects": r["objects"]})
                print(f"{model} seed {seed} {key}: IoU {r['iou']:.3f}, false-positive objects "
                      f"{r['objects']['false_positive_area_share']:.1%}", flush=True)
        results[model] = {"rows": rows, "summary": summarise(rows)}
        if args.patagonia:
            results[model]["patagonia"] = patagonia(model, args.patagonia, args.data / "no_mines.parquet")
    print(f"\nunseen seeds {args.seeds} (6 districts each)")
    print(f"{'model':<45} {'IoU mean':>8} {'IoU min':>8} {'pit':>6} {'dump':>6} {'tail.':>6} {'FP share':>9}")
    for model, res in results.items():
        s = res["summary"]
        c = s["class_iou"]
        print(f"{model:<45} {s['iou_mean']:8.3f} {s['iou_min']:8.3f} {c['pit']:6.3f} {c['dump']:6.3f} "
              f"{c['tailings']:6.3f} {s['false_positive_area_share']:9.1%}")
        print("  per seed: " + ", ".join(f"{k} {v:.3f}" for k, v in s["iou_per_seed"].items())
              + "; per district: " + ", ".join(f"{k} {v:.3f}" for k, v in s["iou_per_district"].items()))
        if "patagonia" in res:
            p = res["patagonia"]
            print(f"  real Patagonia subset (no mine): {p['pixels_mapped']} pixels ({p['mapped_share']:.2%} of "
                  f"{p['scene_km2']:.0f} km^2) mapped, {p['objects_km2']:.4f} km^2 of objects")
        if args.record:
            entry = {"unseen_seeds": {"seeds": [int(v) for v in args.seeds.split(",")], "districts": 6,
                                      "command": " ".join(sys.argv), **res["summary"]}}
            if "patagonia" in res:
                entry["real_patagonia"] = res["patagonia"]
            record(model, entry)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
