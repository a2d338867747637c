"""The web console in a real headless Chromium (Playwright over Debian's /usr/bin/chromium),
against a running local stack. Run by scripts/console-test.sh, which starts the stack and
creates the key; every expectation below is read from the API itself, not written in.

Checks, in order: the console's routes and CSP; a wrong key shows the API's own error message;
the right key loads the model list of GET /v1/models; dropping two real photos makes two jobs
that go queued → succeeded; the result shown in the slider is the API's cutout (its alpha
matches the job's foreground fraction) and the screenshot shows it over the checkerboard
right of the divider and the original left of it; the download is byte for byte the API's
result; the history lists the jobs newest first and pages with the cursor; forgetting the key
clears it from storage. Any page error, console error (a CSP violation logs one) or request to
another origin fails the test.
"""

import argparse
import base64
import io
import json
import mimetypes
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect, sync_playwright

CHECKER = [(255, 255, 255), (0xC9, 0xCE, 0xD6)]  # style.css .checker
LAUNCH_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def http(api, path, key=None, method="GET"):
    """(status, headers, body bytes) of a request to the API; never follows the redirect
    with the key (the presigned URL must not get it)."""
    req = urllib.request.Request(api + path, method=method)
    if key:
        req.add_unredirected_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def api_json(api, path, key):
    status, _, body = http(api, path, key)
    assert status == 200, f"GET {path}: {status} {body[:300]!r}"
    return json.loads(body)


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def check_routes(api):
    status, headers, body = http(api, "/console")
    check(status == 200, f"/console: {status}")
    check(headers["Content-Type"].startswith("text/html"), headers["Content-Type"])
    csp = headers["Content-Security-Policy"]
    check("script-src 'self'" in csp and "connect-src 'self'" in csp, f"console CSP: {csp}")
    check("*" not in csp and "unsafe" not in csp, f"console CSP allows too much: {csp}")
    check(b"/console/app.js" in body, "the page loads its script")
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        status, headers, _ = http(api, f"/console/{name}")
        check(status == 200 and headers["Content-Type"].startswith(kind), f"{name}: {status}")
    status, _, body = http(api, "/console/missing.js")
    check(status == 404 and json.loads(body)["error"]["code"] == "route_not_found", "missing asset")
    # The API's own responses keep the strict policy.
    _, headers, _ = http(api, "/health")
    check(headers["Content-Security-Policy"].startswith("default-src 'none'"), "API CSP changed")


