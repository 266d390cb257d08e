"""`mtg report`: one self-contained HTML file, opened in headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from conftest import ARTIFACTS
from mtg.pipeline.errors import MtgError
from mtg.pipeline.landuse import UNKNOWN
from mtg.pipeline.report import (MAX_COMMODITY_COLOURS, OTHER, REGION_GAP_M, SEVERAL, collect, commodity_colours,
                                 render_page, site_map, write_report)
from mtg.pipeline.report_figures import DIVERGING, colorize, png_bytes
from mtg.pipeline.site_assembly import site_layer
from run_folder import write_run_folder

MTG = str(Path(sys.executable).parent / "mtg")
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_run_folder(tmp_path_factory.mktemp("report") / "run")


@pytest.fixture(scope="module")
def bare_run(run_dir, tmp_path_factory) -> Path:
    """A run folder with the sites only: every optional part is missing."""
    bare = tmp_path_factory.mktemp("bare") / "run"
    shutil.copytree(run_dir / "sites", bare / "sites")
    return bare


def page_data(path: Path) -> dict:
    """The JSON block the page is drawn from."""
    block = re.search(r'<script type="application/json" id="mtg-data">(.*?)</script>', path.read_text(), re.S)
    return json.loads(block.group(1))


def test_report_is_one_file_that_loads_nothing(run_dir, tmp_path):
    path = write_report(run_dir, tmp_path / "out" / "r.html")
    text = path.read_text()
    assert set(re.findall(r"https?://[^\s\"'<>)]+", text)) == {SVG_NAMESPACE}  # a namespace name, never fetched
    assert not re.search(r"<(script|img|iframe)[^>]+src=\"(?!data:)", text)
    assert "<link rel=\"stylesheet\"" not in text and "@import" not in text and "url(" not in text
    assert "default-src 'none'" in text  # the Content-Security-Policy forbids any request
    assert not list(path.parent.glob(".*.tmp"))


def test_report_data_are_the_run_files(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    data = page_data(path)
    assert data["notes"] == {}, data["notes"]
    sites = gpd.read_parquet(run_dir / "sites" / "sites.parquet")
    assert len(data["sites"]) == len(sites) == len(data["map"]["features"])
    volumes = gpd.read_parquet(run_dir / "volumes" / "site_volumes.parquet").set_index("site_id")
    by_id = {s["site_id"]: s for s in data["sites"]}
    for sid, row in volumes.iterrows():
        assert by_id[sid]["excavated_m3"] == pytest.approx(row["excavated_m3"])
        assert by_id[sid]["deposited_sigma_m3"] == pytest.approx(row["deposited_sigma_m3"])
    assert {t["key"] for t in data["thumbnails"]} == {"dh", "probability"}
    assert all(t["uri"].startswith("data:image/png;base64,") and t["outlines"] for t in data["thumbnails"])
    assert {t["key"] for t in data["tables"]} == {"landuse_by_commodity", "landuse_by_country",
                                                  "landuse_by_commodity_country", "deposits", "verification"}
    landuse = next(t for t in data["tables"] if t["key"] == "landuse_by_commodity")
    assert [r["commodity"] for r in landuse["footer"]] == ["Total"]
    assert data["provenance"]["commands"][0].startswith(f"mtg run --out {run_dir.name} ")
    assert str(run_dir) not in path.read_text()  # paths relative to the run folder: the page can move with it
    assert data["provenance"]["software"].startswith("mine-the-gap ")
    assert data["provenance"]["coregistration"]["before_date"] < data["provenance"]["coregistration"]["after_date"]
    # one name and one grey for "no commodity", as in the land-use tables; one colour for several commodities
    indicators = gpd.read_parquet(run_dir / "indicators" / "site_indicators.parquet")
    expected = {str(k): (UNKNOWN if len(v) == 0 else v[0] if len(v) == 1 else SEVERAL)
                for k, v in zip(indicators["site_id"], indicators["primary_commodities"])}
    assert {s["site_id"]: s["primary"] for s in data["sites"]} == expected
    assert {UNKNOWN, SEVERAL} <= set(expected.values())  # the fixture has both kinds of site
    assert data["colours"][UNKNOWN] == "#9e9e9e" and data["no_commodity"] == UNKNOWN
    assert data["colours"][SEVERAL] not in {c for k, c in data["colours"].items() if k != SEVERAL}
    assert UNKNOWN in [r["commodity"] for r in data["landuse"]["rows"]]


def test_a_world_map_has_one_region_per_district_with_its_own_view(tmp_path):
    """Sites on several continents form regions (mining districts), each with a view that holds its sites and
    outlines simplified for that view, not for the whole world."""
    pits = [shapely.box(119.70 + 0.02 * k, -23.40, 119.71 + 0.02 * k, -23.39) for k in range(3)]  # Pilbara
    pits += [shapely.box(20.90, 67.10, 20.92, 67.11), shapely.box(-70.35, -12.90, -70.34, -12.89)]
    sites = gpd.GeoDataFrame({"site_id": [str(k) for k in range(5)], "area_km2": [1.0] * 5,
                              "country": ["Australia"] * 3 + ["Sweden", "Peru"]}, geometry=pits, crs="EPSG:4326")
    sites = site_layer(sites)  # lon/lat from the footprints, as read_sites gives them
    data = site_map(sites, tmp_path, {})
    assert [(r["name"], r["n_sites"]) for r in data["regions"]] == [("Australia", 3), ("Sweden", 1), ("Peru", 1)]
    assert [f["region"] for f in data["features"]] == [0, 0, 0, 1, 2]
    for feature in data["features"]:
        x, y, w, h = data["regions"][feature["region"]]["view"]
        assert x < feature["cx"] < x + w and y < feature["cy"] < y + h and w < REGION_GAP_M * 2
        assert feature["path"].count("L") >= 4  # a 1 km box keeps its corners
    assert site_map(sites.iloc[:3], tmp_path, {})["regions"] == []  # one district: no region buttons


def test_sites_of_points_only_are_markers_at_their_lon_lat(tmp_path):
    """Sites of points only (null geometry) are counted apart from those with a footprint and drawn as markers at
    their lon/lat, without an outline."""
    sites = gpd.GeoDataFrame({"site_id": [0, 1, 2], "n_polygons": [2, 0, 0], "n_points": [1, 1, 3],
                              "commodities": [["gold;copper"], ["gold"], []], "area_km2": [1.0, np.nan, np.nan],
                              "lon": [119.705, 119.8, 119.903], "lat": [-23.295, -23.3, -23.31]},
                             geometry=[shapely.MultiPolygon([shapely.box(119.7, -23.3, 119.71, -23.29)]), None, None],
                             crs="EPSG:4326")
    (tmp_path / "sites").mkdir()
    sites.to_parquet(tmp_path / "sites" / "sites.parquet")
    data = page_data(write_report(tmp_path))
    assert data["summary"]["n_sites"] == 3 and data["summary"]["n_polygon_sites"] == 1
    features = site_map(site_layer(sites), tmp_path, {})["features"]
    assert [bool(f["path"]) for f in features] == [True, False, False]
    markers = gpd.GeoSeries(gpd.points_from_xy(sites["lon"], sites["lat"]), crs=4326).to_crs(3857)
    assert [(f["cx"], f["cy"]) for f in features[1:]] == [(round(p.x), round(-p.y)) for p in markers[1:]]
    # a text cell is a list of names, not of characters
    assert [s["commodities"] for s in data["sites"]] == [["gold", "copper"], ["gold"], []]
    assert [s["primary"] for s in data["sites"]] == [SEVERAL, "gold", UNKNOWN]


def test_missing_parts_get_a_note_not_an_error(bare_run):
    data = page_data(write_report(bare_run))
    assert {"indicators", "volumes", "landuse", "dh", "probability", "deposits", "verification"} <= set(data["notes"])
    assert all("not computed in this run" in note.lower() for note in data["notes"].values())
    assert data["volumes"] is None and data["landuse"] is None and data["thumbnails"] == []


def test_png_thumbnails_decode_with_gdal():
    from rasterio.io import MemoryFile

    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    with MemoryFile(png_bytes(rgba)) as mem, mem.open() as png:
        assert png.driver == "PNG" and np.array_equal(png.read(), rgba.transpose(2, 0, 1))
    colours = colorize(np.array([[-2.0, 0.0, 2.0, np.nan]]), -2.0, 2.0, DIVERGING)
    assert [f"#{r:02x}{g:02x}{b:02x}" for r, g, b, _ in colours[0, :3]] == [DIVERGING[0], DIVERGING[5], DIVERGING[-1]]
    assert colours[0, :, 3].tolist() == [255, 255, 255, 0]


def test_missing_sites_is_one_clear_error(tmp_path):
    with pytest.raises(MtgError, match=re.escape(str(tmp_path / "sites" / "sites.parquet"))):
        write_report(tmp_path)
    proc = subprocess.run([MTG, "report", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "nowhere" in proc.stderr and "Traceback" not in proc.stderr


# ---- in the browser ----------------------------------------------------------------------------------------------

def chromium() -> str:
    """Debian's Chromium (installed by .ci/run) and Playwright; skip without them, except in CI where they must be."""
    name = os.environ.get("MTG_CHROMIUM", "chromium")  # another Chromium build can be named here
    path = shutil.which(name)
    problem = None if path else f"{name!r}, not found (Debian's: apt-get install chromium, as .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "playwright is not installed (the project's dev extra)"
    if problem:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"browser test needs {problem}")
    return path