def drop_files(page, paths):
    """Dispatches a real drop event carrying the files on the drop zone."""
    files = [
        {
            "name": p.name,
            "type": mimetypes.guess_type(p.name)[0],
            "b64": base64.b64encode(p.read_bytes()).decode(),
        }
        for p in paths
    ]
    page.evaluate(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, { type: f.type }));
            }
            const drop = document.getElementById("drop");
            drop.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
            drop.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""",
        files,
    )


def shown_alpha(page):
    """Mean alpha / 255 and the size of the image in the slider's result layer, read back
    from the decoded image in the page."""
    return page.evaluate(
        """() => {
            const img = document.getElementById("after");
            const c = document.createElement("canvas");
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const ctx = c.getContext("2d");
            ctx.drawImage(img, 0, 0);
            const d = ctx.getImageData(0, 0, c.width, c.height).data;
            let sum = 0, clear = 0, solid = 0;
            for (let i = 3; i < d.length; i += 4) {
                sum += d[i];
                if (d[i] === 0) clear++;
                if (d[i] === 255) solid++;
            }
            const n = d.length / 4;
            return { w: c.width, h: c.height, mean: sum / n / 255, clear: clear / n, solid: solid / n,
                     src: img.src };
        }"""
    )


def near(a, b, tol):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def check_screenshot(shot_png, cutout_png, original_path, rect, divider_pct):
    """The screenshot shows the checkerboard where the cutout is transparent right of the
    divider, the cutout's pixels where it is opaque, and the original left of it."""
    shot = Image.open(io.BytesIO(shot_png)).convert("RGB")
    cut = Image.open(io.BytesIO(cutout_png)).convert("RGBA")
    orig = Image.open(original_path).convert("RGB").resize(cut.size)
    w, h = cut.size
    scale = shot.width / 1280  # device pixels per CSS pixel
    counts = {"checker": [0, 0], "cutout": [0, 0], "original": [0, 0]}
    step = max(4, min(w, h) // 60)
    for v in range(step, h - step, step):
        for u in range(step, w - step, step):
            # Interior points only: the whole neighbourhood has one alpha, so scaling on the
            # screen cannot blend it with its neighbours.
            alphas = {cut.getpixel((u + du, v + dv))[3] for du in (-2, 0, 2) for dv in (-2, 0, 2)}
            if len(alphas) != 1 or next(iter(alphas)) not in (0, 255):
                continue
            x = rect["x"] + (u + 0.5) / w * rect["width"]
            y = rect["y"] + (v + 0.5) / h * rect["height"]
            pct = 100 * (u + 0.5) / w
            if abs(pct - divider_pct) < 2:
                continue
            seen = shot.getpixel((int(x * scale), int(y * scale)))
            alpha = next(iter(alphas))
            if pct < divider_pct:
                kind, ok = "original", near(seen, orig.getpixel((u, v)), 40)
            elif alpha == 0:
                kind, ok = "checker", any(near(seen, c, 6) for c in CHECKER)
            else:
                kind, ok = "cutout", near(seen, cut.getpixel((u, v))[:3], 40)
            counts[kind][0] += ok
            counts[kind][1] += 1
    for kind, (ok, n) in counts.items():
        check(n >= 20, f"screenshot: too few {kind} samples ({n})")
        check(ok / n >= 0.9, f"screenshot: only {ok}/{n} {kind} samples look right")
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--api", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--photo", action="append", required=True, type=Path)
    ap.add_argument("--screenshot", required=True, type=Path)
    args = ap.parse_args()
    api, key, photos = args.api.rstrip("/"), args.key, args.photo
    started = time.monotonic()

    check_routes(api)
    wrong_key = "ij_live_" + "0" * 48
    status, _, body = http(api, "/v1/models", wrong_key)
    check(status == 401, f"a wrong key is refused: {status}")
    wrong_key_message = json.loads(body)["error"]["message"]
    models = api_json(api, "/v1/models", key)

    problems = []
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
            headless=True,
            args=LAUNCH_FLAGS,
            viewport={"width": 1280, "height": 800},
            accept_downloads=True,
        )
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "console",
            lambda m: m.type == "error"
            # A refused key is a 401 the page shows; the browser logs the response too.
            and "401" not in m.text
            and problems.append(f"console error: {m.text}"),
        )
        page.on(
            "request",
            lambda r: r.url.startswith(("http:", "https:"))
            and not r.url.startswith(api + "/")
            and problems.append(f"request to another origin: {r.url}"),
        )

        page.goto(api + "/console")
        expect(page.get_by_role("heading", name="Remove backgrounds")).to_be_visible()

        # A wrong key: the API's own message is shown, and nothing is kept.
        page.get_by_label("API key").fill(wrong_key)
        page.get_by_role("button", name="Use key").click()
        expect(page.get_by_role("alert")).to_contain_text(wrong_key_message)
        check(page.evaluate("sessionStorage.length + localStorage.length") == 0, "a refused key was kept")

        # The right key: the model list is GET /v1/models's, the default selected.
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Use key").click()
        expect(page.get_by_label("Model")).to_be_enabled()
        expect(page.get_by_role("alert")).to_be_hidden()
        offered = page.eval_on_selector_all("#opt-model option", "os => os.map(o => o.value)")
        check(offered == [m["name"] for m in models["models"]], f"models offered: {offered}")
        check(page.input_value("#opt-model") == models["default_model"], "default model selected")
        check(page.evaluate("sessionStorage.getItem('imagejobs.apiKey')") == key, "key kept for the tab")
        page.select_option("#opt-model", "u2netp")

        # Two photos dropped at once: two jobs, each queued → … → succeeded.
        t0 = time.monotonic()
        drop_files(page, photos)
        jobs = page.locator("#session-jobs li")
        expect(jobs).to_have_count(len(photos))
        expect(page.locator("#session-jobs li[data-status=succeeded]")).to_have_count(len(photos), timeout=90_000)
        jobs_secs = time.monotonic() - t0
        by_name = {}
        for i in range(len(photos)):
            li = jobs.nth(i)
            trail = li.locator(".trail").inner_text()
            check(trail.startswith("queued") and "succeeded" in trail, f"status trail: {trail}")
            by_name[li.locator(".name").inner_text()] = li.get_attribute("data-job-id")
        check(sorted(by_name) == sorted(p.name for p in photos), f"session jobs: {by_name}")
        for job_id in by_name.values():
            job = api_json(api, f"/v1/jobs/{job_id}", key)
            check(job["status"] == "succeeded" and job["result"]["engine"] == "u2netp", f"job {job_id}: {job}")

        # The first photo in the slider: the shown image is the API's cutout.
        first = photos[0]
        first_id = by_name[first.name]
        page.locator(f"#session-jobs li[data-job-id='{first_id}']").get_by_role("button", name="View").click()
        expect(page.locator(f"#compare[data-job-id='{first_id}']")).to_be_visible()
        job = api_json(api, f"/v1/jobs/{first_id}", key)
        shown = shown_alpha(page)
        check(shown["src"].startswith("blob:"), f"result shown from {shown['src']}")
        check((shown["w"], shown["h"]) == (job["result"]["width"], job["result"]["height"]), f"size {shown}")
        check(abs(shown["mean"] - job["result"]["foreground_fraction"]) < 0.01, f"alpha {shown} vs {job['result']}")
        check(shown["clear"] > 0.2 and shown["solid"] > 0.02, f"not a cutout: {shown}")

        # The download is the API's result, byte for byte.
        with page.expect_download() as dl:
            page.get_by_role("link", name="Download").click()
        download = dl.value
        check(download.suggested_filename == f"{first.stem}-nobg.png", download.suggested_filename)
        got = Path(download.path()).read_bytes()
        status, _, want = http(api, f"/v1/jobs/{first_id}/result", key)
        check(status == 200 and got == want, f"download differs from the API's result ({len(got)} vs {len(want)} bytes)")

        # The slider moves the divider; the screenshot shows original | cutout over checkerboard.
        slider = page.get_by_label("Before ◀ ▶ after")
        slider.focus()
        for _ in range(5):
            page.keyboard.press("ArrowLeft")
        check(page.input_value("#slider") == "45", "slider moved by keyboard")
        clip = page.eval_on_selector("#after-layer", "e => e.style.clipPath")
        check(clip == "inset(0px 0px 0px 45%)" or clip == "inset(0 0 0 45%)", f"clip {clip}")
        slider.blur()
        page.evaluate("window.scrollTo(0, 0)")
        rect = page.locator("#stage").bounding_box()
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = page.screenshot(path=str(args.screenshot))
        counts = check_screenshot(shot, got, first, rect, 45)

        # History: newest first, with cursor paging one job a page.
        ids_newest_first = sorted(by_name.values(), reverse=True)
        rows = page.locator("#history-rows tr")
        expect(rows.first).to_have_attribute("data-job-id", ids_newest_first[0])
        page.goto(api + "/console/?page_size=1")  # the key stays for the tab
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-job-id", ids_newest_first[0])
        expect(page.get_by_role("button", name="Newer")).to_be_disabled()
        page.get_by_role("button", name="Older").click()
        expect(rows.first).to_have_attribute("data-job-id", ids_newest_first[1])
        page.get_by_role("button", name="Newer").click()
        expect(rows.first).to_have_attribute("data-job-id", ids_newest_first[0])

        # A job from the history opens in the slider with its stored input as the "before".
        rows.first.get_by_role("button", name="View").click()
        expect(page.locator(f"#compare[data-job-id='{ids_newest_first[0]}']")).to_be_visible()
        check(page.eval_on_selector("#before", "i => i.naturalWidth > 0 && i.src.startsWith('blob:')"), "before")

        # Forgetting the key removes it from both storages.
        page.get_by_role("button", name="Forget key").click()
        expect(page.get_by_label("Model")).to_be_disabled()
        expect(rows).to_have_count(0)
        check(page.evaluate("sessionStorage.length + localStorage.length") == 0, "key still stored")
        ctx.close()

    check(not problems, "\n".join(problems))
    print(
        f"console test: ok in {time.monotonic() - started:.1f} s "
        f"({len(photos)} jobs succeeded in {jobs_secs:.1f} s; screenshot {args.screenshot}; "
        f"samples {json.dumps(counts)})"
    )


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"console test: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