@pytest.fixture(scope="module")
def browser():
    path = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, headless=True)
        yield launched
        launched.close()


def open_report(browser, path: Path):
    """The page, with its console errors, page errors and requests recorded; any non-file request is aborted."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log = {"errors": [], "requests": [], "blocked": []}
    page.on("console", lambda m: log["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log["errors"].append(str(e)))
    page.on("request", lambda r: log["requests"].append(r.url))

    def block(route):
        log["blocked"].append(route.request.url)
        route.abort()

    page.route(re.compile(r"^(?!file:|data:)"), block)
    page.goto(path.as_uri())
    return page, log


def sized(locator) -> bool:
    return all(b and b["width"] > 0 and b["height"] > 0 for b in (e.bounding_box() for e in locator.all()))


def test_report_renders_and_responds_in_chromium(browser, run_dir):
    path = write_report(run_dir)
    data = page_data(path)
    page, log = open_report(browser, path)
    page.wait_for_selector("#map path.site")
    polygons = [f for f in data["map"]["features"] if f["path"]]
    assert page.locator("#map path.site").count() == len(polygons) and sized(page.locator("#map path.site"))
    assert page.locator("#map circle.bubble").count() == len(data["sites"]) and sized(page.locator("#map circle"))
    assert page.locator("#landuse-chart rect.bar").count() == len(data["landuse"]["rows"])
    assert sized(page.locator("#landuse-chart rect.bar"))
    assert page.locator("#volume-chart rect.bar").count() == 2 * len(data["volumes"]["rows"])
    assert page.locator("#volume-chart g.err").count() > 0 and sized(page.locator("#volume-chart svg"))
    assert page.eval_on_selector_all("#thumbs img", "imgs => imgs.map(i => i.complete && i.naturalWidth)") == [
        t["width"] for t in data["thumbnails"]]

    site = next(s for s in data["sites"] if s.get("excavated_m3"))
    page.locator(f'#map circle[data-site="{site["site_id"]}"]').click()
    assert page.locator("#panel h3").inner_text() == f"Site {site['site_id']}"
    expected = f"{site['excavated_m3'] / 1e6:.2f} ± {site['excavated_sigma_m3'] / 1e6:.2f}"
    assert page.locator('#panel dd[data-key="excavated_m3"]').inner_text() == expected

    before = page.get_attribute("#map", "viewBox")
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"document.getElementById('map').getAttribute('viewBox') !== '{before}'")

    areas = {s["site_id"]: s.get("area_km2") for s in data["sites"]}
    order = sorted(areas, key=lambda k: (areas[k] is None, areas[k] if areas[k] is not None else math.inf))
    first_column = '#site-table tbody tr td:first-child'
    unsorted = page.locator(first_column).all_inner_texts()
    page.locator('#site-table th[data-key="area_km2"]').click()
    assert page.locator(first_column).all_inner_texts() == order != unsorted
    page.locator('#site-table th[data-key="area_km2"]').click()
    descending = [k for k in reversed(order) if areas[k] is not None] + [k for k in order if areas[k] is None]
    assert page.locator(first_column).all_inner_texts() == descending
    assert page.get_attribute('#site-table th[data-key="area_km2"]', "aria-sort") == "descending"

    page.locator("#reset-view").click()
    assert page.get_attribute("#map", "viewBox") == before

    # the land-use note tells the cut chosen per site, not the largest cut as if it were everyone's
    counts = json.loads((run_dir / "landuse" / "summary.json").read_text())["chosen_cut_counts"]
    words = page.locator("#landuse-split .explain").inner_text()
    assert "chosen for it" in words and all(f"{m} m for {n} site" in words for m, n in counts.items())
    # axis ticks are evenly spaced numbers as printed (a 2.5 step needs a decimal)
    for chart in ("#landuse-chart", "#volume-chart"):
        ticks = [float(t.replace(",", "")) for t in page.locator(f"{chart} text.tick").all_text_contents()]
        assert len(ticks) >= 2 and np.allclose(np.diff(ticks), ticks[1] - ticks[0]), (chart, ticks)
    volume_labels_do_not_overlap(page, data["volumes"]["rows"])

    # from the keyboard: a header's button sorts, a circle and a table row select their site
    page.locator('#site-table th[data-key="area_km2"] button').focus()
    page.keyboard.press("Enter")
    assert page.get_attribute('#site-table th[data-key="area_km2"]', "aria-sort") == "ascending"
    assert page.locator(first_column).all_inner_texts() == order
    other = next(s for s in data["sites"] if s["site_id"] != site["site_id"])
    page.locator(f'#map circle[data-site="{other["site_id"]}"]').focus()
    page.keyboard.press("Enter")
    assert page.locator("#panel h3").inner_text() == f"Site {other['site_id']}"
    page.locator(f'#site-table tr[data-site="{site["site_id"]}"]').focus()
    page.keyboard.press(" ")
    assert page.locator("#panel h3").inner_text() == f"Site {site['site_id']}"
    assert page.get_attribute("#map", "role") == "group"
    assert page.get_attribute(f'#map circle[data-site="{site["site_id"]}"]', "role") == "button"
    assert page.get_attribute(f'#map circle[data-site="{site["site_id"]}"]', "aria-label").startswith(
        f"Site {site['site_id']} – ")
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert log["errors"] == [] and log["blocked"] == []
    assert all(url.startswith(("file:", "data:")) for url in log["requests"]), log["requests"]
    page.close()


def volume_labels_do_not_overlap(page, rows: list[dict]) -> None:
    """One label per site shown, "Site N · commodity", none overlapping another or the bars."""
    labels = page.locator("#volume-chart text.site-label")
    shown = sorted(rows, key=lambda r: -(r.get("excavated_m3") or 0))[:30]
    assert labels.all_text_contents() == [f"Site {r['site_id']} · {r['primary']}" for r in shown]
    boxes = [labels.nth(k).bounding_box() for k in range(labels.count())]
    bars = min(b["x"] for b in (e.bounding_box() for e in page.locator("#volume-chart rect.bar").all()))
    for k, a in enumerate(boxes):
        assert a["x"] >= 0 and a["x"] + a["width"] <= bars + 0.5, a
        for b in boxes[k + 1:]:
            assert a["y"] + a["height"] <= b["y"] + 0.5 or b["y"] + b["height"] <= a["y"] + 0.5, (a, b)


def test_volume_chart_of_many_sites_with_long_labels(browser, run_dir, tmp_path):
    """Forty sites with long commodity names: the top 30 by excavated volume, labels that fit and do not overlap."""
    data = collect(run_dir)
    row = data["volumes"]["rows"][0]
    names = [SEVERAL, UNKNOWN, "platinum group metals", "iron ore"]
    data["volumes"]["rows"] = [{**row, "site_id": str(k), "primary": names[k % 4], "excavated_m3": 1e6 * (k + 1)}
                               for k in range(40)]
    path = tmp_path / "many.html"
    path.write_text(render_page(data), encoding="utf-8")
    page, log = open_report(browser, path)
    page.wait_for_selector("#volume-chart text.site-label")
    assert page.locator("#volume-chart rect.bar").count() == 2 * 30
    assert "30 sites with the largest excavated volume, of 40" in page.locator("#volume-chart .explain").inner_text()
    volume_labels_do_not_overlap(page, data["volumes"]["rows"])
    assert log["errors"] == []
    page.close()


def test_bare_report_shows_notes_in_chromium(browser, bare_run):
    page, log = open_report(browser, write_report(bare_run))
    page.wait_for_selector("#map circle.bubble")
    assert page.locator(".note").count() >= 5
    assert "not computed in this run" in page.locator("#volumes-section .note").inner_text().lower()
    page.locator("#map circle.bubble").first.click()
    assert page.locator("#panel h3").inner_text().startswith("Site ")
    assert log["errors"] == [] and log["blocked"] == []
    page.close()


def test_a_world_report_names_its_regions_and_zooms_to_each(browser, tmp_path):
    pits = [shapely.box(119.70 + 0.02 * k, -23.40, 119.71 + 0.02 * k, -23.39) for k in range(3)]
    pits += [shapely.box(20.90, 67.10, 20.92, 67.11), shapely.box(-70.35, -12.90, -70.34, -12.89)]
    sites = gpd.GeoDataFrame({"site_id": [str(k) for k in range(5)], "n_polygons": [1] * 5, "n_points": [0] * 5,
                              "area_km2": [1.0] * 5, "commodities": [["gold"]] * 5,
                              "primary_commodities": [["gold"]] * 5,
                              "country": ["Australia"] * 3 + ["Sweden", "Peru"]}, geometry=pits, crs="EPSG:4326")
    (tmp_path / "run" / "sites").mkdir(parents=True)
    sites.to_parquet(tmp_path / "run" / "sites" / "sites.parquet")
    page, log = open_report(browser, write_report(tmp_path / "run"))
    page.wait_for_selector("#map circle.bubble")
    assert page.locator("#regions button").all_inner_texts() == ["all 3 regions", "Australia (3)", "Sweden (1)",
                                                                 "Peru (1)"]
    labels = page.locator(".region-label")
    assert labels.all_inner_texts() == ["Australia (3 sites)", "Sweden (1 site)", "Peru (1 site)"] and sized(labels)
    world = page.get_attribute("#map", "viewBox")
    anchors = sites.geometry.representative_point()
    world_grid = graticule_agrees_with_sites(page, dict(zip(sites["site_id"], zip(anchors.x, anchors.y))))
    assert world_grid["lon"][1] - world_grid["lon"][0] >= 10  # the world in steps of degrees
    page.locator("#regions button", has_text="Australia").click()
    zoomed = [float(v) for v in page.get_attribute("#map", "viewBox").split()]
    assert zoomed[2] < REGION_GAP_M * 2 and not labels.first.is_visible()  # the district's sites, their own labels
    assert page.locator("#map .labels text").first.is_visible()
    grid = graticule_agrees_with_sites(page, dict(zip(sites["site_id"][:3], zip(anchors.x[:3], anchors.y[:3]))))
    assert grid["texts"] != world_grid["texts"] and grid["lon"][1] - grid["lon"][0] <= 0.05  # finer steps
    assert all(119.6 < v < 119.9 for v in grid["lon"]) and all(-23.5 < v < -23.3 for v in grid["lat"])
    assert any("." in t and t.endswith("°E") for t in grid["texts"]["lon"])  # e.g. 119.72°E
    page.locator("#regions button").first.click()
    assert page.get_attribute("#map", "viewBox") == world
    assert graticule_agrees_with_sites(page, {})["texts"] == world_grid["texts"]
    assert log["errors"] == [] and log["blocked"] == []


def test_stages_not_computed_say_so_and_imagery_counts_segmentation_sites(bare_run, tmp_path):
    """A run without volumes has no volume sums (the page says "not computed", not 0); "mapped from imagery"
    counts the sites with a footprint of the run's segmentation, not inventory polygons."""
    summary = page_data(write_report(bare_run))["summary"]
    assert summary["excavated_m3"] is None and summary["waste_deposit_count"] is None
    assert summary["n_imagery_sites"] is None  # no segmentation in this run
    sites = gpd.GeoDataFrame({"site_id": [0, 1, 2], "n_polygons": [2, 1, 0], "n_points": [1, 0, 1],
                              "member_sources": [["segment/mine_polygons.parquet", "inventory.gpkg"],
                                                 ["inventory.gpkg"], []]},
                             geometry=[shapely.box(119.7, -23.3, 119.71, -23.29),
                                       shapely.box(119.8, -23.3, 119.81, -23.29), None],
                             crs="EPSG:4326").assign(lon=[np.nan, np.nan, 119.9], lat=[np.nan, np.nan, -23.3])
    (tmp_path / "sites").mkdir()
    (tmp_path / "segment").mkdir()
    sites.to_parquet(tmp_path / "sites" / "sites.parquet")
    sites.iloc[:1].to_parquet(tmp_path / "segment" / "mine_polygons.parquet")
    summary = page_data(write_report(tmp_path))["summary"]
    assert summary["n_polygon_sites"] == 2 and summary["n_imagery_sites"] == 1


def test_many_commodities_get_distinct_colours_and_the_rest_is_other():
    counts = {f"commodity {k:02d}": 40 - k for k in range(30)} | {"gold": 1, UNKNOWN: 5, SEVERAL: 2}
    colours, tail = commodity_colours(counts)
    kept = [n for n in counts if n not in tail and n not in (UNKNOWN, SEVERAL)]
    assert len(kept) == MAX_COMMODITY_COLOURS and "commodity 00" in kept and "gold" in tail
    shown = [colours[n] for n in kept] + [colours[OTHER], colours[UNKNOWN], colours[SEVERAL]]
    assert len(set(shown)) == len(shown)  # every class in the legend has its own colour
    assert {colours[n] for n in tail} == {colours[OTHER]}


def test_bare_report_cards_say_not_computed_in_chromium(browser, bare_run):
    page, log = open_report(browser, write_report(bare_run))
    page.wait_for_selector("#cards .card")
    cards = page.locator("#cards .card.not-computed .value").all_inner_texts()
    assert cards and set(cards) == {"not computed"}
    assert "0.0 million" not in page.locator("#cards").inner_text()
    assert log["errors"] == []
    page.close()


def graticule_agrees_with_sites(page, lonlat: dict[str, tuple[float, float]]) -> dict:
    """The map's graticule as drawn: 2-8 lines of longitude and of latitude under the sites, each with its degrees
    shown at the map's edge over the line, and on the right side of every site whose (lon, lat) is given. Returns
    the lines' values and the labels' texts."""
    drawn = page.evaluate("""() => {
        const wrap = document.querySelector('.map-wrap').getBoundingClientRect();
        const mid = r => [(r.left + r.right) / 2, (r.top + r.bottom) / 2];
        const lines = [...document.querySelectorAll('#map .graticule line')].map(l => ({
            lon: l.dataset.lon, lat: l.dataset.lat, at: mid(l.getBoundingClientRect()),
            stroke: getComputedStyle(l).vectorEffect, events: getComputedStyle(l).pointerEvents}));
        const labels = [...document.querySelectorAll('.graticule-label')].map(e => {
            const r = e.getBoundingClientRect();
            return {lon: e.dataset.lon, lat: e.dataset.lat, text: e.textContent, at: mid(r),
                    inside: r.width > 0 && r.height > 0 && r.left >= wrap.left && r.right <= wrap.right &&
                            r.top >= wrap.top && r.bottom <= wrap.bottom,
                    shown: getComputedStyle(e).visibility === 'visible' && !e.closest('[hidden]')};
        });
        const sites = {};
        document.querySelectorAll('#map circle.bubble').forEach(c => { sites[c.dataset.site] = mid(c.getBoundingClientRect()); });
        return {lines, labels, sites, first: document.querySelector('#map').firstElementChild.getAttribute('class')};
    }""")
    assert drawn["first"] == "graticule"  # drawn first: under the sites
    result: dict = {"texts": {}}
    for axis, coordinate, hemispheres in (("lon", 0, "EW"), ("lat", 1, "NS")):
        lines = [line for line in drawn["lines"] if line[axis] is not None]
        values = sorted(float(line[axis]) for line in lines)
        assert 2 <= len(values) <= 8, (axis, values)
        assert np.allclose(np.diff(values), values[1] - values[0])
        assert all(line["stroke"] == "non-scaling-stroke" and line["events"] == "none" for line in lines)
        at = {float(line[axis]): line["at"][coordinate] for line in lines}
        labels = [label for label in drawn["labels"] if label[axis] is not None]
        assert len(labels) >= 2 and all(label["inside"] and label["shown"] for label in labels), labels
        for label in labels:
            value = float(label[axis])
            number = float(label["text"].rstrip(hemispheres).rstrip("°"))
            sign = -1 if label["text"].endswith(hemispheres[1]) else 1
            assert sign * number == pytest.approx(value, abs=1e-9), label
            assert abs(label["at"][coordinate] - at[value]) < 1.5, (label, at[value])  # over its line
        for sid, position in lonlat.items():
            screen = drawn["sites"][sid][coordinate]
            for value, where in at.items():
                ahead = where > screen if axis == "lon" else where < screen  # east is right, north is up
                if abs(value - position[coordinate]) > 1e-6:
                    assert ahead == (value > position[coordinate]), (sid, axis, value, position)
        result[axis] = values
        result["texts"][axis] = [label["text"] for label in labels]
    return result


def test_site_table_fits_the_page_and_chooses_its_columns(browser, run_dir):
    """At 1280 px the site table needs no horizontal scrollbar: wrapped headers and a default set of columns; the
    column chooser shows and hides the others, and sorting and row selection go on working."""
    path = write_report(run_dir)
    data = page_data(path)
    page, log = open_report(browser, path)
    page.wait_for_selector("#site-table tbody tr")
    widths = page.eval_on_selector_all(".table-wrap", "ws => ws.map(w => [w.parentNode.id, w.scrollWidth, w.clientWidth])")
    assert len(widths) == 1 + len(data["tables"]) and all(s <= c for _, s, c in widths), widths  # verification too
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    fields = {f["key"]: f for f in data["fields"]}
    hidden = [k for k, f in fields.items() if not f["shown"]]
    shown = [k for k, f in fields.items() if f["shown"]]
    assert hidden and "site_id" in shown and "excavated_m3" in shown
    header = page.locator("#site-table thead th")
    assert [h.get_attribute("data-key") for h in header.all() if h.is_visible()] == shown
    summary = page.locator("#site-table details.columns summary")
    assert summary.inner_text() == f"Columns: {len(shown)} of {len(fields)} shown"

    # hide a shown column, from the keyboard
    summary.focus()
    page.keyboard.press("Enter")
    excavated = page.locator('#site-table details.columns input[value="excavated_m3"]')
    assert excavated.is_visible() and excavated.is_checked()
    excavated.focus()
    page.keyboard.press(" ")
    assert not excavated.is_checked()
    assert not page.locator('#site-table th[data-key="excavated_m3"]').is_visible()
    assert page.locator('#site-table td[data-key="excavated_m3"]:visible').count() == 0
    assert summary.inner_text() == f"Columns: {len(shown) - 1} of {len(fields)} shown"
    # show a hidden one with the mouse: its header and one cell a row appear, and it sorts
    extra = next(k for k in ("n_points", "area_before_km2", "sources") if k in hidden)
    page.locator(f'#site-table details.columns input[value="{extra}"]').click()
    assert page.locator(f'#site-table th[data-key="{extra}"]').is_visible()
    assert page.locator(f'#site-table td[data-key="{extra}"]:visible').count() == len(data["sites"])
    page.locator(f'#site-table th[data-key="{extra}"] button').click()
    assert page.get_attribute(f'#site-table th[data-key="{extra}"]', "aria-sort") == "ascending"
    # a sort redraws the rows with the chosen columns only
    assert page.locator('#site-table td[data-key="excavated_m3"]:visible').count() == 0
    assert page.locator(f'#site-table td[data-key="{extra}"]:visible').count() == len(data["sites"])
    assert page.locator('#site-table details.columns input[value="site_id"]').is_disabled()  # the row's name stays
    # a row still selects its site, from the keyboard too
    site = data["sites"][-1]["site_id"]
    page.locator(f'#site-table tr[data-site="{site}"]').focus()
    page.keyboard.press("Enter")
    assert page.locator("#panel h3").inner_text() == f"Site {site}"
    # the value and its uncertainty read as one text
    row = next(s for s in data["sites"] if s.get("deposited_m3"))
    cell = page.locator(f'#site-table tr[data-site="{row["site_id"]}"] td[data-key="deposited_m3"]')
    assert cell.inner_text() == f"{row['deposited_m3'] / 1e6:.2f} ± {row['deposited_sigma_m3'] / 1e6:.2f}"
    assert log["errors"] == []
    page.close()


def test_timeline_chart_and_change_layer_in_chromium(browser, small_run, tmp_path):
    """`mtg run` maps its sites per year: the report draws each site's area by period (a point per measured period,
    a gap where clouds hid a site) and the last period's new and revegetated land on the map."""
    path = write_report(small_run, tmp_path / "report.html")
    data = page_data(path)
    timeline = data["timeline"]
    assert timeline["periods"] == ["2021", "2022", "2023"] and timeline["last"] == "2023"
    page, log = open_report(browser, path)
    page.wait_for_selector("#timeline-chart svg")
    measured = [r for r in timeline["rows"] if r["area_m2"] is not None]
    assert page.locator("#timeline-chart circle").count() == len(measured) > 0
    assert sized(page.locator("#timeline-chart circle"))
    changes = page.locator("#map path.change-new, #map path.change-revegetated")
    assert changes.count() == len(timeline["change"]) > 0
    assert not log["errors"] and not log["blocked"]
